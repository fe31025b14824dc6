//! A fault-injecting HTTP reverse proxy for reliability tests. It forwards every request
//! to an upstream (the IoT data-plane endpoint, OpenSearch, ...) and, at a configured rate
//! drawn from a seeded RNG, instead answers 429/500/503, resets the connection (before
//! or after the upstream did the work), or answers late (past the client's timeout).
//!
//! Error answers carry both AWS shapes: an `x-amzn-ErrorType` header with a JSON
//! `message` (what the AWS SDKs parse) and an OpenSearch-style `error.type`/`status`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// One kind of injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status without forwarding (429, 500, 503, ...).
    Status(u16),
    /// Reset the connection (TCP RST) without forwarding: the upstream never sees it.
    ResetBeforeForward,
    /// Forward, then reset instead of answering: the upstream did the work, the client
    /// cannot know (the case that makes idempotency necessary).
    ResetAfterForward,
    /// Wait this long, then forward and answer (meant to exceed the client's timeout).
    Slow(Duration),
}

impl Fault {
    pub fn label(&self) -> String {
        match self {
            Fault::Status(s) => format!("status {s}"),
            Fault::ResetBeforeForward => "reset before forwarding".into(),
            Fault::ResetAfterForward => "reset after forwarding".into(),
            Fault::Slow(d) => format!("slow {d:?}"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct FaultConfig {
    /// Probability in [0, 1] that a request gets a fault.
    pub rate: f64,
    /// Seed of the RNG choosing which requests fail and how (runs are repeatable up to
    /// the order in which concurrent requests arrive).
    pub seed: u64,
    /// The faults to choose from, uniformly.
    pub faults: Vec<Fault>,
}

impl FaultConfig {
    /// 429, 500, 503, resets before and after forwarding, and answers `slow` late.
    pub fn standard(rate: f64, seed: u64, slow: Duration) -> FaultConfig {
        let mut config = FaultConfig::failing(rate, seed);
        config.faults.push(Fault::Slow(slow));
        config
    }

    /// 429, 500, 503 and resets before and after forwarding: every fault that fails a
    /// call, none that only delays it.
    pub fn failing(rate: f64, seed: u64) -> FaultConfig {
        FaultConfig {
            rate,
            seed,
            faults: vec![
                Fault::Status(429),
                Fault::Status(500),
                Fault::Status(503),
                Fault::ResetBeforeForward,
                Fault::ResetAfterForward,
            ],
        }
    }
}

/// What the proxy did so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub requests: u64,
    /// Requests the upstream received (including slow and reset-after ones).
    pub forwarded: u64,
    /// Injected faults by [`Fault::label`].
    pub injected: BTreeMap<String, u64>,
    /// Requests the upstream could not be reached for (answered 502).
    pub upstream_errors: u64,
}

impl FaultStats {
    pub fn injected_total(&self) -> u64 {
        self.injected.values().sum()
    }
}

struct State {
    upstream: String,
    config: FaultConfig,
    rng: Mutex<fastrand::Rng>,
    stats: Mutex<FaultStats>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl FaultProxy {
    /// Listens on `addr` (port 0 picks a free one) and forwards to `upstream`
    /// (`http://host:port`, no path).
    pub async fn start(
        addr: SocketAddr,
        upstream: &str,
        config: FaultConfig,
    ) -> io::Result<FaultProxy> {
        if !(0.0..=1.0).contains(&config.rate) || (config.rate > 0.0 && config.faults.is_empty()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "fault rate must be in [0, 1] with at least one fault",
            ));
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_string(),
            rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
            config,
            stats: Mutex::new(FaultStats::default()),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let (shutdown, stop) = watch::channel(false);
        tokio::spawn(accept_loop(listener, state.clone(), stop));
        Ok(FaultProxy {
            addr,
            state,
            shutdown,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> FaultStats {
        lock(&self.state.stats).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        // A connection the proxy closes is reset (RST), not closed gracefully.
        let _ = stream.set_zero_linger();
        let state = state.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { handle(&state, request).await }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stop.changed() => {}
            }
        });
    }
}

/// `Err` makes hyper drop the connection without an answer: the injected reset.
async fn handle(state: &State, request: Request<Incoming>) -> io::Result<Response<Full<Bytes>>> {
    let fault = {
        let mut rng = lock(&state.rng);
        let faulty = state.config.rate > 0.0 && rng.f64() < state.config.rate;
        faulty.then(|| state.config.faults[rng.usize(..state.config.faults.len())])
    };
    {
        let mut stats = lock(&state.stats);
        stats.requests += 1;
        if let Some(fault) = &fault {
            *stats.injected.entry(fault.label()).or_default() += 1;
        }
    }
    let reset = || io::Error::new(io::ErrorKind::ConnectionReset, "injected reset");
    match fault {
        Some(Fault::Status(status)) => Ok(error_response(status)),
        Some(Fault::ResetBeforeForward) => Err(reset()),
        Some(Fault::ResetAfterForward) => {
            let _ = forward(state, request).await;
            Err(reset())
        }
        Some(Fault::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            Ok(forward(state, request).await)
        }
        None => Ok(forward(state, request).await),
    }
}

async fn forward(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return plain(400, &format!("fault proxy: reading the request: {e}")),
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: Uri = match format!("{}{path}", state.upstream).parse() {
        Ok(uri) => uri,
        Err(e) => return plain(400, &format!("fault proxy: bad path: {e}")),
    };
    let mut upstream = Request::builder().method(parts.method).uri(uri);
    for (name, value) in &parts.headers {
        upstream = upstream.header(name, value);
    }
    let upstream = match upstream.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => return plain(400, &format!("fault proxy: {e}")),
    };
    lock(&state.stats).forwarded += 1;
    let response = match state.client.request(upstream).await {
        Ok(r) => r,
        Err(e) => {
            lock(&state.stats).upstream_errors += 1;
            return plain(502, &format!("fault proxy: upstream: {e}"));
        }
    };
    let (parts, body) = response.into_parts();
    match body.collect().await {
        Ok(collected) => Response::from_parts(parts, Full::new(collected.to_bytes())),
        Err(e) => {
            lock(&state.stats).upstream_errors += 1;
            plain(502, &format!("fault proxy: upstream body: {e}"))
        }
    }
}

/// An error answer both the AWS SDKs and OpenSearch clients understand.
fn error_response(status: u16) -> Response<Full<Bytes>> {
    let (aws_type, os_type) = match status {
        429 => ("ThrottlingException", "es_rejected_execution_exception"),
        503 => ("ServiceUnavailableException", "unavailable"),
        _ => ("InternalFailureException", "internal_server_error"),
    };
    let body = serde_json::json!({
        "message": format!("injected {status}"),
        "error": {"type": os_type, "reason": format!("injected {status}")},
        "status": status,
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-amzn-ErrorType", aws_type)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| plain(500, "injected"))
}

fn plain(status: u16, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message.to_string())));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct() {
        let faults = FaultConfig::standard(0.5, 1, Duration::from_millis(5)).faults;
        let labels: std::collections::HashSet<String> = faults.iter().map(Fault::label).collect();
        assert_eq!(labels.len(), faults.len());
    }

    #[tokio::test]
    async fn bad_rates_are_refused() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let config = FaultConfig {
            rate: 1.5,
            seed: 1,
            faults: vec![Fault::Status(500)],
        };
        assert!(FaultProxy::start(any, "http://127.0.0.1:1", config)
            .await
            .is_err());
        let config = FaultConfig {
            rate: 0.5,
            seed: 1,
            faults: vec![],
        };
        assert!(FaultProxy::start(any, "http://127.0.0.1:1", config)
            .await
            .is_err());
    }
}
