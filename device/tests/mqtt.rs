//! The agent's MQTT side against the local stack speaking as IoT Core does: Mosquitto with
//! a mutual-TLS listener (certificates from the local CA), the emulated IoT rules (Last
//! Will and connect report into the thing's shadow, data topics invoking the functions)
//! and the functions under `cargo lambda watch` publishing warnings through the local IoT
//! endpoint.

use integration_tests::{eventually, ChildGuard, DeviceStack, Moto, OpenSearch};
use local_aws::{Broker, Certs, Gateway, IotEndpoint, IotRules, TlsListener};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_sensorbox");
const KEEP_ALIVE_S: u64 = 2;

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// Everything a box talks to, on free ports.
struct Stack {
    certs: Certs,
    broker: Broker,
    iot: IotEndpoint,
    opensearch: OpenSearch,
    _rules: IotRules,
    gateway: Gateway,
    /// The registry the functions bind each box's readings to its group with.
    registry: Moto,
    _watch: ChildGuard,
}

async fn start_stack(dir: &Path) -> Stack {
    let certs = Certs::ensure(&dir.join("certs")).expect("local CA");
    // One message per breaching reading: the test needs a warning at once.
    let stack = DeviceStack::start(
        Some(TlsListener::from_certs(any(), &certs)),
        &[("ALARM_MODE", "every")],
    )
    .await;
    Stack {
        certs,
        broker: stack.broker,
        iot: stack.iot,
        opensearch: stack.opensearch,
        _rules: stack.rules,
        gateway: stack.gateway,
        registry: stack.registry,
        _watch: stack.watch,
    }
}

struct Box {
    config: PathBuf,
    log: PathBuf,
    hook: PathBuf,
    go: PathBuf,
}

/// A box of `group` whose one gas reading (no2 95, above the warning threshold) is printed
/// once the file `go` exists. `mqtt` is the [mqtt] section's body.
fn write_box(dir: &Path, name: &str, stack: &Stack, group: &str, extra: &str, mqtt: &str) -> Box {
    let go = dir.join(format!("{name}.go"));
    let hook = dir.join(format!("{name}.hook.jsonl"));
    let script = format!(
        "while [ ! -f '{go}' ]; do sleep 0.05; done; echo '{{\"no2\": 95}}'; exec sleep 3600",
        go = go.display()
    );
    let command = serde_json::to_string(&["sh", "-c", &script]).expect("json");
    let hook_command =
        serde_json::to_string(&["sh", "-c", &format!("cat >> '{}'", hook.display())])
            .expect("json");
    let config = dir.join(format!("{name}.toml"));
    let text = format!(
        r#"api_url = "{api}"
groupid = "{group}"
thing_name = "{name}"
clock = "system"
request_timeout_s = 120
{extra}
[queue]
path = "{queue}"
[mqtt]
endpoint = "localhost"
keep_alive_s = {KEEP_ALIVE_S}
hook = {hook_command}
{mqtt}
[[sensor]]
route = "gasdetector"
interval_s = 3600
source = {{ kind = "command", command = {command} }}
"#,
        api = stack.gateway.url(),
        queue = dir.join(format!("{name}.db")).display(),
    );
    std::fs::write(&config, text).expect("write config");
    Box {
        config,
        log: dir.join(format!("{name}.log")),
        hook,
        go,
    }
}

fn tls_section(stack: &Stack, ca: &Path, thing: &str) -> String {
    let identity = stack.certs.device(thing).expect("device certificate");
    format!(
        "port = {port}\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"",
        port = stack.broker.tls_addr().expect("TLS listener").port(),
        ca = ca.display(),
        cert = identity.cert.display(),
        key = identity.key.display(),
    )
}

fn start_agent(the_box: &Box) -> ChildGuard {
    let log = std::fs::File::create(&the_box.log).expect("log file");
    ChildGuard::spawn(
        "sensorbox",
        Command::new(AGENT)
            .arg("--config")
            .arg(&the_box.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log),
    )
}

