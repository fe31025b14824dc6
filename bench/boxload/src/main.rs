//! `cargo run --release -p boxload -- [--agent target/release/sensorbox] [--readings 10000]
//! [--release-functions]`: the box agent's figures for BENCHMARKS.md, never a timed test.
//!
//! 1. Offline (the API's port closed), a command source prints N lines as fast as it can:
//!    time until all N are committed to the queue = durable enqueue rate.
//! 2. The local gateway opens (functions under `cargo lambda watch`, osmem-server): time
//!    until the queue is empty = drain rate of an N-reading backlog.
//! 3. Peak RSS (VmHWM) over both phases, and RSS idle afterwards, with the box's MQTT link
//!    up (mutual TLS to a local Mosquitto, subscribed to its warnings) as on a real box.

use integration_tests::{
    eventually, free_port, sensorbox_queue_depth, start_watch, wait_for_gasdetector, ChildGuard,
    Peers,
};
use local_aws::{Broker, BrokerConfig, Certs, Gateway, GatewayConfig, TlsListener};
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
    let certs = Certs::ensure(&dir.path().join("certs")).expect("local CA");
    let device = certs.device("bench-box").expect("device certificate");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mqtt = Broker::start_with(BrokerConfig {
        plain: any,
        tls: Some(TlsListener::from_certs(any, &certs)),
        dir: None,
    })
    .await
    .expect("mosquitto");
    let mqtt_section = format!(
        "[mqtt]\nendpoint = \"localhost\"\nport = {}\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        mqtt.tls_addr().expect("TLS listener").port(),
        certs.ca().display(),
        device.cert.display(),
        device.key.display()
    );
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
            "api_url = \"http://127.0.0.1:{port}\"\ngroupid = \"{group}\"\nthing_name = \"bench-box\"\nclock = \"system\"\nrequest_timeout_s = 120\n[queue]\npath = \"{}\"\n{mqtt_section}[[sensor]]\nroute = \"gasdetector\"\ninterval_s = 3600\nsource = {{ kind = \"command\", command = {command} }}\n",
            dir.path().join("q.db").display()
        ),
    )
    .expect("config");

    let agent_log = dir.path().join("agent.log");
    let started = Instant::now();
    let mut child = ChildGuard::spawn(
        "sensorbox",
        Command::new(&agent)
            .arg("--config")
            .arg(&config)
            // One `sent ... ms=` line per request: the time spent waiting for the API.
            .env("RUST_LOG", "sensorbox::sender=info,warn")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&agent_log).expect("agent log")),
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
    // Each `sent` line ends in `ms=<request time>`: their sum is the drain's time in the
    // API (gateway, function, osmem-server); the rest is the agent's own work.
    let log = std::fs::read_to_string(&agent_log).unwrap_or_default();
    let (requests, waited_ms) = log
        .lines()
        .filter(|l| l.contains(" sent "))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("ms="))
                .and_then(|ms| ms.parse::<f64>().ok())
        })
        .fold((0u32, 0f64), |(n, sum), ms| (n + 1, sum + ms));
    println!(
        "| requests / time waiting for the API | {requests} / {:.2} s ({:.0} % of the drain) |",
        waited_ms / 1000.0,
        100.0 * waited_ms / 1000.0 / drain.as_secs_f64()
    );
    let status = Command::new(&agent)
        .arg("--config")
        .arg(&config)
        .arg("status")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let link = status
        .lines()
        .find(|l| l.starts_with("mqtt"))
        .unwrap_or("mqtt (no state)");
    println!("| MQTT link during the run | {} |", link.trim());
}
