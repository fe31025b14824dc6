//! The scheduled no-data check with real peers: readings in osmem-server (their receive
//! time set in the past), alarm state in the local IoT endpoint's shadows, messages on
//! the real broker. A silent group gets one `no data` warning, a live one none, a second
//! run adds nothing, and the silent group's next reading clears it.

use integration_tests::{gas_reading, post, Peers, Subscriber};
use sensor_core::no_data::Summary;
use sensor_model::Sensor;
use serde_json::json;
use std::time::Duration;

async fn check(peers: &Peers) -> sensor_lambda::no_data_function::NoDataFunction {
    let env = peers.env();
    sensor_lambda::no_data_function::from_lookup(|k: &str| env.get(k).cloned())
        .await
        .expect("no-data configuration")
}

/// A stored reading of `group` received `ago` before now.
async fn stored(peers: &Peers, group: &str, id: &str, ago: chrono::Duration) {
    let date = (chrono::Utc::now() - ago)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let (status, reply) = peers
        .opensearch
        .post(
            &format!("/gasdetect/_doc/{id}"),
            &json!({"groupid": group, "sensor": "gasdetector", "date": date,
                    "no2": {"sensorid": "6", "sensortype": "9", "value": "20", "createdtime": "2021-09-03 18:00:00"}}),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_group_gets_one_no_data_alarm_and_its_next_reading_clears_it() {
    let peers = Peers::start().await;
    let mut subscriber = Subscriber::connect(peers.broker.local_addr(), "pi/#").await;
    stored(&peers, "silent", "a", chrono::Duration::minutes(40)).await;
    stored(&peers, "silent", "b", chrono::Duration::minutes(30)).await;
    stored(&peers, "live", "c", chrono::Duration::minutes(1)).await;
    stored(&peers, "gone", "d", chrono::Duration::days(30)).await;
    peers
        .opensearch
        .wait_count("gasdetect", json!({"match_all": {}}), 4)
        .await;

    let check = check(&peers).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let summary = check
        .run(chrono::Utc::now(), deadline)
        .await
        .expect("first run");
    assert_eq!(
        summary,
        Summary {
            groups_seen: 2,
            raised: 1,
            failed: 0
        },
        "the 30-day-old group is out of scope"
    );
    let (topic, warning, _) = subscriber.next().await;
    assert_eq!(topic, "pi/silent");
    assert_eq!(warning["warning"], "no data");
    assert_eq!(warning["state"], "alarm");
    assert!(
        warning["silent_s"].as_i64().unwrap() >= 30 * 60,
        "{warning}"
    );

    let again = check
        .run(chrono::Utc::now(), deadline)
        .await
        .expect("second run");
    assert_eq!(again.raised, 0, "raised once");

    // The box comes back: its next reading clears the alarm.
    let app = peers.app(Sensor::Gasdetector).await;
    let (status, reply) = post(
        &app,
        "gasdetector",
        &gas_reading("silent", "20.00", "2026-11-30 10:00:00"),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let (topic, clear, _) = subscriber.next().await;
    assert_eq!(topic, "pi/silent");
    assert_eq!(clear["clear"], "no data clear", "{clear}");
    assert!(clear["duration_s"].as_i64().unwrap() >= 30 * 60, "{clear}");
    peers.publish_marker("pi/live").await;
    let (_, marker, _) = subscriber.next().await;
    assert_eq!(
        marker["marker"], true,
        "nothing for the live group: {marker}"
    );
}
