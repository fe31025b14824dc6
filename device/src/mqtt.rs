//! The box's MQTT side, as IoT Core needs it: mutual TLS (device certificate, private key,
//! the CA to trust; port 8883, or 443 with ALPN `x-amzn-mqtt-ca`), client id = thing name,
//! a persistent session (`clean session = false`) so warnings published while the box was
//! offline arrive when it reconnects, keep-alive, and reconnects with backoff.
//!
//! - Last Will on `<root>/<thing>/lwt`: an unclean disconnect marks the shadow
//!   `connected: false` (the stacks' rule); after every CONNACK the box reports
//!   `connected: true` on `<root>/<thing>/connected` (the rule beside it).
//! - Warnings arrive on the group's topics (`pi/<groupid>`) at QoS 1; each is logged,
//!   noted for `sensorbox status`, and handed as JSON on stdin to the optional hook.
//! - With `transport = "mqtt"`, readings leave the queue here: published to
//!   `<root>/<thing>/data/<route>` at QoS 1 and removed on PUBACK.
//! - With `transport = "stream"`, the queued readings of a route and group go out as
//!   batches (JSON arrays under IoT's 5 KB metering unit) to the Basic Ingest topic
//!   `$aws/rules/<rule>/<root>/<thing>/data/<route>/<groupid>`, and all of a batch's
//!   readings leave the queue on its PUBACK.

use crate::config::MqttConfig;
use crate::queue::Queue;
use crate::sender::ResendBackoff;
use rumqttc::{
    AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// IoT Core's ALPN protocol for MQTT with client certificates on port 443.
pub const ALPN_443: &[u8] = b"x-amzn-mqtt-ca";
/// IoT Core accepts payloads up to 128 KiB.
const MAX_PACKET: usize = 128 * 1024;
/// Readings published and not yet acknowledged (IoT Core allows 100 in flight).
const READINGS_IN_FLIGHT: usize = 32;
/// Stream batches published and not yet acknowledged.
const BATCHES_IN_FLIGHT: usize = 16;
/// IoT Core meters messages in 5 KB units: a stream batch stays within one.
pub const STREAM_BATCH_BYTES: usize = 5 * 1024;
/// The functions take at most 500 readings per batch.
const STREAM_BATCH_READINGS: usize = 500;
/// How long a hook may run before it is killed.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// The TLS client configuration from the three PEM files (errors name the file, as
/// `mqtt.ca ...`), with IoT Core's ALPN on port 443.
pub fn tls_config(config: &MqttConfig) -> Result<rustls::ClientConfig, String> {
    let mut tls = crate::tls::client_config(&config.ca, &config.cert, &config.key, "mqtt")?;
    if config.port == 443 {
        tls.alpn_protocols = vec![ALPN_443.to_vec()];
    }
    Ok(tls)
}

/// The connection options: persistent session, Last Will, mutual TLS.
pub fn options(config: &MqttConfig, thing: &str) -> Result<MqttOptions, String> {
    let tls = tls_config(config)?;
    let mut options = MqttOptions::new(thing, config.endpoint.clone(), config.port);
    options
        .set_keep_alive(config.keep_alive)
        .set_clean_session(false)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_last_will(LastWill::new(
            lwt_topic(config, thing),
            serde_json::json!({ "connected": false, "thing": thing }).to_string(),
            QoS::AtLeastOnce,
            false,
        ))
        .set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(tls))));
    Ok(options)
}

pub fn lwt_topic(config: &MqttConfig, thing: &str) -> String {
    format!("{}/{thing}/lwt", config.device_root)
}

pub fn connected_topic(config: &MqttConfig, thing: &str) -> String {
    format!("{}/{thing}/connected", config.device_root)
}

/// rustls's process-wide crypto provider: ring, as the functions use (one TLS stack, one
/// provider in the binary). Call before building any TLS configuration.
pub fn install_crypto_provider() {
    crate::tls::install_crypto_provider();
}

