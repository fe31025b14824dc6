//! The IoT rules the stacks deploy (infra/template.yaml, infra/cdk), emulated over the
//! local broker, plus the shadow service's MQTT topics:
//! - `<root>/<thing>/data/<sensor>`: invokes that sensor's function directly with the
//!   event the stacks' SQL makes, `SELECT topic(2) AS thing, encode(*, 'base64') AS
//!   payload`: the thing from the topic and the box's bytes unchanged (the rule's Lambda
//!   action; failures are logged, as the rule's error action logs them);
//! - `<root>/<thing>/lwt` (the box's Last Will) and `<root>/<thing>/connected` (its report
//!   after each connect): the thing's classic shadow gets `state.reported.connected`
//!   false/true with `lastWillAt` / `connectedAt` in epoch milliseconds;
//! - `$aws/things/<thing>/shadow[/name/<name>]/update` and `/get`: the Device Shadow
//!   service's MQTT API, answered on `/accepted` or `/rejected`;
//! - with the stream path, the Basic Ingest topics
//!   `$aws/rules/<rule>/<root>/<thing>/data/<sensor>/<groupid>`: handed to the
//!   [`StreamRule`] (its Kinesis action and error action).
//!
//! One MQTT connection subscribes to all of them; readings are invoked each in its own
//! task (at most `INVOCATIONS_IN_FLIGHT` at once, the rest waiting in arrival order),
//! everything else is handled in arrival order.

use crate::invoke::{self, invoke, InvokeClient, InvokeError};
use crate::mqtt_publisher::MqttPublisher;
use crate::shadow::{Rejected, Shadows};
use crate::stream_rule::StreamRule;
use crate::thing_name::valid_thing_name;
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

/// Readings being invoked at once; the rest wait here in arrival order. Lambda queues the
/// rule's asynchronous invocations without such a bound, but a backlog (a saturated
/// function, a slow downstream) held as open invoke requests would run the process out of
/// file descriptors and past `cargo lambda watch`'s 100 waiting invocations a function
/// (after which it answers none); waiting here costs a task and the message.
const INVOCATIONS_IN_FLIGHT: usize = 32;

/// What the rules act on.
#[derive(Clone, Debug)]
pub struct IotRulesConfig {
    /// The broker's plain listener.
    pub broker: SocketAddr,
    /// `DeviceTopicRoot` of the stacks (`devices`).
    pub device_root: String,
    /// The Lambda invoke API of the functions (`cargo lambda watch`); `None`: readings
    /// published over MQTT are logged and dropped.
    pub invoke_base: Option<String>,
    /// The functions readings may be sent to (topic level 4).
    pub sensors: Vec<String>,
}

/// The running rules; dropping it stops them.
pub struct IotRules {
    task: tokio::task::JoinHandle<()>,
    stream: Option<Arc<StreamRule>>,
}

impl Drop for IotRules {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Context {
    config: IotRulesConfig,
    stream: Option<Arc<StreamRule>>,
    shadows: Shadows,
    publisher: MqttPublisher,
    client: InvokeClient,
    /// Room for [`INVOCATIONS_IN_FLIGHT`] readings' invocations (fair: first come, first
    /// served).
    invocations: Semaphore,
}

impl IotRules {
    /// Subscribes and starts acting; returns once the broker granted the subscriptions,
    /// so a message published after this is seen.
    pub async fn start(
        config: IotRulesConfig,
        shadows: Shadows,
        publisher: MqttPublisher,
    ) -> Result<IotRules, String> {
        IotRules::start_with_stream(config, shadows, publisher, None).await
    }

