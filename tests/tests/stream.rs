//! The stream path through the local stack with real peers: batches published by an
//! independent MQTT client (rumqttc) on the Basic Ingest topic
//! `$aws/rules/sensorbox_readings/devices/<thing>/data/gasdetector/<group>`, the local
//! stream rule putting them into the Kinesis emulator (ferrokinesis) keyed by the group,
//! the event source mappings invoking the functions under `cargo lambda watch` with
//! Kinesis batches, moto's registry binding each box to its group, and osmem-server
//! holding what was stored.

use integration_tests::{eventually, gas_reading, DeviceStack, Subscriber};
use local_aws::MqttPublisher;
use serde_json::json;
use std::time::Duration;

fn topic(thing: &str, group: &str) -> String {
    format!("$aws/rules/sensorbox_readings/devices/{thing}/data/gasdetector/{group}")
}

async fn publish(client: &MqttPublisher, topic: &str, payload: String) {
    client
        .publish(topic, payload.into(), 1, false)
        .await
        .expect("publish");
}

/// Box `b`'s message `m`: five readings a second apart, no2 from `no2(r)`.
fn message(group: &str, b: usize, m: usize, no2: impl Fn(usize) -> &'static str) -> String {
    let readings: Vec<String> = (0..5)
        .map(|r| {
            gas_reading(
                group,
                no2(r),
                &format!("2026-12-04 10:{:02}:{:02}", b * 10 + m, r),
            )
        })
        .collect();
    format!("[{}]", readings.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_ingest_batches_are_stored_once_by_few_invocations_and_warn_once() {
    let stack = DeviceStack::start_streaming(None, &[]).await;
    let stream = stack.stream.as_ref().expect("the stream path");
    let run = std::process::id();
    let (loud, quiet) = (format!("sa-{run}"), format!("sb-{run}"));
    let boxes = [
        (format!("pa-{run}"), loud.clone()),
        (format!("pb-{run}"), loud.clone()),
        (format!("pc-{run}"), quiet.clone()),
    ];
    for (thing, group) in &boxes {
        stack.registry.register_box(thing, group).await;
    }
    let mut warnings = Subscriber::connect(stack.broker.local_addr(), "pi/#").await;
    let client = stack.broker.publisher();

    // Twelve messages of five readings; the loud group's newest reading crosses no2's high
    // threshold (an older one would be stale beside the newer ones of its group). Then two
    // that can never succeed: not JSON, and an unregistered box.
    let mut messages = Vec::new();
    for (b, (thing, group)) in boxes.iter().enumerate() {
        for m in 0..4 {
            let alarming = group == &loud && b == 1 && m == 3;
            let body = message(
                group,
                b,
                m,
                |r| if alarming && r == 4 { "95" } else { "20" },
            );
            messages.push((topic(thing, group), body));
        }
    }
    for (topic, body) in &messages {
        publish(&client, topic, body.clone()).await;
    }
    publish(&client, &topic(&boxes[0].0, &loud), "not json".into()).await;
    let stranger = message(&loud, 9, 0, |_| "20");
    publish(&client, &topic(&format!("px-{run}"), &loud), stranger).await;

    let stored = eventually("all sixty readings", Duration::from_secs(120), || {
        let (loud, quiet) = (
            stack.opensearch.count_group("gasdetect", &loud),
            stack.opensearch.count_group("gasdetect", &quiet),
        );
        async move {
            let (loud, quiet) = (loud.await, quiet.await);
            (loud >= 40 && quiet >= 20).then_some((loud, quiet))
        }
    })
    .await;
    assert_eq!(
        stored,
        (40, 20),
        "each reading once; the stranger's refused"
    );

    // Fourteen messages, a handful of invocations: the mapping batches what the rule put.
    let gas = stream
        .mapping("gasdetector")
        .wait_until(|c| c.records_delivered >= 14, Duration::from_secs(60))
        .await
        .expect("all fourteen records delivered, the two bad ones too");
    assert!(
        gas.invocations * 2 <= 14,
        "batches, not one invocation per message: {gas:?}"
    );
    assert_eq!(gas.failed_batches, 0, "{gas:?}");

    // A box resending what it already sent (its PUBACK lost) changes nothing.
    for (topic, body) in &messages {
        publish(&client, topic, body.clone()).await;
    }
    stream
        .mapping("gasdetector")
        .wait_until(
            |c| c.records_delivered >= gas.records_delivered + 12,
            Duration::from_secs(60),
        )
        .await
        .expect("the resent records delivered");
    assert_eq!(
        (
            stack.opensearch.count_group("gasdetect", &loud).await,
            stack.opensearch.count_group("gasdetect", &quiet).await
        ),
        (40, 20)
    );

    // Exactly one warning: the loud group's no2, once, though its reading was sent twice.
    let seen: Vec<(String, serde_json::Value)> = warnings
        .until_marker(&stack.iot.url(), &format!("pi/marker-{run}"))
        .await
        .into_iter()
        .filter(|(_, message)| message.get("warning").is_some())
        .map(|(topic, message)| (topic, message["measure"].clone()))
        .collect();
    assert_eq!(
        seen,
        [(format!("pi/{loud}"), json!("no2"))],
        "one transition, once"
    );
}