pub fn data_topic(config: &MqttConfig, thing: &str, route: sensor_model::Sensor) -> String {
    format!("{}/{thing}/data/{}", config.device_root, route.name())
}

/// The Basic Ingest topic of a stream batch: the rule's prefix, then the thing, the route
/// and the group (the stacks' partition key; their IoT policy pins it to the thing's
/// `groupid` attribute).
pub fn stream_topic(
    config: &MqttConfig,
    thing: &str,
    route: sensor_model::Sensor,
    group: &str,
) -> String {
    format!(
        "$aws/rules/{}/{}/{thing}/data/{}/{group}",
        config.stream_rule,
        config.device_root,
        route.name()
    )
}

/// A stream batch: the readings' queue sequence numbers, and the JSON array of their bodies.
#[derive(Debug, PartialEq)]
pub struct StreamBatch {
    pub topic: String,
    pub seqs: Vec<i64>,
    pub body: String,
    /// The time of its oldest reading.
    pub oldest: chrono::DateTime<chrono::Utc>,
}

impl StreamBatch {
    /// Whether it should go now: full (another reading would not fit), or its oldest
    /// reading has waited `linger` already (always, with no linger).
    pub fn due(&self, linger: Duration, now: chrono::DateTime<chrono::Utc>) -> bool {
        let full = self.seqs.len() >= STREAM_BATCH_READINGS
            || self.body.len() + STREAM_BATCH_ROOM > STREAM_BATCH_BYTES;
        let waited = chrono::Duration::from_std(linger)
            .map(|linger| self.oldest + linger <= now)
            .unwrap_or(true);
        linger.is_zero() || full || waited
    }
}

/// Room a batch keeps for one more reading before it counts as full (a reading of all
/// four gas measures is about 450 bytes).
const STREAM_BATCH_ROOM: usize = 512;

