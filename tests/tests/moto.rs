//! The IoT adapters against a second, independent implementation of the data-plane API:
//! moto in server mode. Its recorder captures the real `aws-sdk-iotdataplane` request.
//! moto keeps shadows only for registered things, so the tests register them first
//! with boto3 (moto's own dependency, in the same virtualenv).

use base64::Engine as _;
use integration_tests::{
    app_with, check_shadow_contract, gas_reading, iot_client, post, Moto, OpenSearch,
};
use sensor_model::Sensor;
use serde_json::Value;

/// moto's recorder: what the SDK clients sent it.
trait Recorder {
    async fn recorder(&self, action: &str) -> String;
    async fn publishes(&self) -> Vec<(String, Vec<u8>)>;
}

impl Recorder for Moto {
    async fn recorder(&self, action: &str) -> String {
        let request = if action == "download-recording" {
            self.http
                .get(format!("{}/moto-api/recorder/{action}", self.url))
        } else {
            self.http
                .post(format!("{}/moto-api/recorder/{action}", self.url))
        };
        let response = request.send().await.expect("moto recorder");
        assert!(response.status().is_success(), "recorder {action}");
        response.text().await.unwrap_or_default()
    }

    /// The recorded requests to `/topics/...`: (decoded topic path, decoded body).
    async fn publishes(&self) -> Vec<(String, Vec<u8>)> {
        let recording = self.recorder("download-recording").await;
        recording
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter_map(|entry| {
                let url = entry["url"].as_str()?.to_owned();
                let path = url.split_once("/topics/")?.1.to_owned();
                let body = entry["body"].as_str().unwrap_or_default();
                let body = if entry["body_encoded"] == true {
                    base64::engine::general_purpose::STANDARD
                        .decode(body)
                        .ok()?
                } else {
                    body.as_bytes().to_vec()
                };
                Some((path, body))
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_publish_is_accepted_by_moto() {
    let moto = Moto::start().await;
    moto.recorder("start-recording").await;

    // The bare client first: the request shape moto (and IoT Core) expect.
    iot_client(&moto.url)
        .publish()
        .topic("pi/1")
        .qos(1)
        .payload(aws_sdk_iotdataplane::primitives::Blob::new(
            br#"{"hello":1}"#.to_vec(),
        ))
        .send()
        .await
        .expect("moto accepts the SDK's Publish");

    // Then the whole pipeline with moto as its IoT endpoint (alarm state in moto's
    // shadow of thing "2").
    moto.create_thing("2");
    let opensearch = OpenSearch::start().await;
    let mut env = std::collections::HashMap::new();
    for (key, value) in [
        ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", moto.url.as_str()),
        ("OPENSEARCH_URL", opensearch.url.as_str()),
        ("OPENSEARCH_AUTH", "none"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "AKIDINTEGRATION"),
        ("AWS_SECRET_ACCESS_KEY", "integration-secret"),
    ] {
        env.insert(key.to_owned(), value.to_owned());
    }
    let app = app_with(Sensor::Gasdetector, env).await;
    let (status, reply) = post(
        &app,
        "gasdetector",
        &gas_reading("2", "95.00", "2021-09-03 18:14:49"),
    )
    .await;
    assert_eq!(status, 200, "{reply}");

    let publishes = moto.publishes().await;
    moto.recorder("stop-recording").await;
    let topics: Vec<&str> = publishes.iter().map(|(t, _)| t.as_str()).collect();
    assert!(
        topics
            .iter()
            .any(|t| t.starts_with("pi%2F1?") && t.contains("qos=1")),
        "{topics:?}"
    );
    let warning = publishes
        .iter()
        .find(|(topic, _)| topic.starts_with("pi%2F2?"))
        .unwrap_or_else(|| panic!("no publish to pi/2 recorded: {topics:?}"));
    assert!(warning.0.contains("qos=1"), "{}", warning.0);
    let payload: Value = serde_json::from_slice(&warning.1).expect("JSON warning");
    assert_eq!(payload["warning"], "no2 warning");
    assert_eq!(payload["state"], "alarm");
    assert_eq!(payload["id"], reply["id"]);

    // The alarm state went into moto's named shadow through the shadow adapter.
    let shadow = iot_client(&moto.url)
        .get_thing_shadow()
        .thing_name("2")
        .shadow_name("alarms")
        .send()
        .await
        .expect("alarm shadow in moto");
    let document: Value =
        serde_json::from_slice(shadow.payload().map(|p| p.as_ref()).unwrap_or(b"null"))
            .expect("shadow JSON");
    assert_eq!(
        document["state"]["reported"]["alarms"][0]["state"], "alarm",
        "{document}"
    );
    assert_eq!(
        document["state"]["reported"]["applied"][0], reply["id"],
        "{document}"
    );
    assert_eq!(
        document["version"], 2,
        "created, then one versioned write: {document}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_agrees_with_the_shadow_contract() {
    let moto = Moto::start().await;
    moto.create_thing("box-1");
    check_shadow_contract(&iot_client(&moto.url), "box-1").await;
}
