//! A small MQTT 3.1.1 broker: QoS 0 and 1 publish/subscribe with `+`/`#` wildcards,
//! retained messages, last wills and keep-alive. Enough for `mosquitto_sub`, rumqttc and
//! the Raspberry Pi boxes' subscribers on a developer machine; QoS 2 publishes from
//! clients are accepted (PUBREC/PUBCOMP) and delivered at QoS 1 at most.
//!
//! Sessions are always clean: a client that asks for a persistent session gets a fresh one
//! (`session present = 0`), which MQTT 3.1.1 allows a server to do.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Largest packet the broker accepts (the IoT data plane caps payloads at 128 KiB; this
/// leaves room for local experiments without letting one client exhaust memory).
pub const MAX_PACKET: usize = 16 * 1024 * 1024;
/// Messages queued for one slow subscriber before further ones are dropped.
const QUEUE: usize = 10_000;

/// A message as routed through the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
}

enum Outgoing {
    Publish(Message),
    /// Another connection took over this client id.
    Close,
}

struct Session {
    conn: u64,
    tx: mpsc::Sender<Outgoing>,
    subscriptions: Vec<(String, u8)>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    retained: HashMap<String, Message>,
}

#[derive(Clone, Default)]
struct Shared {
    state: Arc<Mutex<State>>,
    next_conn: Arc<AtomicU64>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a task panicked mid-update; the maps stay usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes a message to every matching subscriber at min(message QoS, granted QoS).
    fn route(&self, message: Message) {
        let mut state = self.lock();
        if message.retain {
            if message.payload.is_empty() {
                state.retained.remove(&message.topic);
            } else {
                state
                    .retained
                    .insert(message.topic.clone(), message.clone());
            }
        }
        for session in state.sessions.values() {
            let granted = session
                .subscriptions
                .iter()
                .filter(|(filter, _)| topic_matches(filter, &message.topic))
                .map(|(_, qos)| *qos)
                .max();
            if let Some(granted) = granted {
                let delivery = Message {
                    topic: message.topic.clone(),
                    payload: message.payload.clone(),
                    qos: message.qos.min(granted),
                    // MQTT 3.1.1 3.3.1.3: retain is cleared on normal forwarding.
                    retain: false,
                };
                // A full queue means a stuck subscriber: drop rather than block everyone.
                let _ = session.tx.try_send(Outgoing::Publish(delivery));
            }
        }
    }
}

/// A running broker; dropping it (or calling [`Broker::shutdown`]) stops it and closes
/// every client connection.
pub struct Broker {
    addr: SocketAddr,
    shared: Shared,
    shutdown: watch::Sender<bool>,
}