/// Packs queued entries into stream batches, in queue order per (route, group): each a
/// JSON array of at most [`STREAM_BATCH_READINGS`] bodies within [`STREAM_BATCH_BYTES`]
/// (a single larger reading goes alone). The group is each reading's own `groupid`, so a
/// reading queued before a `fleet move` is published under the group it claims (and
/// refused by IoT Core's policy, which keeps it queued), never relabelled.
pub fn stream_batches(
    config: &MqttConfig,
    thing: &str,
    fallback_group: &str,
    entries: Vec<crate::queue::Entry>,
) -> Vec<StreamBatch> {
    #[derive(serde::Deserialize)]
    struct Group {
        groupid: serde_json::Value,
    }
    let mut batches: Vec<StreamBatch> = Vec::new();
    let mut open: HashMap<String, usize> = HashMap::new();
    for entry in entries {
        let group = serde_json::from_str::<Group>(&entry.body)
            .ok()
            .and_then(|g| match g.groupid {
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|g| sensor_model::domain::group_id::GroupId::parse(g).is_ok())
            .unwrap_or_else(|| fallback_group.to_owned());
        let topic = stream_topic(config, thing, entry.route, &group);
        let fits = |batch: &StreamBatch| {
            batch.seqs.len() < STREAM_BATCH_READINGS
                && batch.body.len() + 1 + entry.body.len() <= STREAM_BATCH_BYTES
        };
        match open.get(&topic).copied() {
            Some(i) if fits(&batches[i]) => {
                let batch = &mut batches[i];
                batch.body.pop();
                batch.body.push(',');
                batch.body.push_str(&entry.body);
                batch.body.push(']');
                batch.seqs.push(entry.seq);
                batch.oldest = batch.oldest.min(entry.created);
            }
            _ => {
                open.insert(topic.clone(), batches.len());
                batches.push(StreamBatch {
                    topic,
                    seqs: vec![entry.seq],
                    body: format!("[{}]", entry.body),
                    oldest: entry.created,
                });
            }
        }
    }
    batches
}

/// What an MQTT error means for a person at the box.
pub fn explain(error: &ConnectionError) -> String {
    let text = error.to_string();
    let hint = match error {
        ConnectionError::Tls(_) => {
            " (TLS: check mqtt.ca is the CA that signed the endpoint's certificate, and that \
             mqtt.cert/mqtt.key are this thing's active certificate)"
        }
        ConnectionError::ConnectionRefused(_) => {
            " (refused by the broker: the certificate's policy must allow connecting as this thing)"
        }
        ConnectionError::Io(_) => {
            // A broker that refuses a client certificate often just closes the connection.
            " (network, or the broker closed the connection: a refused certificate looks like this)"
        }
        _ => "",
    };
    format!("{text}{hint}")
}

/// Readings in flight over MQTT: the queue sequence numbers of publishes not yet acked.
#[derive(Default)]
struct InFlight {
    /// Our publish requests in the order handed to the client (None: not readings), each
    /// with the readings it carries (one, or a stream batch's).
    requested: VecDeque<Option<Vec<i64>>>,
    /// Packet id -> the queue sequence numbers it carries.
    by_pkid: HashMap<u16, Vec<i64>>,
    seqs: HashSet<i64>,
}

impl InFlight {
    /// The client put a publish on the wire with `pkid`: a resend (after a reconnect)
    /// keeps its packet id, a new one takes the next request in order.
    fn sent(&mut self, pkid: u16) {
        if pkid == 0 || self.by_pkid.contains_key(&pkid) {
            return;
        }
        if let Some(Some(seqs)) = self.requested.pop_front() {
            self.by_pkid.insert(pkid, seqs);
        }
    }

    fn acked(&mut self, pkid: u16) -> Option<Vec<i64>> {
        let seqs = self.by_pkid.remove(&pkid)?;
        for seq in &seqs {
            self.seqs.remove(seq);
        }
        Some(seqs)
    }

    /// Publishes in flight (a stream batch counts once).
    fn publishes(&self) -> usize {
        self.by_pkid.len() + self.requested.iter().flatten().count()
    }

    /// After a connection without a session nothing in flight will be acked (rumqttc
    /// cleared its pending requests), so every reading may be published again.
    fn forget(&mut self) {
        *self = InFlight::default();
    }
}

pub struct Link {
    config: MqttConfig,
    thing: String,
    queue: Arc<Mutex<Queue>>,
    /// Some: readings go over MQTT (`transport = "mqtt"` or `"stream"`), woken when new
    /// ones are queued.
    readings: Option<Arc<Notify>>,
    /// `transport = "stream"`: batches to the Basic Ingest topic, not one publish each.
    stream: bool,
    /// The box's group, for a queued reading whose own `groupid` cannot be read.
    group: String,
}

impl Link {
    pub fn new(
        config: MqttConfig,
        thing: String,
        queue: Arc<Mutex<Queue>>,
        readings: Option<Arc<Notify>>,
    ) -> Link {
        Link {
            config,
            thing,
            queue,
            readings,
            stream: false,
            group: String::new(),
        }
    }

    /// Readings leave as stream batches (`transport = "stream"`) of `group`'s box.
    pub fn batched(mut self, group: &str) -> Link {
        self.stream = true;
        self.group = group.to_owned();
        self
    }

    fn note(&self, name: &str, value: &str) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = queue.set_status(name, value) {
            tracing::warn!("cannot note {name} for `sensorbox status`: {e}");
        }
    }

    /// Runs until the process ends: connects, reconnects with backoff, never panics on
    /// what the network or the broker does. Returns only when the options cannot be
    /// built (unreadable certificates), with the reason.
    pub async fn run(self) -> String {
        let options = match options(&self.config, &self.thing) {
            Ok(options) => options,
            Err(e) => return e,
        };
        let (client, mut events) = AsyncClient::new(options, 256);
        let mut backoff = ResendBackoff::new(Duration::from_millis(500), Duration::from_secs(60));
        let mut rng = fastrand::Rng::new();
        let mut in_flight = InFlight::default();
        let mut connected = false;
        tracing::info!(
            endpoint = self.config.endpoint,
            port = self.config.port,
            thing = self.thing,
            topics = ?self.config.warning_topics,
            "MQTT: connecting"
        );
        self.note("mqtt", "connecting");
        let mut refill = tokio::time::interval(Duration::from_secs(1));
        loop {
            let wake = async {
                match &self.readings {
                    Some(notify) if connected => notify.notified().await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                event = events.poll() => match event {
                    Ok(event) => {
                        if let Some(up) = self.on_event(event, &client, &mut in_flight).await {
                            connected = up;
                            backoff.reset();
                            if connected {
                                self.publish_readings(&client, &mut in_flight);
                            }
                        }
                    }
                    Err(error) => {
                        connected = false;
                        let why = explain(&error);
                        let delay = backoff.next(None, &mut rng);
                        tracing::error!(retry_in_ms = delay.as_millis() as u64, "MQTT: {why}");
                        self.note("mqtt", &format!("disconnected: {why}"));
                        // rumqttc reconnects on the next poll; requests queued meanwhile
                        // stay in its channel, unacked publishes of a kept session are resent.
                        tokio::time::sleep(delay).await;
                    }
                },
                _ = wake => self.publish_readings(&client, &mut in_flight),
                _ = refill.tick(), if connected && self.readings.is_some() => {
                    self.publish_readings(&client, &mut in_flight)
                }
            }
        }
    }

    /// Handles one event; Some(true) when a connection was just accepted.
    async fn on_event(
        &self,
        event: Event,
        client: &AsyncClient,
        in_flight: &mut InFlight,
    ) -> Option<bool> {
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                tracing::info!(
                    session_present = ack.session_present,
                    "MQTT: connected as {}",
                    self.thing
                );
                // Without a session, rumqttc drops what it had pending (unacked publishes and
                // requests still in its channel): those readings are no longer in flight and
                // go out again from the queue. With a session it resends them itself, under
                // the packet ids already mapped.
                if !ack.session_present {
                    in_flight.forget();
                }
                // Subscribing again on a kept session is harmless, and covers a session the
                // broker lost.
                for topic in &self.config.warning_topics {
                    if let Err(e) = client.try_subscribe(topic, QoS::AtLeastOnce) {
                        tracing::error!("MQTT: cannot subscribe to {topic}: {e}");
                    }
                }
                let report = serde_json::json!({ "connected": true, "thing": self.thing });
                match client.try_publish(
                    connected_topic(&self.config, &self.thing),
                    QoS::AtLeastOnce,
                    false,
                    report.to_string(),
                ) {
                    Ok(()) => in_flight.requested.push_back(None),
                    Err(e) => tracing::warn!("MQTT: cannot report the connection: {e}"),
                }
                self.note(
                    "mqtt",
                    &format!("connected since {}", chrono::Utc::now().to_rfc3339()),
                );
                Some(true)
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|code| matches!(code, SubscribeReasonCode::Failure))
                {
                    tracing::error!(
                        "MQTT: the broker refused a warning subscription (the certificate's policy must allow {:?})",
                        self.config.warning_topics
                    );
                }
                None
            }
            Event::Incoming(Packet::Publish(publish)) => {
                self.warning(&publish.topic, &publish.payload);
                None
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                in_flight.sent(pkid);
                None
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(seqs) = in_flight.acked(ack.pkid) {
                    let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                    if let Err(e) = queue.remove(&seqs) {
                        // Still queued: it is sent again later (a harmless duplicate).
                        tracing::error!("queue: {e}");
                    }
                }
                None
            }
            _ => None,
        }
    }

    /// A warning arrived: log it, note it, hand it to the hook.
    fn warning(&self, topic: &str, payload: &[u8]) {
        let text = String::from_utf8_lossy(payload);
        let value: serde_json::Value = serde_json::from_slice(payload)
            .unwrap_or_else(|_| serde_json::Value::String(text.clone().into_owned()));
        tracing::warn!(topic, warning = %value, "warning received");
        let short: String = text.chars().take(200).collect();
        self.note(
            "last_warning",
            &format!("{} {topic} {short}", chrono::Utc::now().to_rfc3339()),
        );
        if let Some(hook) = self.config.hook.clone() {
            let input = serde_json::json!({ "topic": topic, "warning": value }).to_string();
            tokio::spawn(run_hook(hook, input));
        }
    }

    /// Hands queued readings to the client, up to the in-flight bound.
    fn publish_readings(&self, client: &AsyncClient, in_flight: &mut InFlight) {
        if self.stream {
            return self.publish_batches(client, in_flight);
        }
        if self.readings.is_none() || in_flight.seqs.len() >= READINGS_IN_FLIGHT {
            return;
        }
        let entries = {
            let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            match queue.next_batch(READINGS_IN_FLIGHT * 2) {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::error!("queue: {e}");
                    return;
                }
            }
        };
        for entry in entries {
            if in_flight.seqs.len() >= READINGS_IN_FLIGHT {
                break;
            }
            if in_flight.seqs.contains(&entry.seq) {
                continue;
            }
            let topic = data_topic(&self.config, &self.thing, entry.route);
            match client.try_publish(topic, QoS::AtLeastOnce, false, entry.body) {
                Ok(()) => {
                    in_flight.requested.push_back(Some(vec![entry.seq]));
                    in_flight.seqs.insert(entry.seq);
                }
                // The request channel is full: the rest waits for the next round.
                Err(_) => break,
            }
        }
    }

    /// `transport = "stream"`: the queued readings not in flight, packed into batches
    /// and handed to the client, up to the in-flight bound of batches.
    fn publish_batches(&self, client: &AsyncClient, in_flight: &mut InFlight) {
        if in_flight.publishes() >= BATCHES_IN_FLIGHT {
            return;
        }
        let entries = {
            let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            match queue.next_batch(BATCHES_IN_FLIGHT * 32) {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::error!("queue: {e}");
                    return;
                }
            }
        };
        let fresh: Vec<_> = entries
            .into_iter()
            .filter(|entry| !in_flight.seqs.contains(&entry.seq))
            .collect();
        let now = chrono::Utc::now();
        for batch in stream_batches(&self.config, &self.thing, &self.group, fresh) {
            if in_flight.publishes() >= BATCHES_IN_FLIGHT {
                break;
            }
            // Held for later readings to join it (`stream_linger_s`); the once-a-second
            // refill looks again.
            if !batch.due(self.config.stream_linger, now) {
                continue;
            }
            match client.try_publish(batch.topic, QoS::AtLeastOnce, false, batch.body) {
                Ok(()) => {
                    in_flight.seqs.extend(&batch.seqs);
                    in_flight.requested.push_back(Some(batch.seqs));
                }
                // The request channel is full: the rest waits for the next round.
                Err(_) => break,
            }
        }
    }
}

