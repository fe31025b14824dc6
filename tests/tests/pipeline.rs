//! The function pipeline end to end with its real adapters: `aws-sdk-iotdataplane` against
//! the local-aws IoT endpoint (relayed to a real MQTT subscriber) and the `opensearch`
//! client against osmem-server.

use integration_tests::{app_with, gas_reading, post, Peers, Subscriber};
use sensor_model::Sensor;
use serde_json::{json, Value};

const T0: &str = "2021-09-03 18:14:49";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tripped_rule_publishes_a_warning_and_indexes_the_reading() {
    let peers = Peers::start().await;
    let mut subscriber = Subscriber::connect(peers.broker.local_addr(), "pi/2").await;
    let app = peers.app(Sensor::Gasdetector).await;

    let (status, reply) = post(&app, "gasdetector", &gas_reading("2", "95.00", T0)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["status"], "ok");
    let id = reply["id"].as_str().expect("id").to_owned();
    assert_eq!(
        reply["warnings"].as_array().map(Vec::len),
        Some(1),
        "{reply}"
    );

    let (topic, warning, qos) = subscriber.next().await;
    assert_eq!(topic, "pi/2");
    assert_eq!(qos, rumqttc::QoS::AtLeastOnce);
    assert_eq!(warning["warning"], "no2 warning");
    assert_eq!(warning["sensor"], "gasdetector");
    assert_eq!(warning["groupid"], "2");
    assert_eq!(warning["measure"], "no2");
    assert_eq!(warning["value"], 95.0);
    assert_eq!(warning["threshold"], 88.0);
    assert_eq!(warning["bound"], "high");
    assert_eq!(warning["createdtime"], T0);
    assert_eq!(warning["id"], id.as_str());

    // Searchable as a number (the template maps value as float; the reading has strings).
    let query = json!({"range": {"no2.value": {"gte": 90}}});
    peers
        .opensearch
        .wait_count("gasdetect", query.clone(), 1)
        .await;
    let hits = peers.opensearch.search("gasdetect", query).await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["_id"], id.as_str());
    let doc = &hits[0]["_source"];
    assert_eq!(doc["groupid"], "2");
    assert_eq!(doc["no2"]["value"], "95.00", "strings are kept as received");
    assert_eq!(doc["sensor"], "gasdetector");
    assert!(doc["@timestamp"].is_string(), "{doc}");
    assert_eq!(doc["warnings"], json!(["no2"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_when_no_rule_trips() {
    let peers = Peers::start().await;
    let mut subscriber = Subscriber::connect(peers.broker.local_addr(), "pi/#").await;
    let app = peers.app(Sensor::Gasdetector).await;

    let (status, reply) = post(&app, "gasdetector", &gas_reading("2", "52.00", T0)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["warnings"], json!([]));
    peers
        .opensearch
        .wait_count("gasdetect", json!({"term": {"groupid": "2"}}), 1)
        .await;

    // The response came after the pipeline's publishes: a marker published now is the
    // first thing the subscriber sees only if the function published nothing.
    peers.publish_marker("pi/marker").await;
    let (topic, payload, _) = subscriber.next().await;
    assert_eq!(topic, "pi/marker", "unexpected message {payload}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_post_stores_one_document() {
    let peers = Peers::start().await;
    let app = peers.app(Sensor::Gasdetector).await;
    let reading = gas_reading("7", "95.00", T0);

    let (first_status, first) = post(&app, "gasdetector", &reading).await;
    let (second_status, second) = post(&app, "gasdetector", &reading).await;
    assert_eq!(
        (first_status, second_status),
        (200, 200),
        "{first} {second}"
    );
    assert_eq!(
        first["id"], second["id"],
        "the document id is deterministic"
    );

    let all = json!({"term": {"groupid": "7"}});
    peers
        .opensearch
        .wait_count("gasdetect", all.clone(), 1)
        .await;
    // Both requests have completed, so after a refresh the count is final.
    assert_eq!(peers.opensearch.count("gasdetect", all).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_indexes_every_item() {
    let peers = Peers::start().await;
    let mut subscriber = Subscriber::connect(peers.broker.local_addr(), "pi/9").await;
    // ALARM_MODE=every: a warning per breaching item, even one older than the batch's
    // newest (by default that item is stale: tests/tests/alarms.rs).
    let mut env = peers.env();
    env.insert("ALARM_MODE".into(), "every".into());
    let app = integration_tests::app_with(Sensor::Gasdetector, env).await;
    let items: Vec<Value> = [
        ("2021-09-03 18:14:49", "10"),
        ("2021-09-03 18:15:49", "95"),
        ("2021-09-03 18:16:49", "20"),
    ]
    .iter()
    .map(|(t, v)| serde_json::from_str(&gas_reading("9", v, t)).unwrap())
    .collect();

    let (status, reply) = post(&app, "gasdetector", &Value::Array(items).to_string()).await;
    assert_eq!(status, 200, "{reply}");
    let results = reply["items"].as_array().expect("items");
    assert_eq!(results.len(), 3, "{reply}");

    let count = peers
        .opensearch
        .wait_count("gasdetect", json!({"term": {"groupid": "9"}}), 3)
        .await;
    assert_eq!(count, 3);
    let (_, warning, _) = subscriber.next().await;
    assert_eq!(warning["value"], 95.0);
    assert_eq!(warning["createdtime"], "2021-09-03 18:15:49");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_stores_and_publishes_nothing() {
    let peers = Peers::start().await;
    let mut subscriber = Subscriber::connect(peers.broker.local_addr(), "#").await;
    let app = peers.app(Sensor::Gasdetector).await;

    let typo = gas_reading("2", "95.00", T0).replace("\"no2\"", "\"n02\"");
    let bad_group = gas_reading("pi/#", "95.00", T0);
    let bad_value = gas_reading("2", "lots", T0);
    let bodies = [
        typo.as_str(),
        bad_group.as_str(),
        bad_value.as_str(),
        "not json",
        "{}",
        "[]",
    ];
    for body in bodies {
        let (status, reply) = post(&app, "gasdetector", body).await;
        assert_eq!(status, 400, "{body} -> {reply}");
    }

    peers.publish_marker("pi/marker").await;
    let (topic, payload, _) = subscriber.next().await;
    assert_eq!(topic, "pi/marker", "unexpected message {payload}");
    assert_eq!(
        peers
            .opensearch
            .count("gasdetect", json!({"match_all": {}}))
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_and_dust_routes_use_their_own_index_and_rules() {
    let peers = Peers::start().await;
    let mut subscriber = Subscriber::connect(peers.broker.local_addr(), "pi/5").await;
    let temp = peers.app(Sensor::Temp).await;
    let dust = peers.app(Sensor::Dust).await;

    let reading = json!({"groupid": "5",
        "temperature": {"sensorid": "1", "sensortype": "2", "value": "-3.5", "createdtime": T0},
        "humidity": {"sensorid": "3", "sensortype": "4", "value": 45, "createdtime": T0}});
    let (status, reply) = post(&temp, "temp", &reading.to_string()).await;
    assert_eq!(status, 200, "{reply}");
    let (_, warning, _) = subscriber.next().await;
    assert_eq!(warning["measure"], "temperature");
    assert_eq!(warning["bound"], "low");

    let reading = json!({"groupid": "5",
        "pm25": {"sensorid": "1", "sensortype": "2", "value": "12", "createdtime": T0}});
    let (status, reply) = post(&dust, "dust", &reading.to_string()).await;
    assert_eq!(status, 200, "{reply}");

    peers
        .opensearch
        .wait_count(
            "temp",
            json!({"range": {"temperature.value": {"lt": 0}}}),
            1,
        )
        .await;
    peers
        .opensearch
        .wait_count("dust", json!({"term": {"groupid": "5"}}), 1)
        .await;
}

/// Issue 20: a reading OpenSearch refuses for good (its document conflicts with the
/// index's mapping) is answered as final, never "resend": 422 alone, `rejected` in a
/// batch whose other readings are stored. The box dead-letters it (device/src/sender.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_opensearch_refuses_for_good_is_final_not_resend() {
    let peers = Peers::start().await;
    // An index whose mapping wants `groupid` as a number: a group named in letters can
    // never be indexed there, however often it is sent.
    let created = peers
        .opensearch
        .http
        .put(format!("{}/conflicting", peers.opensearch.url))
        .header("content-type", "application/json")
        .body(json!({"mappings": {"properties": {"groupid": {"type": "long"}}}}).to_string())
        .send()
        .await
        .expect("create index");
    assert!(created.status().is_success(), "{}", created.status());
    let mut env = peers.env();
    env.insert("INDEX".into(), "conflicting".into());
    let app = app_with(Sensor::Gasdetector, env).await;

    let (status, reply) = post(&app, "gasdetector", &gas_reading("abc", "52.00", T0)).await;
    assert_eq!(status, 422, "{reply}");
    assert_eq!(reply["error"], "rejected", "{reply}");
    let message = reply["message"].as_str().unwrap_or_default();
    assert!(message.contains("mapper_parsing_exception"), "{reply}");
    assert!(
        !message.contains("abc"),
        "the reason never quotes the value: {reply}"
    );

    let batch = format!(
        "[{},{}]",
        gas_reading("7", "52.00", T0),
        gas_reading("abc", "52.00", "2021-09-03 18:14:50")
    );
    let (status, reply) = post(&app, "gasdetector", &batch).await;
    assert_eq!(status, 200, "{reply}");
    let statuses: Vec<&str> = reply["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|i| i["status"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(statuses, ["stored", "rejected"], "{reply}");
    assert_eq!(
        (&reply["rejected"], &reply["retry"]),
        (&json!(1), &json!(0))
    );
    let all = json!({"match_all": {}});
    assert_eq!(
        peers
            .opensearch
            .wait_count("conflicting", all.clone(), 1)
            .await,
        1
    );
    assert_eq!(peers.opensearch.count("conflicting", all).await, 1);
}
