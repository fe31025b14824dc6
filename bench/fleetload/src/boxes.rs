//! The simulated boxes: one rumqttc connection each (client id = thing) on the broker's
//! plain port, publishing their readings with QoS 1 on schedule, counting what they sent
//! (every PUBLISH the client put on the wire, so a resend after a reconnect shows) and the
//! PUBACKs they got. A box never republishes on its own: `published == readings` is the
//! check that the boxes resent nothing.

use crate::options::IngestPath;
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// One box's counters.
#[derive(Debug, Default)]
pub struct BoxCounts {
    /// Readings handed to the client (one publish each).
    pub publishes: AtomicU64,
    /// PUBLISH packets the client wrote (more than `publishes` = a resend).
    pub on_wire: AtomicU64,
    pub pubacks: AtomicU64,
    /// Connection errors (each followed by a reconnect).
    pub errors: AtomicU64,
    pub publish_errors: AtomicU64,
}

/// A connected box.
pub struct Connected {
    pub index: usize,
    client: AsyncClient,
    pub counts: Arc<BoxCounts>,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// What a box publishes: the topic and, per reading, its payload and (when it is timed)
/// its document id.
pub struct Schedule {
    pub topic: String,
    pub payloads: Vec<(Bytes, Option<String>)>,
}

pub fn topic(path: IngestPath, thing: &str, group: &str) -> String {
    match path {
        IngestPath::Direct => format!("devices/{thing}/data/gasdetector"),
        IngestPath::Stream => format!(
            "$aws/rules/{}/devices/{thing}/data/gasdetector/{group}",
            local_aws::stream_rule::DEFAULT_RULE
        ),
    }
}

/// A reading's MQTT payload: the reading (direct) or a batch of one (stream: the box
/// packs what is queued, which is one reading when it is live).
pub fn payload(path: IngestPath, body: &serde_json::Value) -> Bytes {
    match path {
        IngestPath::Direct => Bytes::from(body.to_string()),
        IngestPath::Stream => Bytes::from(format!("[{body}]")),
    }
}

/// Connects box `index` as `thing` and waits for its CONNACK (`None` after `wait`).
pub async fn connect(
    broker: SocketAddr,
    index: usize,
    thing: &str,
    pubacks: watch::Sender<u64>,
    wait: Duration,
) -> Result<Connected, String> {
    let mut options = MqttOptions::new(thing, broker.ip().to_string(), broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(true);
    options.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let counts = Arc::new(BoxCounts::default());
    let (connected_tx, mut connected) = watch::channel(false);
    let poller = {
        let counts = counts.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = connected_tx.send(true);
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                        counts.on_wire.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        counts.pubacks.fetch_add(1, Ordering::Relaxed);
                        pubacks.send_modify(|n| *n += 1);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        })
    };
    let up = tokio::time::timeout(wait, connected.wait_for(|up| *up)).await;
    if !matches!(up, Ok(Ok(_))) {
        poller.abort();
        return Err(format!(
            "box {thing}: no CONNACK from {broker} within {wait:?}"
        ));
    }
    Ok(Connected {
        index,
        client,
        counts,
        poller,
    })
}

/// The publish times of the timed readings, by document id.
pub type Published = Arc<Mutex<Vec<(String, Instant)>>>;

/// Publishes `schedule`: reading `k` at `start + offset + k * interval`. Returns the
/// times of the first and last publish.
pub async fn publish_all(
    connected: &Connected,
    schedule: Schedule,
    start: Instant,
    offset: Duration,
    interval: Duration,
    timed: Published,
) -> (Option<Instant>, Option<Instant>) {
    let mut first = None;
    let mut last = None;
    for (k, (payload, sampled)) in schedule.payloads.into_iter().enumerate() {
        let due = start + offset + interval.mul_f64(k as f64);
        tokio::time::sleep_until(due).await;
        let at = Instant::now();
        if let Some(id) = sampled {
            timed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((id, at));
        }
        first.get_or_insert(at);
        last = Some(at);
        match connected
            .client
            .publish_bytes(schedule.topic.clone(), QoS::AtLeastOnce, false, payload)
            .await
        {
            Ok(()) => {
                connected.counts.publishes.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                connected
                    .counts
                    .publish_errors
                    .fetch_add(1, Ordering::Relaxed);
                eprintln!("fleetload: box {}: publish {k}: {e}", connected.index);
            }
        }
    }
    (first, last)
}

/// Sums of every box's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FleetCounts {
    pub publishes: u64,
    pub on_wire: u64,
    pub pubacks: u64,
    pub errors: u64,
    pub publish_errors: u64,
    /// PUBLISH packets beyond one per reading, summed over the boxes.
    pub resends: u64,
}

pub fn totals(boxes: &[Arc<Connected>]) -> FleetCounts {
    let mut t = FleetCounts::default();
    for b in boxes {
        let c = &b.counts;
        let publishes = c.publishes.load(Ordering::Relaxed);
        let on_wire = c.on_wire.load(Ordering::Relaxed);
        t.publishes += publishes;
        t.on_wire += on_wire;
        t.pubacks += c.pubacks.load(Ordering::Relaxed);
        t.errors += c.errors.load(Ordering::Relaxed);
        t.publish_errors += c.publish_errors.load(Ordering::Relaxed);
        t.resends += on_wire.saturating_sub(publishes);
    }
    t
}
