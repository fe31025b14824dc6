//! The stream path's topic rule (Basic Ingest), as the stacks deploy it:
//!
//! ```sql
//! SELECT topic(2) AS thing, topic(4) AS sensor, topic(5) AS groupid,
//!        encode(*, 'base64') AS payload FROM '<root>/+/data/+/+'
//! ```
//!
//! A box publishes to `$aws/rules/<rule>/<root>/<thing>/data/<sensor>/<groupid>`; the
//! topic levels are counted after `$aws/rules/<rule>/` (`topic(1)` is the root). The
//! rule's Kinesis action puts the record `{"thing", "sensor", "groupid", "payload"}` into
//! the stream with the groupid as partition key, so a group's readings stay in order on
//! one shard. A put that still fails after a few short retries (throttled, emulator down)
//! runs the rule's error action: IoT's error message
//! (`ruleName, topic, cloudwatchTraceId, clientId, base64OriginalPayload, failures`) to
//! `StreamRuleErrorQueue` ([`Destination`]).
//!
//! Locally: messages are put one at a time in arrival order by one task (a bounded
//! queue; when it is full the message goes straight to the error action, as a throttled
//! rule would). `clientId` is the thing name (the broker does not tell a subscriber who
//! published; the box's client id is its thing name). Only the configured sensors and
//! valid thing names are put; other messages are logged and dropped. The IoT policy that
//! pins `<groupid>` to the thing's attribute on AWS is not enforced by the local broker.

use crate::destination::Destination;
use crate::http::request_id;
use crate::thing_name::valid_thing_name;
use aws_sdk_kinesis::primitives::Blob;
use bytes::Bytes;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The rule's name unless configured (`StreamRuleName` of the stacks).
pub const DEFAULT_RULE: &str = "sensorbox_readings";

/// Messages waiting for their put; beyond this the error action takes them.
const QUEUE: usize = 10_000;
/// Short retries of a failed put before the error action.
const PUT_RETRIES: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
];

/// What the rule reads and where it puts.
#[derive(Clone, Debug)]
pub struct StreamRuleConfig {
    /// `StreamRuleName`.
    pub rule: String,
    /// `DeviceTopicRoot` (`devices`).
    pub device_root: String,
    /// The stream of the Kinesis action.
    pub stream: String,
    /// The sensors (topic level 4) the rule takes.
    pub sensors: Vec<String>,
}

impl StreamRuleConfig {
    /// The Basic Ingest topic filter the local rules engine subscribes to.
    pub fn filter(&self) -> String {
        format!("$aws/rules/{}/{}/+/data/+/+", self.rule, self.device_root)
    }
}

/// What the rule did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounts {
    /// Records put into the stream.
    pub put: u64,
    /// Messages handed to the error action.
    pub error_actions: u64,
    /// Messages not taken (unknown sensor, bad thing name, other topics).
    pub ignored: u64,
}

