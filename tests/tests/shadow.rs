//! The local IoT endpoint's Device Shadow API through the real `aws-sdk-iotdataplane`
//! client (moto runs the same contract in `moto.rs`), and the alarm state it holds for
//! the pipeline: concurrency between instances, a real MQTT subscriber.

use integration_tests::{check_shadow_contract, gas_reading, iot_client, post, Peers, Subscriber};
use sensor_model::Sensor;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_endpoint_speaks_the_shadow_api() {
    let peers = Peers::start().await;
    let client = iot_client(&peers.iot.url());
    check_shadow_contract(&client, "box-1").await;
    // A version for a shadow that does not exist yet cannot match.
    let conditional_create = client
        .update_thing_shadow()
        .thing_name("box-2")
        .shadow_name("alarms")
        .payload(aws_sdk_iotdataplane::primitives::Blob::new(
            br#"{"state": {"reported": {}}, "version": 1}"#.to_vec(),
        ))
        .send()
        .await
        .expect_err("version on a missing shadow");
    assert!(conditional_create
        .as_service_error()
        .is_some_and(|e| e.is_conflict_exception()));
    let too_big = format!(
        r#"{{"state": {{"reported": {{"x": "{}"}}}}}}"#,
        "x".repeat(9000)
    );
    let error = client
        .update_thing_shadow()
        .thing_name("box-2")
        .payload(aws_sdk_iotdataplane::primitives::Blob::new(
            too_big.into_bytes(),
        ))
        .send()
        .await
        .expect_err("over 8 KB");
    assert!(
        error
            .as_service_error()
            .is_some_and(|e| e.is_request_entity_too_large_exception()),
        "{error:?}"
    );
}

/// Parallel requests for one group on separate instances (separate `App`s: no shared
/// cache, only the shadow between them) raise exactly one alarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_instances_raise_one_alarm_and_leave_a_consistent_version() {
    const INSTANCES: usize = 6;
    let peers = Peers::start().await;
    let mut subscriber = Subscriber::connect(peers.broker.local_addr(), "pi/#").await;
    let mut apps = Vec::new();
    for _ in 0..INSTANCES {
        apps.push(Arc::new(peers.app(Sensor::Gasdetector).await));
    }
    let start = Arc::new(tokio::sync::Barrier::new(INSTANCES));
    let tasks: Vec<_> = apps
        .iter()
        .enumerate()
        .map(|(i, app)| {
            let (app, start) = (app.clone(), start.clone());
            // Same time, different co sensor: six distinct readings, none stale.
            let body = gas_reading("7", "95.00", "2026-11-30 10:00:00")
                .replace("\"0005\"", &format!("\"co-{i}\""));
            tokio::spawn(async move {
                start.wait().await;
                post(&*app, "gasdetector", &body).await
            })
        })
        .collect();
    for task in tasks {
        let (status, reply) = task.await.expect("request task");
        assert_eq!(status, 200, "{reply}");
    }
    peers.publish_marker("pi/7").await;
    let mut alarms = 0;
    loop {
        let (_, payload, _) = subscriber.next().await;
        if payload["marker"] == true {
            break;
        }
        assert_eq!(payload["state"], "alarm", "{payload}");
        alarms += 1;
    }
    assert_eq!(alarms, 1, "one transition however many instances raced");
    let document = peers.iot.shadows().document("7", "alarms").expect("shadow");
    let reported = &document["state"]["reported"];
    let applied = reported["applied"].as_array().expect("applied ids").len();
    assert_eq!(
        applied, INSTANCES,
        "every reading applied once, none lost: {document}"
    );
    assert_eq!(reported["alarms"][0]["state"], "alarm", "{document}");
    // One versioned write per reading, plus the creating writes of the instances that
    // found no shadow (at least one, at most all).
    let version = document["version"].as_u64().expect("version");
    assert!(
        (INSTANCES as u64 + 1..=2 * INSTANCES as u64).contains(&version),
        "{document}"
    );
    // A later reading through any instance is one more version, whatever its cache holds.
    let body = gas_reading("7", "20.00", "2026-11-30 10:01:00");
    assert_eq!(post(&*apps[0], "gasdetector", &body).await.0, 200);
    let after = peers.iot.shadows().document("7", "alarms").expect("shadow");
    assert_eq!(after["version"].as_u64(), Some(version + 1), "{after}");
    let (_, clear, _) = subscriber.next().await;
    assert_eq!(clear["clear"], "no2 clear", "{clear}");
}
