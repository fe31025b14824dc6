//! A counting reverse proxy between the functions and one downstream: OpenSearch (`_bulk`
//! requests, their bytes and documents), the IoT data-plane endpoint (named-shadow
//! updates per thing, publishes) or the Lambda invoke API of `cargo lambda watch`
//! (invocations per function, and how many are running now). The OpenSearch one can be
//! switched down: it then answers 503 (OpenSearch's shape) without forwarding.
//!
//! local-aws's `fault.rs` proxy injects random faults but counts only totals, so this one
//! is separate (both serve and forward with `local_aws::http`): forward everything, count
//! what matters, never time out (a stream batch riding out an outage holds its
//! invocation open for a minute).
//!
//! The invoke proxy keeps only a few invocations of a function at `cargo lambda watch`
//! ([`Proxy::limit_per_function`]) and queues the rest here, in arrival order: watch's own
//! queue holds 100 per function and deadlocks when it is full (`RequestCache::upsert`
//! awaits room in the full channel while holding the lock the function's `/next` needs),
//! after which it answers nothing until restarted. Lambda queues asynchronous invocations
//! (the IoT rule's Lambda action) without such a bound, so the queue here stands in for
//! Lambda's; and an emulator restarted after a crash (the kill fault) loses only the few
//! it held.
//!
//! The upstream can be changed ([`Proxy::set_upstream`]: a restarted `cargo lambda watch`
//! listens on a new port). While nothing accepts connections upstream, a request waits
//! (up to [`UPSTREAM_WAIT`]) instead of failing: a function whose emulator is restarting
//! is a cold start to its invoker, not an error.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Request;
use local_aws::http::{self, HttpResponse, ProxyClient, Server};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a request waits for an upstream that refuses connections.
pub const UPSTREAM_WAIT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    OpenSearch,
    Iot,
    Invoke,
}

/// What went through the proxy so far.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub requests: u64,
    /// Answered 503 by the proxy while down (never forwarded).
    pub refused: u64,
    /// Requests the upstream could not be reached for (answered 502).
    pub upstream_errors: u64,
    /// `_bulk` requests forwarded, their body bytes and documents (non-empty lines / 2).
    pub bulk_requests: u64,
    pub bulk_bytes: u64,
    pub bulk_docs: u64,
    /// The most documents one `_bulk` carried.
    pub bulk_docs_max: u64,
    /// `POST /things/<thing>/shadow?name=...` per thing, and the 409s among them.
    pub shadow_writes: BTreeMap<String, u64>,
    pub shadow_conflicts: u64,
    /// Per thing and second since the proxy started: for the peak rate.
    pub shadow_write_seconds: BTreeMap<(String, u64), u64>,
    pub shadow_reads: u64,
    /// `POST /topics/...` (the warnings).
    pub publishes: u64,
    /// Invocations per function, and those answered with `X-Amz-Function-Error` or not
    /// answered at all.
    pub invocations: BTreeMap<String, u64>,
    pub invocation_errors: u64,
}

impl Counts {
    pub fn total_shadow_writes(&self) -> u64 {
        self.shadow_writes.values().sum()
    }

    pub fn total_invocations(&self) -> u64 {
        self.invocations.values().sum()
    }

    /// The most named-shadow updates one thing got within one second.
    pub fn peak_shadow_writes_per_second(&self) -> u64 {
        self.shadow_write_seconds
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// What happened since `before` (a snapshot of the same proxy).
    pub fn since(&self, before: &Counts) -> Counts {
        let sub_map = |now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>| {
            now.iter()
                .map(|(k, v)| (k.clone(), v - then.get(k).copied().unwrap_or(0)))
                .filter(|(_, v)| *v > 0)
                .collect()
        };
        Counts {
            requests: self.requests - before.requests,
            refused: self.refused - before.refused,
            upstream_errors: self.upstream_errors - before.upstream_errors,
            bulk_requests: self.bulk_requests - before.bulk_requests,
            bulk_bytes: self.bulk_bytes - before.bulk_bytes,
            bulk_docs: self.bulk_docs - before.bulk_docs,
            bulk_docs_max: self.bulk_docs_max,
            shadow_writes: sub_map(&self.shadow_writes, &before.shadow_writes),
            shadow_conflicts: self.shadow_conflicts - before.shadow_conflicts,
            shadow_write_seconds: self
                .shadow_write_seconds
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v - before.shadow_write_seconds.get(k).copied().unwrap_or(0),
                    )
                })
                .filter(|(_, v)| *v > 0)
                .collect(),
            shadow_reads: self.shadow_reads - before.shadow_reads,
            publishes: self.publishes - before.publishes,
            invocations: sub_map(&self.invocations, &before.invocations),
            invocation_errors: self.invocation_errors - before.invocation_errors,
        }
    }
}