/// The running rule; dropping it stops it.
pub struct StreamRule {
    config: StreamRuleConfig,
    queue: mpsc::Sender<(String, Bytes)>,
    counts: watch::Sender<RuleCounts>,
    errors: Destination,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StreamRule {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A record as the rule's SQL and Kinesis action make it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRecord {
    /// `${topic(5)}`: the groupid.
    pub partition_key: String,
    /// `{"thing","sensor","groupid","payload"}`, in the SELECT's order.
    pub data: String,
    pub thing: String,
}

/// The record for a message published on `topic` (the full `$aws/rules/...` topic), or
/// why the rule does not take it.
pub fn record(
    config: &StreamRuleConfig,
    topic: &str,
    payload: &[u8],
) -> Result<StreamRecord, String> {
    use base64::Engine as _;
    let prefix = format!("$aws/rules/{}/", config.rule);
    let Some(rest) = topic.strip_prefix(&prefix) else {
        return Err(format!("{topic}: not rule {}'s topic", config.rule));
    };
    let levels: Vec<&str> = rest.split('/').collect();
    let [root, thing, "data", sensor, groupid] = levels.as_slice() else {
        return Err(format!(
            "{topic}: not <root>/<thing>/data/<sensor>/<groupid>"
        ));
    };
    if *root != config.device_root {
        return Err(format!("{topic}: not under {}", config.device_root));
    }
    if !valid_thing_name(thing) {
        return Err(format!("{topic}: {thing:?} is not a thing name"));
    }
    if !config.sensors.iter().any(|s| s == sensor) {
        return Err(format!("{topic}: no stream rule for data/{sensor}"));
    }
    let text = |s: &str| Value::String(s.to_owned()).to_string();
    let data = format!(
        r#"{{"thing":{},"sensor":{},"groupid":{},"payload":"{}"}}"#,
        text(thing),
        text(sensor),
        text(groupid),
        base64::engine::general_purpose::STANDARD.encode(payload)
    );
    Ok(StreamRecord {
        partition_key: (*groupid).to_owned(),
        data,
        thing: (*thing).to_owned(),
    })
}

/// IoT's error action message for a message whose Kinesis action failed with `error`.
pub fn error_message(
    rule: &str,
    topic: &str,
    client_id: &str,
    payload: &[u8],
    stream: &str,
    error: &str,
) -> Value {
    use base64::Engine as _;
    json!({
        "ruleName": rule,
        "topic": topic,
        "cloudwatchTraceId": request_id(),
        "clientId": client_id,
        "base64OriginalPayload": base64::engine::general_purpose::STANDARD.encode(payload),
        "failures": [{
            "failedAction": "KinesisAction",
            "failedResource": stream,
            "errorMessage": format!("Failed to put record in Kinesis stream {stream}. The error received was {error}"),
        }],
    })
}

impl StreamRule {
    /// Starts the rule's task (on the current runtime): puts with `client`, error action
    /// to `errors`.
    pub fn start(
        config: StreamRuleConfig,
        client: aws_sdk_kinesis::Client,
        errors: Destination,
    ) -> StreamRule {
        let (queue, mut messages) = mpsc::channel::<(String, Bytes)>(QUEUE);
        let counts = watch::channel(RuleCounts::default()).0;
        let task = {
            let config = config.clone();
            let counts = counts.clone();
            let errors = errors.clone();
            tokio::spawn(async move {
                while let Some((topic, payload)) = messages.recv().await {
                    handle(&config, &client, &errors, &counts, &topic, &payload).await;
                }
            })
        };
        StreamRule {
            config,
            queue,
            counts,
            errors,
            task,
        }
    }

    pub fn config(&self) -> &StreamRuleConfig {
        &self.config
    }

    /// Takes a message the broker routed to [`StreamRuleConfig::filter`]; `false` (and
    /// nothing done) when `topic` is not the rule's.
    pub fn offer(&self, topic: &str, payload: Bytes) -> bool {
        if !topic.starts_with(&format!("$aws/rules/{}/", self.config.rule)) {
            return false;
        }
        if let Err(mpsc::error::TrySendError::Full((topic, payload))) =
            self.queue.try_send((topic.to_owned(), payload))
        {
            let config = self.config.clone();
            let errors = self.errors.clone();
            let counts = self.counts.clone();
            tokio::spawn(async move {
                let why = format!("the local rule's queue of {QUEUE} messages is full");
                error_action(&config, &errors, &counts, &topic, &payload, &why).await;
            });
        }
        true
    }

    pub fn counts(&self) -> RuleCounts {
        *self.counts.borrow()
    }

