//! Cold-start and warm-path harness for the sensor functions.
//!
//! For every function it starts the release bootstrap as a fresh process against its own
//! local Lambda Runtime API, many times, and measures process start to the first
//! `GET /invocation/next` (init), process start to the `POST .../response` of one real
//! invoke (first response: validation, an IoT publish to a local stub, a `_bulk` into a
//! local OpenSearch-compatible server), and the peak RSS (`VmHWM`) after that response.
//! Every start sends a reading no earlier start sent, so each one writes a new document.
//! The cold starts run twice: once indexing into osmem-server (a real write, whose server
//! time the function waits on), once against an in-process `_bulk` stub that answers at
//! once (the function's own cost, as the IoT stub already is for publishing).
//! The same run measures a hello-world `lambda_runtime` binary, `hello-io` (the smallest
//! function sending the same two HTTP requests) and the Python baseline, and
//! prints (and writes) a table of medians and ratios with the targets checked.
//!
//! `--warm N` then keeps one process of each warm target alive behind a small API Gateway
//! stand-in (HTTP -> REST v1 proxy event -> Runtime API) and drives N requests through it.
//!
//! Usually run by `cargo xtask bench-cold`, which builds everything and passes the flags.
//!
//! Modules: [`cli`] (the flags), [`server`] (HTTP plumbing), [`runtime_api`] and
//! [`function`] (a function process and its Runtime API), [`iot_stub`] and [`opensearch`]
//! (its peers), [`cold`] and [`warm`] (the two measurements; [`gateway`] is the warm
//! path's API Gateway stand-in), [`stats`] and [`report`] (the tables); this file runs
//! them in order.

mod cli;
mod cold;
mod function;
mod gateway;
mod iot_stub;
mod opensearch;
mod report;
mod runtime_api;
mod server;
mod stats;
mod warm;

use cli::{parse_args, Options};
use cold::cold_starts;
use iot_stub::iot_stub;
use opensearch::{opensearch_stub, start_osmem};
use report::{cold_report, warm_report};
use server::serve;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use warm::warm_run;

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> std::process::ExitCode {
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("coldstart: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coldstart: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(o: Options) -> Result {
    std::fs::create_dir_all(&o.logs).map_err(|e| format!("{}: {e}", o.logs.display()))?;
    // Local peers: the IoT data-plane and OpenSearch stubs (inside this process) and a
    // real OpenSearch-compatible server.
    let publishes = Arc::new(AtomicU64::new(0));
    let counter = publishes.clone();
    let (iot_port, _iot) = serve(move |req| iot_stub(counter.clone(), req))
        .await
        .map_err(|e| format!("IoT stub: {e}"))?;
    let (stub_port, _opensearch_stub) = serve(opensearch_stub)
        .await
        .map_err(|e| format!("OpenSearch stub: {e}"))?;
    let (_osmem, opensearch) = match (&o.opensearch, &o.osmem) {
        (Some(url), _) => (None, url.clone()),
        (None, Some(bin)) => {
            let (child, url) = start_osmem(bin).await?;
            (Some(child), url)
        }
        (None, None) => return Err("give --osmem PATH or --opensearch URL".into()),
    };
    let mut env = vec![
        (
            "AWS_ENDPOINT_URL_IOT_DATA_PLANE".to_string(),
            format!("http://127.0.0.1:{iot_port}"),
        ),
        ("OPENSEARCH_URL".to_string(), opensearch.clone()),
        ("OPENSEARCH_AUTH".to_string(), "none".to_string()),
        // The events post to the shared-key route (`/gasdetector`), as every earlier run
        // did, so the figures stay comparable; deployed stacks turn it off.
        ("LEGACY_KEY_ROUTES".to_string(), "true".to_string()),
        // The registry (DescribeThing) for the `/things/{thing}/...` targets: the same stub.
        (
            "AWS_ENDPOINT_URL_IOT".to_string(),
            format!("http://127.0.0.1:{iot_port}"),
        ),
    ];
    env.extend(o.env.iter().cloned());
    eprintln!("IoT stub on 127.0.0.1:{iot_port}, OpenSearch at {opensearch}");

    let real = cold_starts(&o, &env).await?;
    let mut stub_env = env.clone();
    stub_env.retain(|(k, _)| k != "OPENSEARCH_URL");
    stub_env.push((
        "OPENSEARCH_URL".to_string(),
        format!("http://127.0.0.1:{stub_port}"),
    ));
    let stubbed = cold_starts(&o, &stub_env).await?;

    let mut report = String::new();
    cold_report(&o, &real, &stubbed, &mut report);

    if o.warm > 0 {
        let mut rows = Vec::new();
        let mut lookups = Vec::new();
        for name in &o.warm_fns {
            let Some(t) = o.targets.iter().find(|t| &t.name == name) else {
                return Err(format!("--warm-fn {name}: no --fn with that name"));
            };
            let before = iot_stub::REGISTRY_LOOKUPS.load(Ordering::Relaxed);
            let r = warm_run(t, &env, &o.logs, o.warm, o.concurrency).await?;
            let asked = iot_stub::REGISTRY_LOOKUPS.load(Ordering::Relaxed) - before;
            if asked > 0 {
                lookups.push((name.clone(), asked, r.requests));
            }
            rows.push((name.clone(), r));
        }
        warm_report(&o, &rows, &mut report);
        for (name, asked, requests) in lookups {
            // The cold invoke and the warm-up are one instance's requests too.
            let total = requests + 51;
            let _ = writeln!(
                report,
                "\n{name}: {asked} registry lookups for {total} requests of one warm instance (cache hit rate {:.2} %).",
                100.0 * (1.0 - asked as f64 / total as f64)
            );
        }
    }
    let _ = writeln!(
        report,
        "\nIoT publishes received by the stub: {}. Registry lookups (DescribeThing) it answered: {}.",
        publishes.load(Ordering::Relaxed),
        iot_stub::REGISTRY_LOOKUPS.load(Ordering::Relaxed)
    );
    print!("{report}");
    if let Some(out) = &o.out {
        if let Some(dir) = out.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(out, &report).map_err(|e| format!("{}: {e}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