fn log_text(the_box: &Box) -> String {
    std::fs::read_to_string(&the_box.log).unwrap_or_default()
}

impl Stack {
    fn iot_client(&self) -> aws_sdk_iotdataplane::Client {
        integration_tests::iot_client(&self.iot.url())
    }
}

fn reported(stack: &Stack, thing: &str) -> Option<Value> {
    stack
        .iot
        .shadows()
        .document(thing, "")
        .map(|d| d["state"]["reported"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_arrive_over_mutual_tls_and_the_shadow_follows_the_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start_stack(dir.path()).await;
    let run = fastrand::u32(..);
    let group = format!("mq-{run}");
    let thing = format!("box-{run}");
    let mqtt = tls_section(&stack, &stack.certs.ca(), &thing);
    let the_box = write_box(dir.path(), &thing, &stack, &group, "", &mqtt);
    let mut agent = start_agent(&the_box);

    // Connected over mTLS: the connect report reached the shadow through the rule (the
    // subscription was requested before it, on the same connection).
    eventually(
        "the shadow to say connected",
        Duration::from_secs(30),
        || {
            agent.assert_running();
            let connected = reported(&stack, &thing).map(|r| r["connected"].clone());
            async move { (connected == Some(json!(true))).then_some(()) }
        },
    )
    .await;

    // The reading goes over HTTPS; its warning comes back over MQTT to the hook.
    std::fs::write(&the_box.go, "").expect("go");
    let warning: Value = eventually("the warning at the hook", Duration::from_secs(60), || {
        agent.assert_running();
        let text = std::fs::read_to_string(&the_box.hook).unwrap_or_default();
        let line = text
            .lines()
            .next()
            .and_then(|l| serde_json::from_str(l).ok());
        async move { line }
    })
    .await;
    assert_eq!(warning["topic"], format!("pi/{group}"), "{warning}");
    assert_eq!(warning["warning"]["groupid"], group, "{warning}");
    assert!(
        warning["warning"].to_string().contains("no2"),
        "the warning names the measure: {warning}"
    );
    let indexed = stack
        .opensearch
        .wait_count("gasdetect", json!({"term": {"groupid": group}}), 1)
        .await;
    assert_eq!(indexed, 1);

    // `sensorbox status` tells a person at the box.
    let status = Command::new(AGENT)
        .arg("--config")
        .arg(&the_box.config)
        .arg("status")
        .output()
        .expect("status");
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains("last_warning"), "{status}");
    assert!(status.contains(&format!("pi/{group}")), "{status}");
    assert!(status.contains("connected since"), "{status}");

    // kill -9: the broker publishes the Last Will, the rule marks the shadow.
    let killed = Instant::now();
    drop(agent);
    let state = eventually(
        "the shadow to say disconnected",
        Duration::from_secs(30),
        || {
            let state = reported(&stack, &thing).filter(|r| r["connected"] == json!(false));
            async move { state }
        },
    )
    .await;
    let took = killed.elapsed();
    assert!(state["lastWillAt"].as_u64().is_some(), "{state}");
    // The Last Will is due within 1.5x the keep-alive of the last packet.
    assert!(
        took < Duration::from_millis(1500 * KEEP_ALIVE_S),
        "connected: false took {took:?} (keep-alive {KEEP_ALIVE_S} s)"
    );

    // A warning published while the box is off (QoS 1, through the IoT Publish API as the
    // functions do) waits in its persistent session and reaches the hook after a restart.
    let offline = json!({"warning": "while you were away", "groupid": group});
    stack
        .iot_client()
        .publish()
        .topic(format!("pi/{group}"))
        .qos(1)
        .payload(aws_sdk_iotdataplane::primitives::Blob::new(
            offline.to_string().into_bytes(),
        ))
        .send()
        .await
        .expect("publish while offline");
    // Without `go` the restarted box takes no reading, so no fresh warning races it.
    std::fs::remove_file(&the_box.go).expect("remove go");
    let mut agent = start_agent(&the_box);
    let second: Value = eventually(
        "the offline warning at the hook",
        Duration::from_secs(30),
        || {
            agent.assert_running();
            let text = std::fs::read_to_string(&the_box.hook).unwrap_or_default();
            let line = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l["warning"]["warning"] == "while you were away");
            async move { line }
        },
    )
    .await;
    assert_eq!(second["warning"], offline, "{second}");
    eventually(
        "the shadow to say connected again",
        Duration::from_secs(30),
        || {
            let connected = reported(&stack, &thing).map(|r| r["connected"].clone());
            async move { (connected == Some(json!(true))).then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_certificate_is_a_clear_error_retried_with_backoff() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start_stack(dir.path()).await;
    let rogue = Certs::ensure(&dir.path().join("rogue")).expect("another CA");
    let run = fastrand::u32(..);

    // The box trusts another CA: the broker's certificate is refused.
    let thing = format!("wrong-ca-{run}");
    let mut mqtt = tls_section(&stack, &rogue.ca(), &thing);
    let wrong_ca = write_box(dir.path(), &thing, &stack, "wrongca", "", &mqtt);
    let mut first = start_agent(&wrong_ca);

    // The box's certificate is from another CA: the broker refuses the handshake.
    let thing = format!("wrong-cert-{run}");
    let identity = rogue.device(&thing).expect("rogue device certificate");
    mqtt = format!(
        "port = {}\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"",
        stack.broker.tls_addr().expect("TLS").port(),
        stack.certs.ca().display(),
        identity.cert.display(),
        identity.key.display()
    );
    let wrong_cert = write_box(dir.path(), &thing, &stack, "wrongcert", "", &mqtt);
    let mut second = start_agent(&wrong_cert);

    for (the_box, agent, expected) in [
        (&wrong_ca, &mut first, "certificate"),
        (&wrong_cert, &mut second, "MQTT:"),
    ] {
        let errors = eventually(
            "two failed attempts logged",
            Duration::from_secs(30),
            || {
                agent.assert_running();
                let text = log_text(the_box);
                let errors: Vec<String> = text
                    .lines()
                    .filter(|l| l.contains("MQTT:") && l.contains("ERROR"))
                    .map(str::to_owned)
                    .collect();
                async move { (errors.len() >= 2).then_some(errors) }
            },
        )
        .await;
        assert!(
            errors[0].contains(expected) && errors[0].contains("retry_in_ms"),
            "a named error and a retry: {errors:?}"
        );
        assert!(!log_text(the_box).contains("panicked"));
    }
    // The wrong CA is named as a TLS problem.
    assert!(
        log_text(&wrong_ca).contains("TLS"),
        "{}",
        log_text(&wrong_ca)
    );
    // Neither box got in: no shadow says connected.
    assert_eq!(reported(&stack, &format!("wrong-ca-{run}")), None);
    assert_eq!(reported(&stack, &format!("wrong-cert-{run}")), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_over_mqtt_reach_the_index_and_leave_the_queue_on_puback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start_stack(dir.path()).await;
    let run = fastrand::u32(..);
    let group = format!("mqdata-{run}");
    let thing = format!("mqdata-{run}");
    let mqtt = tls_section(&stack, &stack.certs.ca(), &thing);
    stack.registry.register_box(&thing, &group).await;
    // The API URL is never called with transport = "mqtt".
    let the_box = write_box(
        dir.path(),
        &thing,
        &stack,
        &group,
        "transport = \"mqtt\"",
        &mqtt,
    );
    std::fs::write(&the_box.go, "").expect("go");
    let mut agent = start_agent(&the_box);
    let indexed = eventually("the reading indexed", Duration::from_secs(60), || {
        agent.assert_running();
        let count = stack
            .opensearch
            .count("gasdetect", json!({"term": {"groupid": group}}));
        async move { Some(count.await).filter(|n| *n >= 1) }
    })
    .await;
    assert_eq!(indexed, 1);
    eventually("the queue to empty", Duration::from_secs(30), || {
        let depth = integration_tests::sensorbox_queue_depth(Path::new(AGENT), &the_box.config);
        async move { (depth == Some(0)).then_some(()) }
    })
    .await;
}

/// A box key and a certificate for it from the registry at `registry` (the local CA signs
/// the CSR, as AWS's does): the box's `[mqtt]` section and the certificate's id.
async fn enrolled(stack: &Stack, registry: &str, dir: &Path, thing: &str) -> (String, String) {
    let (key, csr) = integration_tests::box_key_and_csr(thing);
    let (id, pem) = integration_tests::certificate_from_csr(registry, &csr).await;
    let (key_path, cert_path) = (
        dir.join(format!("{thing}.key")),
        dir.join(format!("{thing}.crt")),
    );
    std::fs::write(&key_path, key.serialize_pem()).expect("key");
    std::fs::write(&cert_path, pem).expect("certificate");
    let mqtt = format!(
        "port = {port}\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"",
        port = stack.broker.tls_addr().expect("TLS listener").port(),
        ca = stack.certs.ca().display(),
        cert = cert_path.display(),
        key = key_path.display(),
    );
    (mqtt, id)
}

fn connected_at(stack: &Stack, thing: &str) -> Option<i64> {
    let reported = reported(stack, thing)?;
    (reported["connected"] == json!(true)).then(|| reported["connectedAt"].as_i64())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_box_is_refused_at_connect_and_another_box_keeps_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start_stack(dir.path()).await;
    let reload: local_aws::registry::Reload = std::sync::Arc::new(stack.broker.reloader());
    let front = local_aws::RegistryFront::start_revoking(
        any(),
        stack.registry.url.clone(),
        stack.certs.clone(),
        Some(reload),
    )
    .await
    .expect("registry front");
    let run = fastrand::u32(..);
    let (stolen, other) = (format!("stolen-{run}"), format!("other-{run}"));
    let (stolen_mqtt, stolen_id) = enrolled(&stack, &front.url(), dir.path(), &stolen).await;
    let (other_mqtt, _) = enrolled(&stack, &front.url(), dir.path(), &other).await;
    let stolen_box = write_box(dir.path(), &stolen, &stack, "g1", "", &stolen_mqtt);
    let other_box = write_box(dir.path(), &other, &stack, "g2", "", &other_mqtt);
    let agents = [start_agent(&stolen_box), start_agent(&other_box)];
    // Both certificates from the registry get in.
    for thing in [&stolen, &other] {
        eventually("both boxes connected", Duration::from_secs(30), || {
            let at = connected_at(&stack, thing);
            async move { at }
        })
        .await;
    }
    let before = connected_at(&stack, &other).expect("connected");
    let stolen_before = connected_at(&stack, &stolen).expect("connected");

    integration_tests::revoke_certificate(&front.url(), &stolen_id).await;
    drop(agents);
    let (mut stolen_agent, mut other_agent) = (start_agent(&stolen_box), start_agent(&other_box));

    // The other box reconnects (a connect report newer than before the revocation)...
    eventually(
        "the other box to reconnect",
        Duration::from_secs(60),
        || {
            other_agent.assert_running();
            let at = connected_at(&stack, &other);
            async move { at.filter(|at| *at > before) }
        },
    )
    .await;
    // ...the revoked one is refused at the handshake, again and again.
    let errors = eventually(
        "the revoked box refused twice",
        Duration::from_secs(60),
        || {
            stolen_agent.assert_running();
            let text = log_text(&stolen_box);
            let errors = text
                .lines()
                .filter(|l| l.contains("MQTT:") && l.contains("ERROR"))
                .count();
            async move { (errors >= 2).then_some(errors) }
        },
    )
    .await;
    assert!(errors >= 2);
    // No connect of the revoked box since the revocation.
    assert_eq!(
        reported(&stack, &stolen).and_then(|r| r["connectedAt"].as_i64()),
        Some(stolen_before)
    );
}
