//! `cargo run --release -p boxload -- [--agent target/release/sensorbox] [--readings 10000]
//! [--release-functions]`: the box agent's figures for BENCHMARKS.md, never a timed test.
//!
//! 1. Offline (the API's port closed), a command source prints N lines as fast as it can:
//!    time until all N are committed to the queue = durable enqueue rate.
//! 2. The local gateway opens (functions under `cargo lambda watch`, osmem-server): time
//!    until the queue is empty = drain rate of an N-reading backlog.
//! 3. Peak RSS (VmHWM) over both phases, and RSS idle afterwards.

use integration_tests::{
    eventually, free_port, sensorbox_queue_depth, start_watch, wait_for_gasdetector, ChildGuard,
    Peers,
};
use localstack::{Gateway, GatewayConfig};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn proc_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = integration_tests::root();
    let agent = arg_value(&args, "--agent")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/sensorbox"));
    assert!(
        agent.exists(),
        "no agent at {} (cargo build --release -p sensorbox)",
        agent.display()
    );
    let readings: u64 = arg_value(&args, "--readings")
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let release = args.iter().any(|a| a == "--release-functions");

    let peers = Peers::start().await;
    let watch_args: Vec<&std::ffi::OsStr> = if release {
        vec![std::ffi::OsStr::new("--release")]
    } else {
        Vec::new()
    };
    let (_watch, watch_port) = start_watch(&peers.env(), &watch_args).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let group = format!("bench-{}", fastrand::u32(..));
    let script = format!(
        "awk 'BEGIN {{ for (i = 0; i < {readings}; i++) printf \"{{\\\"no2\\\": %d, \\\"co\\\": %d}}\\n\", i % 80, i % 40 }}'; exec sleep 3600"
    );
    let command = format!("[\"sh\", \"-c\", {script:?}]");
    let config = dir.path().join("box.toml");
    std::fs::write(
        &config,
        format!(
            "api_url = \"http://127.0.0.1:{port}\"\ngroupid = \"{group}\"\nclock = \"system\"\nrequest_timeout_s = 120\n[queue]\npath = \"{}\"\n[[sensor]]\nroute = \"gasdetector\"\ninterval_s = 3600\nsource = {{ kind = \"command\", command = {command} }}\n",
            dir.path().join("q.db").display()
        ),
    )
    .expect("config");

    let started = Instant::now();
    let mut child = ChildGuard::spawn(
        "sensorbox",
        Command::new(&agent)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stderr(Stdio::null()),
    );
    let pid = child.child.id();
    eventually("the backlog to be queued", Duration::from_secs(600), || {
        child.assert_running();
        let d = sensorbox_queue_depth(&agent, &config);
        async move { (d == Some(readings)).then_some(()) }
    })
    .await;
    let enqueue = started.elapsed();
    let rss_queued = proc_kib(pid, "VmRSS:");

    let _gateway = Gateway::start(
        ([127, 0, 0, 1], port).into(),
        GatewayConfig::sensors(format!("http://127.0.0.1:{watch_port}")),
    )
    .await
    .expect("gateway");
    // The first invoke may build the function: wait for it outside the measurement.
    wait_for_gasdetector(port).await;
    let drain_started = Instant::now();
    eventually("the backlog to drain", Duration::from_secs(600), || {
        child.assert_running();
        let d = sensorbox_queue_depth(&agent, &config);
        async move { (d == Some(0)).then_some(()) }
    })
    .await;
    let drain = drain_started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = proc_kib(pid, "VmRSS:");
    let peak = proc_kib(pid, "VmHWM:");
    let indexed = peers
        .opensearch
        .count("gasdetect", serde_json::json!({"term": {"groupid": group}}))
        .await;

    let rate = |d: Duration| readings as f64 / d.as_secs_f64();
    println!("| figure | value |\n|---|---:|");
    println!("| readings | {readings} |");
    println!(
        "| durable enqueue (start to all committed) | {:.0} readings/s ({:.2} s) |",
        rate(enqueue),
        enqueue.as_secs_f64()
    );
    println!(
        "| drain to the local stack ({} functions) | {:.0} readings/s ({:.2} s) |",
        if release { "release" } else { "debug" },
        rate(drain),
        drain.as_secs_f64()
    );
    println!("| indexed afterwards | {indexed} |");
    println!(
        "| RSS with the backlog queued | {:.1} MiB |",
        rss_queued as f64 / 1024.0
    );
    println!(
        "| RSS idle after the drain | {:.1} MiB |",
        rss_idle as f64 / 1024.0
    );
    println!("| peak RSS (VmHWM) | {:.1} MiB |", peak as f64 / 1024.0);
}
