//! The warm path: one process of a target kept alive behind the gateway stand-in, driven
//! with N requests over keep-alive connections.

use crate::cli::Target;
use crate::function::{check_response, peak_rss_kib, Function};
use crate::gateway::gateway;
use crate::server::serve;
use crate::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

pub struct WarmResult {
    pub requests: usize,
    pub ok: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    pub rss_mib: f64,
}

/// A reading the gasdetector (and the Python baseline) accept, unique per `i` (so each
/// request stores a new document), tripping the no2 rule (so each publishes a warning).
fn warm_body(i: usize) -> String {
    format!(
        r#"{{"groupid": "2", "gps": "37.61002501514269, 126.99636868892937",
 "co": {{"sensorid": "w{i}", "sensortype": "8", "value": "26.20", "createdtime": "2021-09-03 18:14:49"}},
 "no2": {{"sensorid": "w{i}", "sensortype": "9", "value": "95.00", "createdtime": "2021-09-03 18:14:49"}},
 "c2h5oh": {{"sensorid": "w{i}", "sensortype": "27", "value": "26.11", "createdtime": "2021-09-03 18:14:49"}},
 "h2": {{"sensorid": "w{i}", "sensortype": "30", "value": "400", "createdtime": "2021-09-03 18:14:49"}}}}"#
    )
}

pub async fn warm_run(
    t: &Target,
    env: &[(String, String)],
    logs: &Path,
    requests: usize,
    concurrency: usize,
) -> Result<WarmResult> {
    let mut f = Function::start(t, env, logs, 64).await?;
    // The cold invoke, not timed here.
    let first = f.invoke(t.event.clone(), Duration::from_secs(30)).await?;
    check_response(&first)?;
    let jobs = f.jobs.clone().ok_or("stopped")?;
    let seq = Arc::new(AtomicUsize::new(0));
    let (port, _gateway) = serve(move |req| gateway(jobs.clone(), seq.clone(), req))
        .await
        .map_err(|e| format!("gateway: {e}"))?;
    // A `-thing` target posts as box `box-2` (group "2", warm_body's) to its own route, so
    // the registry is asked once per cache TTL, not per request.
    let path = if t.name == "python" {
        "/gasdetector".to_string()
    } else if let Some(sensor) = t.name.strip_suffix("-thing") {
        format!("/things/box-2/{sensor}")
    } else {
        format!("/{}", t.name)
    };
    let warmup = 50.min(requests);
    let next = Arc::new(AtomicUsize::new(0));
    // Warm-up (connections, caches), then the timed phase.
    let _ = drive(port, &path, &t.name, next.clone(), warmup, 1).await?;
    // The warm-up's last `fetch_add` went past its end: restart the count exactly there.
    next.store(warmup, Ordering::Relaxed);
    let started = Instant::now();
    let (ok, mut latencies) =
        drive(port, &path, &t.name, next, warmup + requests, concurrency).await?;
    let elapsed = started.elapsed();
    let rss = peak_rss_kib(f.pid).unwrap_or(0);
    f.stop().await;
    latencies.sort();
    Ok(WarmResult {
        requests: latencies.len().min(requests),
        ok,
        elapsed,
        latencies,
        rss_mib: rss as f64 / 1024.0,
    })
}

/// `concurrency` keep-alive connections sending POSTs until `next` reaches `until`.
async fn drive(
    port: u16,
    path: &str,
    name: &str,
    next: Arc<AtomicUsize>,
    until: usize,
    concurrency: usize,
) -> Result<(usize, Vec<Duration>)> {
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        let path = path.to_string();
        let salt = name.to_string();
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let mut ok = 0usize;
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= until {
                    break;
                }
                let body =
                    warm_body(i).replace("\"w", &format!("\"{salt}-{}-", std::process::id()));
                let request = Request::post(path.as_str())
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| e.to_string())?;
                let t0 = Instant::now();
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                let _ = response.into_body().collect().await;
                latencies.push(t0.elapsed());
                if status == StatusCode::OK {
                    ok += 1;
                }
            }
            Ok::<_, String>((ok, latencies))
        }));
    }
    let mut ok = 0;
    let mut latencies = Vec::new();
    for task in tasks {
        let (o, l) = task.await.map_err(|e| e.to_string())??;
        ok += o;
        latencies.extend(l);
    }
    Ok((ok, latencies))
}
