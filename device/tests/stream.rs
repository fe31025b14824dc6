//! `transport = "stream"` with the real `sensorbox` binary against the local stack's stream
//! path: a backlog of queued readings goes out as a few batches on the Basic Ingest topic
//! (mutual TLS on the broker's TLS port), the local stream rule puts them into the Kinesis
//! emulator, the event source mapping hands them to the function, and every reading leaves
//! the queue on its batch's PUBACK.

use integration_tests::{eventually, sensorbox_queue_depth, ChildGuard, DeviceStack};
use local_aws::{Certs, TlsListener};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const AGENT: &str = env!("CARGO_BIN_EXE_sensorbox");
const BACKLOG: u64 = 30;

/// A box config: `transport`, its API at `api`, and a command source printing `lines`.
fn config(
    dir: &Path,
    thing: &str,
    group: &str,
    transport: &str,
    api: &str,
    mqtt: &str,
    script: &str,
) -> String {
    let command = serde_json::to_string(&["sh", "-c", script]).expect("json");
    format!(
        r#"api_url = "{api}"
groupid = "{group}"
thing_name = "{thing}"
clock = "system"
transport = "{transport}"
[queue]
path = "{queue}"
[mqtt]
endpoint = "localhost"
keep_alive_s = 5
{mqtt}
[[sensor]]
route = "gasdetector"
interval_s = 3600
source = {{ kind = "command", command = {command} }}
"#,
        queue = dir.join(format!("{thing}.db")).display(),
    )
}

fn start_agent(config: &Path, log: &Path) -> ChildGuard {
    let log = std::fs::File::create(log).expect("log file");
    ChildGuard::spawn(
        "sensorbox",
        Command::new(AGENT)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_goes_out_in_a_few_basic_ingest_batches_and_leaves_the_queue_on_puback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::ensure(&dir.path().join("certs")).expect("local CA");
    let any = "127.0.0.1:0".parse().expect("addr");
    let stack = DeviceStack::start_streaming(Some(TlsListener::from_certs(any, &certs)), &[]).await;
    let stream = stack.stream.as_ref().expect("the stream path");
    let run = fastrand::u32(..);
    let (thing, group) = (format!("st-{run}"), format!("stg-{run}"));
    stack.registry.register_box(&thing, &group).await;
    let identity = certs.device(&thing).expect("device certificate");
    let mqtt = format!(
        "port = {port}\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"",
        port = stack.broker.tls_addr().expect("TLS listener").port(),
        ca = certs.ca().display(),
        cert = identity.cert.display(),
        key = identity.key.display(),
    );
    let path = dir.path().join("box.toml");

    // An outage first: over HTTPS to a port nothing listens on, thirty readings queue up.
    let lines = format!(
        "for s in $(seq 10 {}); do echo \"{{\\\"no2\\\": {{\\\"value\\\": 20, \\\"createdtime\\\": \\\"2026-12-04 10:00:$s\\\"}}}}\"; done; exec sleep 3600",
        9 + BACKLOG
    );
    std::fs::write(
        &path,
        config(
            dir.path(),
            &thing,
            &group,
            "https",
            "http://127.0.0.1:9",
            &mqtt,
            &lines,
        ),
    )
    .expect("config");
    let agent = start_agent(&path, &dir.path().join("outage.log"));
    eventually("the backlog queued", Duration::from_secs(60), || {
        let depth = sensorbox_queue_depth(Path::new(AGENT), &path);
        async move { (depth == Some(BACKLOG)).then_some(()) }
    })
    .await;
    drop(agent);

    // Then the stream: the same queue drains as batches on the Basic Ingest topic.
    let before = stream.mapping("gasdetector").counts();
    std::fs::write(
        &path,
        config(
            dir.path(),
            &thing,
            &group,
            "stream",
            &stack.gateway.url(),
            &mqtt,
            "exec sleep 3600",
        ),
    )
    .expect("config");
    let log = dir.path().join("stream.log");
    let mut agent = start_agent(&path, &log);
    let indexed = eventually("the backlog indexed", Duration::from_secs(90), || {
        agent.assert_running();
        let count = stack
            .opensearch
            .count("gasdetect", json!({"term": {"groupid": group}}));
        async move { Some(count.await).filter(|n| *n >= BACKLOG) }
    })
    .await;
    assert_eq!(indexed, BACKLOG);
    eventually("the queue to empty", Duration::from_secs(30), || {
        let depth = sensorbox_queue_depth(Path::new(AGENT), &path);
        async move { (depth == Some(0)).then_some(()) }
    })
    .await;
    // Each record is one MQTT message of at most 5 KB: these one-measure readings are
    // about 150 bytes, so the thirty fit in one or two messages, not thirty.
    let after = stream.mapping("gasdetector").counts();
    let messages = after.records_delivered - before.records_delivered;
    assert!(
        (1..=3).contains(&messages),
        "{messages} messages for {BACKLOG} readings: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
