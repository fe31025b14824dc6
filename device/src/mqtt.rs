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
    /// Our publish requests in the order handed to the client (None: not a reading).
    requested: VecDeque<Option<i64>>,
    /// Packet id -> queue sequence number.
    by_pkid: HashMap<u16, i64>,
    seqs: HashSet<i64>,
}

impl InFlight {
    /// The client put a publish on the wire with `pkid`: a resend (after a reconnect)
    /// keeps its packet id, a new one takes the next request in order.
    fn sent(&mut self, pkid: u16) {
        if pkid == 0 || self.by_pkid.contains_key(&pkid) {
            return;
        }
        if let Some(Some(seq)) = self.requested.pop_front() {
            self.by_pkid.insert(pkid, seq);
        }
    }

    fn acked(&mut self, pkid: u16) -> Option<i64> {
        let seq = self.by_pkid.remove(&pkid)?;
        self.seqs.remove(&seq);
        Some(seq)
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
    /// Some: readings go over MQTT (`transport = "mqtt"`), woken when new ones are queued.
    readings: Option<Arc<Notify>>,
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
        }
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
                if let Some(seq) = in_flight.acked(ack.pkid) {
                    let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                    if let Err(e) = queue.remove(&[seq]) {
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
                    in_flight.requested.push_back(Some(entry.seq));
                    in_flight.seqs.insert(entry.seq);
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
        f.requested.push_back(Some(10));
        f.seqs.insert(10);
        f.requested.push_back(Some(11));
        f.seqs.insert(11);
        f.sent(1);
        f.sent(2);
        f.sent(2); // resent after a reconnect: same packet id
        f.sent(3);
        assert_eq!(f.acked(1), None);
        assert_eq!(f.acked(3), Some(11));
        assert_eq!(f.acked(2), Some(10));
        assert!(f.seqs.is_empty());
        assert_eq!(f.acked(2), None);
    }
}
