//! One identity per box, through the local stack with real peers: readings published over
//! MQTT by an independent client (rumqttc) on `devices/<thing>/data/gasdetector`, the
//! local IoT rules turning them into the stacks' envelope (`topic(2)` and the base64
//! payload), the functions under `cargo lambda watch` asking moto's IoT registry (with
//! `aws-sdk-iot`) which group the box belongs to, and osmem-server holding what was stored.

use integration_tests::{eventually, gas_reading, DeviceStack, Subscriber};
use local_aws::MqttPublisher;
use serde_json::json;
use std::time::Duration;

async fn start_stack() -> DeviceStack {
    // REGISTRY_CACHE_TTL=1 (DeviceStack's): a move shows within about a second.
    DeviceStack::start(None, &[]).await
}

/// Publishes `payload` as box `thing` would (QoS 1, its data topic).
async fn publish(box_client: &MqttPublisher, thing: &str, payload: String) {
    box_client
        .publish(
            &format!("devices/{thing}/data/gasdetector"),
            payload.into(),
            1,
            false,
        )
        .await
        .expect("publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_writes_only_its_own_group_and_a_move_takes_effect_after_the_ttl() {
    let stack = start_stack().await;
    let run = std::process::id();
    let (thing, own, other) = (
        format!("pi-{run}"),
        format!("ida-{run}"),
        format!("idb-{run}"),
    );
    stack.registry.register_box(&thing, &own).await;
    let mut warnings = Subscriber::connect(stack.broker.local_addr(), "pi/#").await;
    let box_client = stack.broker.publisher();

    // One message, two readings: its own group's and another's, both breaching no2. One
    // invocation answers both, so once its own reading is searchable the other's fate is
    // decided too.
    let batch = format!(
        "[{}, {}]",
        gas_reading(&other, "95", "2026-12-04 10:00:00"),
        gas_reading(&own, "95", "2026-12-04 10:00:00"),
    );
    publish(&box_client, &thing, batch).await;
    let stored = eventually("its own group's reading", Duration::from_secs(60), || {
        let count = stack.opensearch.count_group("gasdetect", &own);
        async move { Some(count.await).filter(|n| *n >= 1) }
    })
    .await;
    assert_eq!(stored, 1);
    assert_eq!(
        stack.opensearch.count_group("gasdetect", &other).await,
        0,
        "nothing stored for the other group"
    );
    // Its own group's alarm arrives; then a marker published after it closes the window
    // in which a warning for the refused reading (same invocation) would have arrived.
    let mut topics = Vec::new();
    while !topics.contains(&format!("pi/{own}")) {
        topics.push(warnings.next().await.0);
    }
    let after = warnings
        .until_marker(&stack.iot.url(), &format!("pi/marker-{run}"))
        .await;
    topics.extend(after.into_iter().map(|(topic, _)| topic));
    assert_eq!(topics, [format!("pi/{own}")], "one alarm, its own group's");

    // Moved to the other group: within the cache TTL its readings for that group are
    // taken. Each try is a new reading (a new createdtime), so a refused one is not
    // mistaken for a stored one.
    stack.registry.move_box(&thing, &other).await;
    let mut minute = 0;
    eventually(
        "a reading for the new group",
        Duration::from_secs(60),
        || {
            minute += 1;
            let reading = gas_reading(
                &other,
                "40",
                &format!("2026-12-04 11:{:02}:00", minute % 60),
            );
            let (client, thing, stack, other) = (&box_client, &thing, &stack, &other);
            async move {
                publish(client, thing, reading).await;
                // At most two readings a second while the old answer is still cached.
                tokio::time::sleep(Duration::from_millis(500)).await;
                Some(stack.opensearch.count_group("gasdetect", other).await).filter(|n| *n >= 1)
            }
        },
    )
    .await;
    // And its old group is now refused.
    let before = stack.opensearch.count_group("gasdetect", &own).await;
    // (A co sensor id of its own marks this message's readings.)
    let marked =
        |group: &str| gas_reading(group, "40", "2026-12-04 12:00:00").replace("0005", "9005");
    publish(
        &box_client,
        &thing,
        format!("[{}, {}]", marked(&own), marked(&other)),
    )
    .await;
    eventually("the new group's reading", Duration::from_secs(60), || {
        let count = stack.opensearch.count(
            "gasdetect",
            json!({"bool": {"filter": [{"term": {"groupid": other.clone()}}, {"term": {"co.sensorid": "9005"}}]}}),
        );
        async move { Some(count.await).filter(|n| *n >= 1) }
    })
    .await;
    assert_eq!(
        stack.opensearch.count_group("gasdetect", &own).await,
        before,
        "the old group refused after the move"
    );
}