impl Broker {
    /// Binds `addr` (port 0 picks a free port) and serves on the current tokio runtime.
    pub async fn start(addr: SocketAddr) -> io::Result<Broker> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Shared::default();
        let (shutdown, stop) = watch::channel(false);
        tokio::spawn(accept_loop(listener, shared.clone(), stop));
        Ok(Broker {
            addr,
            shared,
            shutdown,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A cheap handle that publishes into this broker from in-process code.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            shared: self.shared.clone(),
        }
    }

    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Publishes into a broker without a network round trip (the IoT endpoint uses this).
#[derive(Clone)]
pub struct Publisher {
    shared: Shared,
}

impl Publisher {
    /// Delivers `payload` on `topic` (a topic name, no wildcards) at `qos` (0 or 1).
    pub fn publish(&self, topic: &str, payload: Bytes, qos: u8, retain: bool) {
        self.shared.route(Message {
            topic: topic.to_owned(),
            payload,
            qos: qos.min(1),
            retain,
        });
    }
}

async fn accept_loop(listener: TcpListener, shared: Shared, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_client(stream, shared, stop).await {
                            tracing::debug!("mqtt client {peer}: {e}");
                        }
                    });
                }
                Err(e) => {
                    // EMFILE and the like: back off briefly instead of spinning.
                    tracing::warn!("mqtt accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// MQTT control packet types (upper nibble of the first byte).
mod kind {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
}

struct Packet {
    header: u8,
    body: Bytes,
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

async fn read_packet<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<Packet>> {
    let mut first = [0u8; 1];
    match reader.read_exact(&mut first).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut length: usize = 0;
    let mut shift = 0;
    loop {
        let mut byte = [0u8; 1];
        reader.read_exact(&mut byte).await?;
        length |= ((byte[0] & 0x7f) as usize) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(invalid("malformed remaining length"));
        }
    }
    if length > MAX_PACKET {
        return Err(invalid(format!("packet of {length} bytes is too large")));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await?;
    Ok(Some(Packet {
        header: first[0],
        body: Bytes::from(body),
    }))
}

fn encode(header: u8, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(header);
    let mut length = body.len();
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if length == 0 {
            break;
        }
    }
    out.put_slice(body);
    out.freeze()
}

fn take_u16(body: &mut Bytes) -> io::Result<u16> {
    if body.remaining() < 2 {
        return Err(invalid("truncated packet"));
    }
    Ok(body.get_u16())
}

fn take_bytes(body: &mut Bytes) -> io::Result<Bytes> {
    let len = take_u16(body)? as usize;
    if body.remaining() < len {
        return Err(invalid("truncated packet"));
    }
    Ok(body.split_to(len))
}

fn take_string(body: &mut Bytes) -> io::Result<String> {
    let raw = take_bytes(body)?;
    String::from_utf8(raw.to_vec()).map_err(|_| invalid("string is not UTF-8"))
}

fn put_string(out: &mut BytesMut, s: &str) {
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

fn encode_publish(message: &Message, packet_id: Option<u16>) -> Bytes {
    let mut body = BytesMut::with_capacity(message.topic.len() + message.payload.len() + 4);
    put_string(&mut body, &message.topic);
    if let Some(id) = packet_id {
        body.put_u16(id);
    }
    body.put_slice(&message.payload);
    let header = (kind::PUBLISH << 4) | (message.qos << 1) | u8::from(message.retain);
    encode(header, &body)
}

struct Connect {
    client_id: String,
    keep_alive: u16,
    will: Option<Message>,
}

/// Parses CONNECT; `Err(code)` is the CONNACK return code to refuse with.
fn parse_connect(mut body: Bytes) -> io::Result<Result<Connect, u8>> {
    let protocol = take_string(&mut body)?;
    if body.remaining() < 4 {
        return Err(invalid("truncated CONNECT"));
    }
    let level = body.get_u8();
    let flags = body.get_u8();
    let keep_alive = body.get_u16();
    match (protocol.as_str(), level) {
        ("MQTT", 4) | ("MQIsdp", 3) => {}
        ("MQTT", _) => return Ok(Err(0x01)),
        _ => return Err(invalid(format!("unknown protocol {protocol:?}"))),
    }
    let clean_session = flags & 0x02 != 0;
    let mut client_id = take_string(&mut body)?;
    if client_id.is_empty() {
        if !clean_session {
            return Ok(Err(0x02));
        }
        client_id = format!("localstack-{:016x}", fastrand::u64(..));
    }
    let will = if flags & 0x04 != 0 {
        let topic = take_string(&mut body)?;
        let payload = take_bytes(&mut body)?;
        let qos = (flags >> 3) & 0x03;
        if qos > 2 || !valid_topic_name(&topic) {
            return Err(invalid("bad will"));
        }
        Some(Message {
            topic,
            payload,
            qos: qos.min(1),
            retain: flags & 0x20 != 0,
        })
    } else {
        None
    };
    // Username and password are accepted and ignored: this is a local development broker.
    Ok(Ok(Connect {
        client_id,
        keep_alive,
        will,
    }))
}

async fn serve_client(
    stream: TcpStream,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();

    // CONNECT must be the first packet, within a bounded time.
    let first = tokio::time::timeout(Duration::from_secs(10), read_packet(&mut reader))
        .await
        .map_err(|_| invalid("no CONNECT within 10 s"))??;
    let Some(first) = first else { return Ok(()) };
    if first.header >> 4 != kind::CONNECT {
        return Err(invalid("first packet is not CONNECT"));
    }
    let connect = match parse_connect(first.body)? {
        Ok(connect) => connect,
        Err(code) => {
            writer
                .write_all(&encode(kind::CONNACK << 4, &[0, code]))
                .await?;
            return Ok(());
        }
    };

    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel(QUEUE);
    {
        let mut state = shared.lock();
        let previous = state.sessions.insert(
            connect.client_id.clone(),
            Session {
                conn,
                tx,
                subscriptions: Vec::new(),
            },
        );
        if let Some(previous) = previous {
            let _ = previous.tx.try_send(Outgoing::Close);
        }
    }
    writer
        .write_all(&encode(kind::CONNACK << 4, &[0, 0]))
        .await?;

    // Reading is not cancel-safe, so a reader task feeds packets through a channel.
    let (packets_tx, mut packets) = mpsc::channel::<io::Result<Option<Packet>>>(16);
    let reader_task = tokio::spawn(async move {
        loop {
            let packet = read_packet(&mut reader).await;
            let end = !matches!(packet, Ok(Some(_)));
            if packets_tx.send(packet).await.is_err() || end {
                return;
            }
        }
    });

    let keep_alive = if connect.keep_alive == 0 {
        None
    } else {
        // MQTT 3.1.1 3.1.2.10: one and a half times the keep-alive period.
        Some(Duration::from_millis(u64::from(connect.keep_alive) * 1500))
    };
    let mut client = Client {
        shared: &shared,
        client_id: &connect.client_id,
        conn,
        next_id: 1,
    };
    let result = client
        .run(&mut writer, &mut packets, &mut rx, &mut stop, keep_alive)
        .await;
    reader_task.abort();

    // Remove the session unless another connection already took the client id over.
    {
        let mut state = shared.lock();
        if state
            .sessions
            .get(&connect.client_id)
            .is_some_and(|s| s.conn == conn)
        {
            state.sessions.remove(&connect.client_id);
        }
    }
    let clean = matches!(result, Ok(true));
    if !clean {
        if let Some(will) = connect.will {
            shared.route(will);
        }
    }
    let _ = writer.shutdown().await;
    result.map(|_| ())
}

struct Client<'a> {
    shared: &'a Shared,
    client_id: &'a str,
    conn: u64,
    next_id: u16,
}

impl Client<'_> {
    /// Serves the connection; `Ok(true)` on a clean DISCONNECT (the will is discarded).
    async fn run(
        &mut self,
        writer: &mut tokio::net::tcp::OwnedWriteHalf,
        packets: &mut mpsc::Receiver<io::Result<Option<Packet>>>,
        outgoing: &mut mpsc::Receiver<Outgoing>,
        stop: &mut watch::Receiver<bool>,
        keep_alive: Option<Duration>,
    ) -> io::Result<bool> {
        loop {
            let idle = async {
                match keep_alive {
                    Some(limit) => tokio::time::sleep(limit).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => return Ok(false),
                _ = idle => return Err(invalid("keep-alive expired")),
                out = outgoing.recv() => match out {
                    Some(Outgoing::Publish(message)) => {
                        let id = (message.qos > 0).then(|| self.packet_id());
                        writer.write_all(&encode_publish(&message, id)).await?;
                    }
                    Some(Outgoing::Close) | None => return Err(invalid("session taken over")),
                },
                packet = packets.recv() => {
                    let Some(packet) = packet.transpose()? .flatten() else {
                        return Err(invalid("connection closed without DISCONNECT"));
                    };
                    if self.handle(packet, writer).await? {
                        return Ok(true);
                    }
                }
            }
        }
    }

    fn packet_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = if self.next_id == u16::MAX {
            1
        } else {
            self.next_id + 1
        };
        id
    }

    /// Handles one packet; `Ok(true)` on DISCONNECT.
    async fn handle(
        &mut self,
        packet: Packet,
        writer: &mut tokio::net::tcp::OwnedWriteHalf,
    ) -> io::Result<bool> {
        let mut body = packet.body;
        match packet.header >> 4 {
            kind::PUBLISH => {
                let qos = (packet.header >> 1) & 0x03;
                let retain = packet.header & 0x01 != 0;
                let topic = take_string(&mut body)?;
                if qos > 2 || !valid_topic_name(&topic) {
                    return Err(invalid(format!("bad PUBLISH (topic {topic:?}, qos {qos})")));
                }
                let id = if qos > 0 {
                    Some(take_u16(&mut body)?)
                } else {
                    None
                };
                self.shared.route(Message {
                    topic,
                    payload: body,
                    qos: qos.min(1),
                    retain,
                });
                match (qos, id) {
                    (1, Some(id)) => {
                        writer
                            .write_all(&encode(kind::PUBACK << 4, &id.to_be_bytes()))
                            .await?
                    }
                    (2, Some(id)) => {
                        writer
                            .write_all(&encode(kind::PUBREC << 4, &id.to_be_bytes()))
                            .await?
                    }
                    _ => {}
                }
            }
            kind::PUBREL => {
                let id = take_u16(&mut body)?;
                writer
                    .write_all(&encode(kind::PUBCOMP << 4, &id.to_be_bytes()))
                    .await?;
            }
            // Acknowledgements of our QoS 1 deliveries: nothing is retransmitted with clean
            // sessions, so there is no state to clear.
            kind::PUBACK | kind::PUBREC | kind::PUBCOMP => {}
            kind::SUBSCRIBE => {
                let id = take_u16(&mut body)?;
                let mut granted = Vec::new();
                let mut accepted = Vec::new();
                while body.has_remaining() {
                    let filter = take_string(&mut body)?;
                    if !body.has_remaining() {
                        return Err(invalid("truncated SUBSCRIBE"));
                    }
                    let qos = body.get_u8() & 0x03;
                    if valid_topic_filter(&filter) && qos <= 2 {
                        granted.push(qos.min(1));
                        accepted.push((filter, qos.min(1)));
                    } else {
                        granted.push(0x80);
                    }
                }
                if granted.is_empty() {
                    return Err(invalid("SUBSCRIBE without topic filters"));
                }
                let retained = {
                    let mut state = self.shared.lock();
                    let Some(session) = state
                        .sessions
                        .get_mut(self.client_id)
                        .filter(|s| s.conn == self.conn)
                    else {
                        return Err(invalid("session taken over"));
                    };
                    for (filter, qos) in &accepted {
                        session.subscriptions.retain(|(f, _)| f != filter);
                        session.subscriptions.push((filter.clone(), *qos));
                    }
                    let mut retained: Vec<Message> = Vec::new();
                    for message in state.retained.values() {
                        if let Some(qos) = accepted
                            .iter()
                            .filter(|(f, _)| topic_matches(f, &message.topic))
                            .map(|(_, q)| *q)
                            .max()
                        {
                            let mut message = message.clone();
                            message.qos = message.qos.min(qos);
                            retained.push(message);
                        }
                    }
                    retained
                };
                let mut ack = BytesMut::with_capacity(2 + granted.len());
                ack.put_u16(id);
                ack.put_slice(&granted);
                writer.write_all(&encode(kind::SUBACK << 4, &ack)).await?;
                for message in retained {
                    let id = (message.qos > 0).then(|| self.packet_id());
                    writer.write_all(&encode_publish(&message, id)).await?;
                }
            }
            kind::UNSUBSCRIBE => {
                let id = take_u16(&mut body)?;
                let mut filters = Vec::new();
                while body.has_remaining() {
                    filters.push(take_string(&mut body)?);
                }
                {
                    let mut state = self.shared.lock();
                    if let Some(session) = state.sessions.get_mut(self.client_id) {
                        session.subscriptions.retain(|(f, _)| !filters.contains(f));
                    }
                }
                writer
                    .write_all(&encode(kind::UNSUBACK << 4, &id.to_be_bytes()))
                    .await?;
            }
            kind::PINGREQ => writer.write_all(&encode(kind::PINGRESP << 4, &[])).await?,
            kind::DISCONNECT => return Ok(true),
            other => return Err(invalid(format!("unexpected packet type {other}"))),
        }
        Ok(false)
    }
}

/// A topic name for PUBLISH: non-empty, no wildcards, no NUL.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= 65535 && !topic.contains(['+', '#', '\0'])
}

