//! Alarm state under injected faults with real HTTP in between: a fault proxy
//! (`local_aws::fault`: 429/500/503, resets before and after forwarding) in front of the
//! local IoT endpoint, so shadow reads, shadow writes and publishes fail at random, often
//! enough (70 %) that some requests run out of retries and get a 503. A box resends on 503. Each group's leak must come out as exactly one transition each way
//! (delivery is at least once: a repeated message carries the same reading id), and the
//! shadow must end in `normal`.

use integration_tests::{app_with, gas_reading, post, Peers, Subscriber};
use local_aws::fault::{FaultConfig, FaultProxy};
use std::collections::BTreeMap;

const GROUPS: usize = 3;
const MAX_RESENDS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_within_and_past_the_retries_keep_one_transition_each_way() {
    let peers = Peers::start().await;
    let proxy = FaultProxy::start(
        "127.0.0.1:0".parse().expect("address"),
        &peers.iot.url(),
        FaultConfig::failing(0.7, 20_261_201),
    )
    .await
    .expect("fault proxy");
    let mut subscriber = Subscriber::connect(peers.broker.local_addr(), "pi/#").await;
    let mut env = peers.env();
    env.insert("AWS_ENDPOINT_URL_IOT_DATA_PLANE".into(), proxy.url());
    let app = app_with(sensor_model::Sensor::Gasdetector, env).await;

    let mut unavailable = 0;
    for g in 0..GROUPS {
        let group = format!("f{g}");
        let values = ["20", "95", "96", "97", "98", "99", "20"];
        for (i, value) in values.iter().enumerate() {
            let body = gas_reading(&group, value, &format!("2026-11-30 10:{i:02}:00"));
            let mut sends = 0;
            loop {
                let (status, reply) = post(&app, "gasdetector", &body).await;
                sends += 1;
                match status {
                    200 => break,
                    503 => unavailable += 1,
                    other => panic!("unexpected {other}: {reply}"),
                }
                assert!(
                    sends < MAX_RESENDS,
                    "{group} reading {i} never stored: {reply}"
                );
            }
        }
    }
    let stats = proxy.stats();
    assert!(
        stats.injected_total() > 10,
        "faults were injected: {stats:?}"
    );

    // Every message up to a marker (published past the proxy).
    for g in 0..GROUPS {
        peers.publish_marker(&format!("pi/f{g}")).await;
    }
    let mut per_group: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut markers = 0;
    while markers < GROUPS {
        let (topic, message, _) = subscriber.next().await;
        if message["marker"] == true {
            markers += 1;
            continue;
        }
        let state = message["state"].as_str().unwrap_or("?").to_string();
        let id = message["id"].as_str().unwrap_or("?").to_string();
        per_group.entry(topic).or_default().push((state, id));
    }
    for g in 0..GROUPS {
        let messages = &per_group[&format!("pi/f{g}")];
        let ids = |state: &str| {
            let mut ids: Vec<&str> = messages
                .iter()
                .filter(|(s, _)| s == state)
                .map(|(_, id)| id.as_str())
                .collect();
            ids.dedup();
            ids
        };
        assert_eq!(
            ids("alarm").len(),
            1,
            "one alarm transition for f{g}: {messages:?}"
        );
        assert_eq!(ids("normal").len(), 1, "one clear for f{g}: {messages:?}");
        assert!(
            messages.iter().all(|(s, _)| s == "alarm" || s == "normal"),
            "{messages:?}"
        );
        let document = peers
            .iot
            .shadows()
            .document(&format!("f{g}"), "alarms")
            .expect("shadow");
        let alarms = document["state"]["reported"]["alarms"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(alarms.is_empty(), "f{g} ends normal: {document}");
    }
    eprintln!("{unavailable} answers were 503 and resent; proxy: {stats:?}");
}
