//! The agent against the real local stack: its readings go through the local API Gateway
//! emulator to the functions under `cargo lambda watch`, which index them into
//! osmem-server. Outages, `kill -9` while queueing and while draining, and bad source
//! lines: every good reading is indexed exactly once, nothing else is.

use integration_tests::{
    eventually, free_port, sensorbox_queue_depth, start_watch, wait_for_gasdetector, ChildGuard,
    Peers, WAIT,
};
use local_aws::{Gateway, GatewayConfig};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const AGENT: &str = env!("CARGO_BIN_EXE_sensorbox");

/// A config for group `group` sending to `port`, reading lines from a shell `script`.
/// `request_timeout_s = 30`: a request whose invocation `cargo lambda watch` lost when the
/// previous agent was killed mid-request is given up and resent after 30 s (a debug build
/// stores a 500-reading batch in a few seconds), well inside the 300 s the drain may take.
fn write_config(dir: &Path, name: &str, port: u16, group: &str, script: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let command = serde_json::to_string(&["sh", "-c", script]).expect("json");
    let text = format!(
        r#"api_url = "http://127.0.0.1:{port}"
groupid = "{group}"
clock = "system"
request_timeout_s = 30
[queue]
path = "{queue}"
[[sensor]]
route = "gasdetector"
interval_s = 3600
source = {{ kind = "command", command = {command} }}
"#,
        queue = dir.join(format!("{name}.db")).display(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn start_agent(config: &Path) -> ChildGuard {
    ChildGuard::spawn(
        "sensorbox",
        Command::new(AGENT)
            .args(["--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null()),
    )
}

fn queue_depth(config: &Path) -> Option<u64> {
    sensorbox_queue_depth(Path::new(AGENT), config)
}

fn lines(count: usize) -> String {
    format!(
        "i=0; while [ $i -lt {count} ]; do echo \"{{\\\"no2\\\": $i}}\"; i=$((i+1)); done; exec sleep 3600"
    )
}

/// Waits until `n` readings of `group` are searchable and the agent's queue is empty.
async fn indexed_and_drained(
    agent: &mut ChildGuard,
    peers: &Peers,
    group: &str,
    n: u64,
    config: &Path,
) {
    // Generous: after a kill -9 mid-request, `cargo lambda watch` can lose an invocation
    // or two, each costing the box one request timeout (30 s) before it resends.
    eventually(
        &format!("{n} readings indexed"),
        Duration::from_secs(300),
        || {
            agent.assert_running();
            let c = peers
                .opensearch
                .count("gasdetect", json!({"term": {"groupid": group}}));
            async move { (c.await >= n).then_some(()) }
        },
    )
    .await;
    eventually("the queue to empty", WAIT, || {
        let depth = queue_depth(config);
        async move { (depth == Some(0)).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_is_indexed_exactly_once_through_outages_and_kill_9() {
    let peers = Peers::start().await;
    let (_watch, watch_port) = start_watch(&peers.env(), &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let os = &peers.opensearch;
    let count = |group: String| async move {
        os.count("gasdetect", json!({"term": {"groupid": group}}))
            .await
    };

    // The gateway's port is chosen now and opened later: until then the box is offline.
    let gateway_port = free_port();
    let run = fastrand::u32(..);
    let group = format!("sb-{run}");
    let config = write_config(dir.path(), "outage", gateway_port, &group, &lines(300));

    // Offline: every reading is queued, none is lost.
    let mut agent = start_agent(&config);
    eventually("300 readings queued while offline", WAIT, || {
        agent.assert_running();
        let depth = queue_depth(&config);
        async move { (depth == Some(300)).then_some(()) }
    })
    .await;
    drop(agent); // kill -9 (the guard SIGKILLs the agent's process group)

    // Back online; the restarted agent reads 300 more. Kill it again mid-drain.
    let _gateway = Gateway::start(
        ([127, 0, 0, 1], gateway_port).into(),
        GatewayConfig::sensors(format!("http://127.0.0.1:{watch_port}")),
    )
    .await
    .expect("gateway");
    wait_for_gasdetector(gateway_port).await;
    let agent = start_agent(&config);
    eventually("the drain to start", Duration::from_secs(120), || {
        let c = count(group.clone());
        async move { (c.await > 0).then_some(()) }
    })
    .await;
    drop(agent);

    // A third start drains the rest (and reads 300 more).
    let mut agent = start_agent(&config);
    indexed_and_drained(&mut agent, &peers, &group, 900, &config).await;
    assert_eq!(count(group.clone()).await, 900, "each reading exactly once");

    // Bad lines: named, dropped, never queued; the agent keeps going.
    let bad_group = format!("sb-bad-{run}");
    let script = "echo 'not json'; echo '[1, 2]'; echo '{\"no2\": \"high\"}'; \
                  echo '{\"n02\": 5}'; echo '{\"pm25\": 5}'; echo '{\"no2\": 1}'; \
                  echo '{\"no2\": 2}'; exec sleep 3600";
    let bad_config = write_config(dir.path(), "bad", gateway_port, &bad_group, script);
    let mut bad_agent = start_agent(&bad_config);
    indexed_and_drained(&mut bad_agent, &peers, &bad_group, 2, &bad_config).await;
    bad_agent.assert_running();
    assert_eq!(count(bad_group).await, 2, "only the good lines");
    let queue = Command::new(AGENT)
        .args(["--config"])
        .arg(&bad_config)
        .arg("queue")
        .output()
        .expect("queue");
    let text = String::from_utf8_lossy(&queue.stdout);
    assert!(text.contains("dead letters 0"), "{text}");
}

#[test]
fn check_config_names_the_bad_key_and_a_corrupt_queue_fails_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "c", 1, "g1", "true");
    let ok = Command::new(AGENT)
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .output()
        .expect("run");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(
        &config,
        text.replace("interval_s = 3600", "interval_s = -4"),
    )
    .expect("write");
    let bad = Command::new(AGENT)
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("sensor.0.interval_s") || stderr.contains("sensor[0].interval_s"),
        "{stderr}"
    );

    std::fs::write(&config, text).expect("write");
    std::fs::write(dir.path().join("c.db"), vec![0x5a_u8; 4096]).expect("corrupt");
    let corrupt = Command::new(AGENT)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert!(!corrupt.status.success());
    let stderr = String::from_utf8_lossy(&corrupt.stderr);
    assert!(stderr.contains("not a usable SQLite file"), "{stderr}");
}