async fn run_hook(command: Vec<String>, input: String) {
    use tokio::io::AsyncWriteExt;
    let Some((program, args)) = command.split_first() else {
        return;
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            tracing::error!("warning hook {program}: cannot start: {e}");
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes()).await;
        let _ = stdin.write_all(b"\n").await;
    }
    match tokio::time::timeout(HOOK_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => tracing::warn!("warning hook {program} exited with {status}"),
        Ok(Err(e)) => tracing::warn!("warning hook {program}: {e}"),
        Err(_) => tracing::warn!("warning hook {program} ran over {HOOK_TIMEOUT:?}: killed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(certs: &local_aws::Certs, port: u16) -> MqttConfig {
        let device = certs.device("box-1").expect("device certificate");
        MqttConfig {
            endpoint: "localhost".into(),
            port,
            ca: certs.ca(),
            cert: device.cert,
            key: device.key,
            keep_alive: Duration::from_secs(30),
            warning_topics: vec!["pi/1".into()],
            device_root: "devices".into(),
            stream_rule: crate::config::DEFAULT_STREAM_RULE.into(),
            stream_linger: Duration::ZERO,
            hook: None,
        }
    }

    #[test]
    fn port_443_offers_iot_cores_alpn_and_bad_files_name_their_key() {
        super::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = local_aws::Certs::ensure(dir.path()).expect("CA");
        let tls = tls_config(&config_with(&certs, 443)).expect("tls");
        assert_eq!(tls.alpn_protocols, vec![b"x-amzn-mqtt-ca".to_vec()]);
        let tls = tls_config(&config_with(&certs, 8883)).expect("tls");
        assert!(tls.alpn_protocols.is_empty());

        // A key file that holds a certificate, a CA file that holds a key.
        let mut config = config_with(&certs, 8883);
        config.key = config.cert.clone();
        let err = tls_config(&config).expect_err("no key in the key file");
        assert!(err.starts_with("mqtt.key"), "{err}");
        let mut config = config_with(&certs, 8883);
        config.ca = config.key.clone();
        let err = tls_config(&config).expect_err("no certificate in the CA file");
        assert!(err.starts_with("mqtt.ca"), "{err}");
        // Another thing's key with this certificate.
        let other = certs.device("box-2").expect("second device");
        let mut config = config_with(&certs, 8883);
        config.key = other.key;
        let err = tls_config(&config).expect_err("mismatched key");
        assert!(err.contains("mqtt.cert/mqtt.key"), "{err}");
    }

    #[test]
    fn an_enrolled_pkcs8_p256_key_makes_a_client_identity() {
        super::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = local_aws::Certs::ensure(&dir.path().join("ca")).expect("CA");
        let mut config = config_with(&certs, 8883);
        let identity = crate::config::Identity {
            group: sensor_model::domain::group_id::GroupId::parse("1").expect("group"),
            thing_name: "box-1".into(),
            key: Some(dir.path().join("box/private.pem.key")),
            cert: None,
        };
        let plan = crate::enroll::Plan::new(&identity, None, None).expect("plan");
        crate::enroll::write(&plan, false).expect("enroll");
        // What `fleet enroll` returns is a certificate for the CSR's key: here self-signed.
        let key = std::fs::read_to_string(&plan.key).expect("key");
        let key = rcgen::KeyPair::from_pem(&key).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["box-1".into()])
            .and_then(|params| params.self_signed(&key))
            .expect("certificate");
        config.cert = dir.path().join("box/device.pem.crt");
        std::fs::write(&config.cert, cert.pem()).expect("write");
        config.key = plan.key;
        tls_config(&config).expect("rustls takes the PKCS#8 P-256 key");
    }

    #[test]
    fn in_flight_maps_packet_ids_in_request_order_and_ignores_resends() {
        let mut f = InFlight::default();
        f.requested.push_back(None); // the connect report
        f.requested.push_back(Some(vec![10]));
        f.seqs.insert(10);
        f.requested.push_back(Some(vec![11, 12]));
        f.seqs.extend([11, 12]);
        assert_eq!(f.publishes(), 2);
        f.sent(1);
        f.sent(2);
        f.sent(2); // resent after a reconnect: same packet id
        f.sent(3);
        assert_eq!(f.acked(1), None);
        assert_eq!(f.acked(3), Some(vec![11, 12]));
        assert_eq!(f.acked(2), Some(vec![10]));
        assert!(f.seqs.is_empty());
        assert_eq!(f.acked(2), None);
    }

    fn entry(seq: i64, route: sensor_model::Sensor, body: String) -> crate::queue::Entry {
        crate::queue::Entry {
            seq,
            route,
            doc_id: format!("id-{seq}"),
            created: chrono::Utc::now(),
            body,
        }
    }

    #[test]
    fn stream_batches_pack_per_route_and_group_within_one_metering_unit() {
        use sensor_model::Sensor;
        let config = MqttConfig {
            endpoint: "iot.example".into(),
            port: 8883,
            ca: "ca.pem".into(),
            cert: "c.pem".into(),
            key: "k.pem".into(),
            keep_alive: Duration::from_secs(60),
            warning_topics: vec!["pi/2".into()],
            device_root: "devices".into(),
            stream_rule: "sensorbox_readings".into(),
            stream_linger: Duration::ZERO,
            hook: None,
        };
        let gas = |seq: i64, group: &str| {
            let body = format!(
                r#"{{"groupid":"{group}","co":{{"sensorid":"1","sensortype":"8","value":"1.{seq:03}","createdtime":"2026-12-04 10:00:00"}},"pad":"{}"}}"#,
                "x".repeat(150)
            );
            entry(seq, Sensor::Gasdetector, body)
        };
        let mut entries: Vec<_> = (1..=30).map(|seq| gas(seq, "2")).collect();
        entries.push(entry(31, Sensor::Dust, r#"{"groupid":2,"pm1":{}}"#.into()));
        entries.push(gas(32, "9"));
        entries.push(entry(33, Sensor::Temp, "not json".into()));
        let batches = stream_batches(&config, "pi-19", "7", entries);
        let topics: Vec<&str> = batches.iter().map(|b| b.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "$aws/rules/sensorbox_readings/devices/pi-19/data/gasdetector/2",
                "$aws/rules/sensorbox_readings/devices/pi-19/data/gasdetector/2",
                "$aws/rules/sensorbox_readings/devices/pi-19/data/dust/2",
                "$aws/rules/sensorbox_readings/devices/pi-19/data/gasdetector/9",
                "$aws/rules/sensorbox_readings/devices/pi-19/data/temp/7",
            ]
        );
        let mut all: Vec<i64> = Vec::new();
        for batch in &batches {
            assert!(
                batch.body.len() <= STREAM_BATCH_BYTES,
                "{}",
                batch.body.len()
            );
            if batch.seqs.len() > 1 || !batch.body.contains("not json") {
                let items: Vec<serde_json::Value> =
                    serde_json::from_str(&batch.body).expect("a JSON array");
                assert_eq!(items.len(), batch.seqs.len());
            }
            all.extend(&batch.seqs);
        }
        all.sort();
        assert_eq!(
            all,
            (1..=33).collect::<Vec<_>>(),
            "every reading in exactly one batch"
        );
        // The first batch is full: one more reading would not fit in 5 KB.
        assert!(
            batches[0].body.len() + 250 > STREAM_BATCH_BYTES,
            "{}",
            batches[0].body.len()
        );
        assert_eq!(batches[0].seqs[..3], [1, 2, 3], "queue order kept");
    }

    #[test]
    fn a_lingering_batch_waits_for_company_unless_full_or_old_enough() {
        let now = chrono::Utc::now();
        let batch = |readings: usize, bytes: usize, age_s: i64| StreamBatch {
            topic: "t".into(),
            seqs: (0..readings as i64).collect(),
            body: "x".repeat(bytes),
            oldest: now - chrono::Duration::seconds(age_s),
        };
        let linger = Duration::from_secs(60);
        assert!(
            batch(1, 200, 0).due(Duration::ZERO, now),
            "no linger: at once"
        );
        assert!(!batch(1, 200, 10).due(linger, now), "young and small: held");
        assert!(batch(1, 200, 60).due(linger, now), "waited long enough");
        assert!(
            batch(11, 4_700, 1).due(linger, now),
            "no room for another reading"
        );
        assert!(
            batch(500, 3_000, 1).due(linger, now),
            "the functions' batch limit"
        );
    }
}
