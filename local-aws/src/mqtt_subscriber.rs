//! A client subscribed to one topic filter on the local broker, for the tests and tools
//! that wait on what the stack publishes (a warning, a shadow answer) instead of sleeping.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, SubscribeReasonCode};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

/// Receives, in order, every message the broker routes to its filter (QoS 1).
pub struct MqttSubscriber {
    _client: AsyncClient,
    messages: mpsc::UnboundedReceiver<Publish>,
}

impl MqttSubscriber {
    /// Connects to the broker at `broker` and subscribes to `filter`; returns once the
    /// broker has granted the subscription (its SUBACK), so nothing published after this
    /// returns can be missed. Fails if no grant arrives within `wait`.
    pub async fn connect(
        broker: SocketAddr,
        filter: &str,
        wait: Duration,
    ) -> Result<MqttSubscriber, String> {
        let id = format!("local-sub-{}-{}", std::process::id(), fastrand::u32(..));
        let mut options = MqttOptions::new(id, broker.ip().to_string(), broker.port());
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .map_err(|e| format!("subscribe to {filter}: {e}"))?;
        let (tx, messages) = mpsc::unbounded_channel();
        let (granted_tx, granted) = oneshot::channel();
        tokio::spawn(async move {
            let mut granted_tx = Some(granted_tx);
            while let Ok(event) = eventloop.poll().await {
                match event {
                    Event::Incoming(Packet::SubAck(ack)) => {
                        if let Some(granted) = granted_tx.take() {
                            let _ = granted.send(ack.return_codes);
                        }
                    }
                    Event::Incoming(Packet::Publish(publish)) => {
                        let _ = tx.send(publish);
                    }
                    _ => {}
                }
            }
        });
        let codes = timeout(wait, granted)
            .await
            .map_err(|_| format!("no SUBACK for {filter} from {broker} within {wait:?}"))?
            .map_err(|_| format!("connection to {broker} ended before the SUBACK"))?;
        match codes.as_slice() {
            [SubscribeReasonCode::Success(_)] => Ok(MqttSubscriber {
                _client: client,
                messages,
            }),
            other => Err(format!(
                "{broker} refused the subscription to {filter}: {other:?}"
            )),
        }
    }

    /// The next message, or `None` if none arrives within `wait` (or the connection ended).
    pub async fn next(&mut self, wait: Duration) -> Option<Publish> {
        timeout(wait, self.messages.recv()).await.ok().flatten()
    }
}