struct State {
    kind: Kind,
    upstream: Mutex<String>,
    started: Instant,
    down: AtomicBool,
    counts: Mutex<Counts>,
    /// Invocations in the proxy now, queued here or at the upstream (invoke proxy).
    in_flight: watch::Sender<u32>,
    /// Per function: room at the upstream.
    room: Mutex<BTreeMap<String, Arc<tokio::sync::Semaphore>>>,
    limit: std::sync::atomic::AtomicUsize,
    client: ProxyClient,
}

/// A running proxy; stops accepting when dropped.
pub struct Proxy {
    server: Server,
    state: Arc<State>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://host:port`).
    pub async fn start(kind: Kind, upstream: &str) -> std::io::Result<Proxy> {
        let state = Arc::new(State {
            kind,
            upstream: Mutex::new(upstream.trim_end_matches('/').to_owned()),
            started: Instant::now(),
            down: AtomicBool::new(false),
            counts: Mutex::new(Counts::default()),
            in_flight: watch::channel(0).0,
            room: Mutex::new(BTreeMap::new()),
            limit: std::sync::atomic::AtomicUsize::new(4),
            client: http::proxy_client(),
        });
        let handler_state = state.clone();
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let server = http::serve(loopback, move |request, _peer| {
            let state = handler_state.clone();
            async move { handle(&state, request).await }
        })
        .await?;
        Ok(Proxy { server, state })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn counts(&self) -> Counts {
        lock(&self.state.counts).clone()
    }

    /// At most `limit` invocations of one function at the upstream at once (default 4);
    /// set before the first invocation.
    pub fn limit_per_function(&self, limit: usize) {
        self.state.limit.store(limit.max(1), Ordering::SeqCst);
    }

    /// Forwards to `upstream` from now on.
    pub fn set_upstream(&self, upstream: &str) {
        *lock(&self.state.upstream) = upstream.trim_end_matches('/').to_owned();
    }

    /// Down: every request is answered 503 without reaching the upstream.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Invocations in the proxy now (queued here or running), to wait on.
    pub fn in_flight(&self) -> watch::Receiver<u32> {
        self.state.in_flight.subscribe()
    }
}

/// What a request is, for counting.
#[derive(Debug, PartialEq, Eq)]
enum Call {
    Bulk,
    ShadowWrite(String),
    ShadowRead,
    Publish,
    Invocation(String),
    Other,
}

fn classify(kind: Kind, method: &hyper::Method, path: &str, query: Option<&str>) -> Call {
    let post = method == hyper::Method::POST;
    match kind {
        Kind::OpenSearch if post && (path == "/_bulk" || path.ends_with("/_bulk")) => Call::Bulk,
        Kind::Iot => {
            let named = query.is_some_and(|q| q.split('&').any(|p| p.starts_with("name=")));
            match path
                .strip_prefix("/things/")
                .and_then(|rest| rest.strip_suffix("/shadow"))
            {
                Some(thing) if post && named => Call::ShadowWrite(thing.to_owned()),
                Some(_) if method == hyper::Method::GET => Call::ShadowRead,
                _ if post && path.starts_with("/topics/") => Call::Publish,
                _ => Call::Other,
            }
        }
        Kind::Invoke => match path
            .strip_prefix("/2015-03-31/functions/")
            .and_then(|rest| rest.strip_suffix("/invocations"))
        {
            Some(function) if post => Call::Invocation(function.to_owned()),
            _ => Call::Other,
        },
        _ => Call::Other,
    }
}

/// One more in the gauge while it lives.
struct Gauge<'a>(&'a watch::Sender<u32>);