    /// Like [`IotRules::start`], with the stream path's Basic Ingest rule when given.
    pub async fn start_with_stream(
        config: IotRulesConfig,
        shadows: Shadows,
        publisher: MqttPublisher,
        stream: Option<StreamRule>,
    ) -> Result<IotRules, String> {
        let stream = stream.map(Arc::new);
        let mut options = MqttOptions::new(
            format!("local-aws-rules-{}", std::process::id()),
            config.broker.ip().to_string(),
            config.broker.port(),
        );
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(256 * 1024, 256 * 1024);
        let (mqtt, mut events) = AsyncClient::new(options, 1000);
        let root = &config.device_root;
        let mut filters = vec![
            format!("{root}/+/data/+"),
            format!("{root}/+/lwt"),
            format!("{root}/+/connected"),
            "$aws/things/+/shadow/update".into(),
            "$aws/things/+/shadow/get".into(),
            "$aws/things/+/shadow/name/+/update".into(),
            "$aws/things/+/shadow/name/+/get".into(),
        ];
        // Mosquitto routes `$` topics to a subscription that names them explicitly.
        if let Some(rule) = &stream {
            filters.push(rule.config().filter());
        }
        for filter in &filters {
            mqtt.subscribe(filter, QoS::AtLeastOnce)
                .await
                .map_err(|e| format!("rules: subscribe {filter}: {e}"))?;
        }
        // Wait for the SUBACKs (the connection's first events) before reporting ready.
        let mut granted = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while granted < filters.len() {
            match tokio::time::timeout_at(deadline, events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => granted += 1,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("rules: broker at {}: {e}", config.broker)),
                Err(_) => return Err("rules: the broker granted no subscriptions in 10 s".into()),
            }
        }
        let context = Arc::new(Context {
            config,
            stream: stream.clone(),
            shadows,
            publisher,
            client: invoke::client(),
            invocations: Semaphore::new(INVOCATIONS_IN_FLIGHT),
        });
        let task = tokio::spawn(async move {
            // Kept alive here: dropping the client would end the connection.
            let _mqtt = mqtt;
            loop {
                match events.poll().await {
                    // Readings invoke a function, which may take long: each in its own
                    // task. Connection and shadow messages are handled here, in arrival
                    // order, so a Last Will and the reconnect report after it reach the
                    // shadow in the order the broker sent them.
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        // The stream rule queues the message for its own task.
                        let streamed = context.stream.as_ref().is_some_and(|rule| {
                            rule.offer(&publish.topic, publish.payload.clone())
                        });
                        if streamed {
                            continue;
                        }
                        if context.is_reading(&publish.topic) {
                            let context = context.clone();
                            tokio::spawn(async move {
                                context.handle(&publish.topic, &publish.payload).await;
                            });
                        } else {
                            context.handle(&publish.topic, &publish.payload).await;
                        }
                    }
                    Ok(_) => {}
                    // rumqttc reconnects (and resubscribes: clean session) on the next poll.
                    Err(e) => {
                        eprintln!("rules: broker connection: {e}; reconnecting");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(IotRules { task, stream })
    }

    /// The stream path's rule, when started with one.
    pub fn stream_rule(&self) -> Option<&StreamRule> {
        self.stream.as_deref()
    }
}

impl Context {
    fn is_reading(&self, topic: &str) -> bool {
        let levels: Vec<&str> = topic.split('/').collect();
        matches!(levels.as_slice(), [r, _, "data", _] if *r == self.config.device_root)
    }

    async fn handle(&self, topic: &str, payload: &[u8]) {
        let levels: Vec<&str> = topic.split('/').collect();
        let root = self.config.device_root.as_str();
        match levels.as_slice() {
            [r, thing, "data", sensor] if *r == root => self.reading(thing, sensor, payload).await,
            [r, thing, "lwt"] if *r == root => {
                let state = json!({"reported": {"connected": false, "lastWillAt": now_ms()}});
                self.connection(thing, state);
            }
            [r, thing, "connected"] if *r == root => {
                let state = json!({"reported": {"connected": true, "connectedAt": now_ms()}});
                self.connection(thing, state);
            }
            ["$aws", "things", thing, "shadow", op] => self.shadow(thing, "", op, payload).await,
            ["$aws", "things", thing, "shadow", "name", name, op] => {
                self.shadow(thing, name, op, payload).await
            }
            _ => {}
        }
    }

    /// The data rule: `SELECT topic(2) AS thing, encode(*, 'base64') AS payload FROM
    /// '<root>/+/data/<sensor>'` -> Lambda action. The function binds the thing to its group.
    async fn reading(&self, thing: &str, sensor: &str, payload: &[u8]) {
        if !self.config.sensors.iter().any(|s| s == sensor) {
            eprintln!("rules: {thing}: no rule for data/{sensor}; message dropped");
            return;
        }
        let Some(base) = &self.config.invoke_base else {
            eprintln!("rules: {thing}: data/{sensor}: no functions configured; message dropped");
            return;
        };
        let event = data_event(thing, payload);
        let url = invoke::url(base, sensor);
        // Never closed, so `Err` cannot happen; the permit is held until answered.
        let _room = self.invocations.acquire().await;
        match invoke(&self.client, &url, &event, Duration::from_secs(120)).await {
            Ok(result) => {
                let status = result.get("statusCode").and_then(Value::as_u64);
                if status.is_some_and(|s| s >= 400) {
                    eprintln!("rules: {thing}: data/{sensor}: function answered {result}");
                }
            }
            Err(InvokeError::Unreachable(why) | InvokeError::Failed(why)) => {
                eprintln!("rules: {thing}: data/{sensor}: invoking {sensor}: {why}");
            }
        }
    }

    /// The connection rules: republish to `$aws/things/<thing>/shadow/update`.
    fn connection(&self, thing: &str, state: Value) {
        if !valid_thing_name(thing) {
            eprintln!("rules: {thing:?} is not a thing name; shadow not updated");
            return;
        }
        let body = json!({ "state": state }).to_string();
        if let Err(rejected) = self.shadows.apply_update(thing, "", body.as_bytes()) {
            eprintln!(
                "rules: {thing}: shadow update rejected: {}",
                rejected.message
            );
        }
    }

    /// The shadow service's MQTT API: `update` and `get` answered on accepted/rejected.
    async fn shadow(&self, thing: &str, name: &str, op: &str, payload: &[u8]) {
        let prefix = if name.is_empty() {
            format!("$aws/things/{thing}/shadow")
        } else {
            format!("$aws/things/{thing}/shadow/name/{name}")
        };
        let answer = match op {
            "update" => self.shadows.apply_update(thing, name, payload),
            "get" => self.shadows.document(thing, name).ok_or(Rejected {
                code: 404,
                error_type: "ResourceNotFoundException",
                message: format!("No shadow exists with name: '{thing}~{name}'"),
            }),
            _ => return,
        };
        // The request's clientToken comes back in either answer, as on AWS.
        let token = serde_json::from_slice::<Value>(payload)
            .ok()
            .and_then(|v| v.get("clientToken").cloned());
        let (topic, mut body) = match answer {
            Ok(document) => (format!("{prefix}/{op}/accepted"), document),
            Err(rejected) => (
                format!("{prefix}/{op}/rejected"),
                json!({"code": rejected.code, "message": rejected.message, "timestamp": now_ms() / 1000}),
            ),
        };
        if let Some(token) = token {
            body["clientToken"] = token;
        }
        if let Err(why) = self
            .publisher
            .publish(&topic, Bytes::from(body.to_string()), 1, false)
            .await
        {
            eprintln!("rules: {topic}: {why}");
        }
    }
}

/// The data rules' event: the thing from the topic (`topic(2)`) and the payload as base64
/// (`encode(*, 'base64')`), whatever its bytes.
pub fn data_event(thing: &str, payload: &[u8]) -> Value {
    use base64::Engine as _;
    json!({
        "thing": thing,
        "payload": base64::engine::general_purpose::STANDARD.encode(payload),
    })
}
