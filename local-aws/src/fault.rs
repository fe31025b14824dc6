//! A fault-injecting HTTP reverse proxy for reliability tests. It forwards every request
//! to an upstream (the IoT data-plane endpoint, OpenSearch, ...) and, at a configured rate
//! drawn from a seeded RNG, instead answers 429/500/503, resets the connection (before
//! or after the upstream did the work), or answers late (past the client's timeout).
//!
//! Error answers carry both AWS shapes: an `x-amzn-ErrorType` header with a JSON
//! `message` (what the AWS SDKs parse) and an OpenSearch-style `error.type`/`status`.

use crate::http::{self, HttpResponse, ProxyClient, Server};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Request;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    client: ProxyClient,
}

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    server: Server,
    state: Arc<State>,
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
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_string(),
            rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
            config,
            stats: Mutex::new(FaultStats::default()),
            client: http::proxy_client(),
        });
        let handler_state = state.clone();
        let server = http::serve_or_reset(addr, move |request| {
            let state = handler_state.clone();
            async move { handle(&state, request).await }
        })
        .await?;
        Ok(FaultProxy { server, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn stats(&self) -> FaultStats {
        lock(&self.state.stats).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `Err` makes hyper drop the connection without an answer: the injected reset.
async fn handle(state: &State, request: Request<Incoming>) -> io::Result<HttpResponse> {
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

async fn forward(state: &State, request: Request<Incoming>) -> HttpResponse {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return http::plain(400, &format!("fault proxy: reading the request: {e}")),
    };
    lock(&state.stats).forwarded += 1;
    match http::forward(&state.client, &state.upstream, &parts, body).await {
        Ok(response) => response,
        Err(e) => {
            if e.status == 502 {
                lock(&state.stats).upstream_errors += 1;
            }
            e.response("fault proxy")
        }
    }
}

/// An error answer both the AWS SDKs and OpenSearch clients understand.
fn error_response(status: u16) -> HttpResponse {
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
    http::json(status, &body, &[("x-amzn-ErrorType", aws_type)])
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
