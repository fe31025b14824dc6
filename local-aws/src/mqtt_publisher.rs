//! The in-process MQTT client that publishes into the local broker (the broker handle
//! keeps one): the IoT endpoint's relayed publishes and the rules' shadow answers go
//! through it, in the order they were published.

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Publishes into the broker over one MQTT connection (the IoT endpoint's `Publish`, the
/// shadow topics' answers).
#[derive(Clone)]
pub struct MqttPublisher {
    client: Option<AsyncClient>,
}

impl MqttPublisher {
    /// A publisher with no broker behind it: every publish fails.
    pub(crate) fn disconnected() -> MqttPublisher {
        MqttPublisher { client: None }
    }

    /// Connects in the background and keeps reconnecting: a broker restart costs the
    /// messages published while it was down, as a real one would for QoS 0.
    pub(crate) fn connect(addr: SocketAddr) -> (MqttPublisher, tokio::task::JoinHandle<()>) {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "local-aws-iot-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(256 * 1024, 256 * 1024);
        let (client, mut events) = AsyncClient::new(options, 10_000);
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Disconnect)) | Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Ok(_) => {}
                }
            }
        });
        (
            MqttPublisher {
                client: Some(client),
            },
            task,
        )
    }

    /// Queues `payload` on `topic` (a topic name, no wildcards) at `qos` (0 or 1).
    pub async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos: u8,
        retain: bool,
    ) -> Result<(), String> {
        let Some(client) = &self.client else {
            return Err("the broker is not running".into());
        };
        let qos = if qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        client
            .publish_bytes(topic, qos, retain, payload)
            .await
            .map_err(|e| format!("cannot hand the message to the broker: {e}"))
    }
}