    /// Waits until the counts satisfy `done`; `None` after `wait`.
    pub async fn wait_until(
        &self,
        done: impl Fn(&RuleCounts) -> bool,
        wait: Duration,
    ) -> Option<RuleCounts> {
        crate::counters::wait_until(&self.counts, done, wait).await
    }
}

async fn handle(
    config: &StreamRuleConfig,
    client: &aws_sdk_kinesis::Client,
    errors: &Destination,
    counts: &watch::Sender<RuleCounts>,
    topic: &str,
    payload: &[u8],
) {
    let record = match record(config, topic, payload) {
        Ok(record) => record,
        Err(why) => {
            eprintln!(
                "local-aws: stream rule {}: {why}; message dropped",
                config.rule
            );
            counts.send_modify(|c| c.ignored += 1);
            return;
        }
    };
    let mut last = String::new();
    for pause in std::iter::once(Duration::ZERO).chain(PUT_RETRIES) {
        tokio::time::sleep(pause).await;
        let put = client
            .put_record()
            .stream_name(&config.stream)
            .partition_key(&record.partition_key)
            .data(Blob::new(record.data.as_bytes()))
            .send()
            .await;
        match put {
            Ok(_) => {
                counts.send_modify(|c| c.put += 1);
                return;
            }
            Err(e) => last = aws_sdk_kinesis::error::DisplayErrorContext(&e).to_string(),
        }
    }
    error_action(config, errors, counts, topic, payload, &last).await;
}

async fn error_action(
    config: &StreamRuleConfig,
    errors: &Destination,
    counts: &watch::Sender<RuleCounts>,
    topic: &str,
    payload: &[u8],
    why: &str,
) {
    // The thing is the client id (module doc); a topic the rule would not take has none.
    let client_id = record(config, topic, payload)
        .map(|r| r.thing)
        .unwrap_or_default();
    let message = error_message(
        &config.rule,
        topic,
        &client_id,
        payload,
        &config.stream,
        why,
    );
    eprintln!(
        "local-aws: stream rule {}: {topic}: PutRecord failed ({why}); error action for {} bytes",
        config.rule,
        payload.len()
    );
    let what = format!("rule {} error action", config.rule);
    let _ = errors.send(&what, &message).await;
    counts.send_modify(|c| c.error_actions += 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> StreamRuleConfig {
        StreamRuleConfig {
            rule: DEFAULT_RULE.into(),
            device_root: "devices".into(),
            stream: "s".into(),
            sensors: vec!["gasdetector".into(), "dust".into()],
        }
    }

    #[test]
    fn the_record_is_the_sqls_select() {
        let config = config();
        assert_eq!(
            config.filter(),
            "$aws/rules/sensorbox_readings/devices/+/data/+/+"
        );
        let record = record(
            &config,
            "$aws/rules/sensorbox_readings/devices/pi-19/data/gasdetector/2",
            b"[1]",
        )
        .unwrap();
        assert_eq!(record.partition_key, "2");
        assert_eq!(
            record.data,
            r#"{"thing":"pi-19","sensor":"gasdetector","groupid":"2","payload":"WzFd"}"#
        );
        let parsed: Value = serde_json::from_str(&record.data).unwrap();
        assert_eq!(parsed["payload"], "WzFd");
    }

    #[test]
    fn other_topics_are_not_taken() {
        let config = config();
        for topic in [
            "$aws/rules/other/devices/pi-19/data/gasdetector/2",
            "$aws/rules/sensorbox_readings/devices/pi-19/data/temp/2",
            "$aws/rules/sensorbox_readings/devices/pi 19/data/dust/2",
            "$aws/rules/sensorbox_readings/boxes/pi-19/data/dust/2",
            "$aws/rules/sensorbox_readings/devices/pi-19/data/dust",
            "$aws/rules/sensorbox_readings/devices/pi-19/lwt/dust/2",
            "devices/pi-19/data/dust",
        ] {
            assert!(record(&config, topic, b"x").is_err(), "{topic}");
        }
    }

    #[test]
    fn the_error_message_has_iots_fields() {
        let message = error_message("r", "$aws/rules/r/t", "pi-1", b"hi", "s", "throttled");
        for field in [
            "ruleName",
            "topic",
            "cloudwatchTraceId",
            "clientId",
            "base64OriginalPayload",
        ] {
            assert!(message.get(field).is_some(), "{field}");
        }
        assert_eq!(message["base64OriginalPayload"], "aGk=");
        assert_eq!(message["failures"][0]["failedAction"], "KinesisAction");
        assert_eq!(message["failures"][0]["failedResource"], "s");
    }
}