/// A topic filter for SUBSCRIBE: `+` alone in a level, `#` alone and last.
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > 65535 || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, level)| {
        if level.contains('#') {
            *level == "#" && i == last
        } else if level.contains('+') {
            *level == "+"
        } else {
            true
        }
    })
}

/// MQTT topic matching; filters starting with a wildcard do not match `$` topics.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        assert!(topic_matches("pi/#", "pi/2"));
        assert!(topic_matches("pi/#", "pi"));
        assert!(topic_matches("pi/+", "pi/2"));
        assert!(!topic_matches("pi/+", "pi/2/x"));
        assert!(topic_matches("+/+/x", "a/b/x"));
        assert!(topic_matches("#", "a/b"));
        assert!(!topic_matches("#", "$SYS/x"));
        assert!(topic_matches("$SYS/#", "$SYS/x"));
        assert!(!topic_matches("pi/1", "pi/2"));
        assert!(topic_matches("pi//x", "pi//x"));
    }

    #[test]
    fn filters() {
        assert!(valid_topic_filter("pi/#"));
        assert!(valid_topic_filter("+/x/+"));
        assert!(!valid_topic_filter("pi/#/x"));
        assert!(!valid_topic_filter("pi/a+"));
        assert!(!valid_topic_filter(""));
        assert!(valid_topic_name("pi/2"));
        assert!(!valid_topic_name("pi/+"));
    }

    #[test]
    fn remaining_length_round_trip() {
        for len in [0usize, 127, 128, 16_383, 16_384, 2_097_152] {
            let packet = encode(0x30, &vec![0u8; len]);
            let mut cursor = std::io::Cursor::new(packet.to_vec());
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            if len <= MAX_PACKET {
                let read = rt.block_on(read_packet(&mut cursor)).unwrap().unwrap();
                assert_eq!(read.body.len(), len);
            }
        }
    }
}