impl<'a> Gauge<'a> {
    fn new(gauge: &'a watch::Sender<u32>) -> Gauge<'a> {
        gauge.send_modify(|n| *n += 1);
        Gauge(gauge)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Documents in a `_bulk` body: its non-empty lines, an action and a source each.
pub fn bulk_docs(body: &[u8]) -> u64 {
    let lines = body
        .split(|b| *b == b'\n')
        .filter(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
        .count();
    (lines / 2) as u64
}

async fn handle(state: &State, request: Request<Incoming>) -> HttpResponse {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return http::plain(400, &format!("fleetload proxy: reading the request: {e}")),
    };
    let call = classify(
        state.kind,
        &parts.method,
        parts.uri.path(),
        parts.uri.query(),
    );
    lock(&state.counts).requests += 1;
    if state.down.load(Ordering::SeqCst) {
        lock(&state.counts).refused += 1;
        return unavailable();
    }
    // Counted until answered or abandoned (a caller that gives up drops this future).
    let _gauge = matches!(call, Call::Invocation(_)).then(|| Gauge::new(&state.in_flight));
    let _room = match &call {
        Call::Invocation(function) => {
            let semaphore = lock(&state.room)
                .entry(function.clone())
                .or_insert_with(|| {
                    let limit = state.limit.load(Ordering::SeqCst);
                    Arc::new(tokio::sync::Semaphore::new(limit))
                })
                .clone();
            semaphore.acquire_owned().await.ok()
        }
        _ => None,
    };
    let forwarded = forward(state, &parts, body.clone()).await;
    let status = forwarded
        .as_ref()
        .map_or_else(|e| e.status, |r| r.status().as_u16());
    let mut counts = lock(&state.counts);
    match call {
        Call::Bulk => {
            counts.bulk_requests += 1;
            counts.bulk_bytes += body.len() as u64;
            let docs = bulk_docs(&body);
            counts.bulk_docs += docs;
            counts.bulk_docs_max = counts.bulk_docs_max.max(docs);
        }
        Call::ShadowWrite(thing) => {
            let second = state.started.elapsed().as_secs();
            *counts
                .shadow_write_seconds
                .entry((thing.clone(), second))
                .or_default() += 1;
            *counts.shadow_writes.entry(thing).or_default() += 1;
            if status == 409 {
                counts.shadow_conflicts += 1;
            }
        }
        Call::ShadowRead => counts.shadow_reads += 1,
        Call::Publish => counts.publishes += 1,
        Call::Invocation(function) => {
            *counts.invocations.entry(function).or_default() += 1;
            let function_error = forwarded
                .as_ref()
                .map_or(true, |r| r.headers().contains_key("x-amz-function-error"));
            if function_error || status >= 500 {
                counts.invocation_errors += 1;
            }
        }
        Call::Other => {}
    }
    match forwarded {
        Ok(response) => response,
        Err(e) => {
            counts.upstream_errors += 1;
            e.response("fleetload proxy")
        }
    }
}

/// Forwards to the current upstream; a refused connection waits (up to
/// [`UPSTREAM_WAIT`]) for an upstream that is restarting.
async fn forward(
    state: &State,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Result<HttpResponse, http::ForwardError> {
    let waiting_since = Instant::now();
    loop {
        let upstream = lock(&state.upstream).clone();
        match http::forward(&state.client, &upstream, parts, body.clone()).await {
            // Refused: nothing got the request, so it can wait for the upstream.
            Err(e) if e.refused && waiting_since.elapsed() < UPSTREAM_WAIT => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answer => return answer,
        }
    }
}

/// OpenSearch's answer while it is unavailable.
fn unavailable() -> HttpResponse {
    let body = serde_json::json!({
        "error": {"type": "unavailable", "reason": "fleetload: OpenSearch is down (fault)"},
        "status": 503,
    });
    http::json(503, &body, &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Method;

    #[test]
    fn calls_are_told_apart() {
        let post = Method::POST;
        let get = Method::GET;
        assert_eq!(
            classify(Kind::OpenSearch, &post, "/_bulk", None),
            Call::Bulk
        );
        assert_eq!(
            classify(Kind::OpenSearch, &post, "/gasdetect/_bulk", None),
            Call::Bulk
        );
        assert_eq!(
            classify(Kind::OpenSearch, &post, "/gasdetect/_search", None),
            Call::Other
        );
        assert_eq!(
            classify(Kind::Iot, &post, "/things/g3/shadow", Some("name=alarms")),
            Call::ShadowWrite("g3".into())
        );
        assert_eq!(
            classify(Kind::Iot, &post, "/things/g3/shadow", None),
            Call::Other,
            "the classic shadow is not the alarm state"
        );
        assert_eq!(
            classify(Kind::Iot, &get, "/things/g3/shadow", Some("name=alarms")),
            Call::ShadowRead
        );
        assert_eq!(
            classify(Kind::Iot, &post, "/topics/pi%2Fg3", Some("qos=1")),
            Call::Publish
        );
        assert_eq!(
            classify(
                Kind::Invoke,
                &post,
                "/2015-03-31/functions/gasdetector/invocations",
                None
            ),
            Call::Invocation("gasdetector".into())
        );
    }

    #[test]
    fn bulk_documents_are_line_pairs() {
        let body = b"{\"create\":{}}\n{\"a\":1}\n{\"create\":{}}\n{\"a\":2}\n\n";
        assert_eq!(bulk_docs(body), 2);
        assert_eq!(bulk_docs(b""), 0);
    }

    #[test]
    fn counts_since_a_snapshot() {
        let mut before = Counts::default();
        before.invocations.insert("gasdetector".into(), 2);
        before.bulk_requests = 1;
        let mut now = before.clone();
        now.invocations.insert("gasdetector".into(), 5);
        now.invocations.insert("dust".into(), 1);
        now.bulk_requests = 4;
        let delta = now.since(&before);
        assert_eq!(delta.bulk_requests, 3);
        assert_eq!(delta.total_invocations(), 4);
    }
}
