//! Real local peers for the integration tests, each on a free port so tests run in
//! parallel: osmem-server (an OpenSearch-compatible server, a subprocess from the project
//! virtualenv, installed with pip when missing), the local-aws MQTT broker and IoT
//! data-plane endpoint (in-process), an MQTT subscriber (rumqttc), and the real function
//! pipeline (`sensor_lambda::App`) configured for them.
//!
//! Waiting is always on an event with a deadline: a port answering, a message arriving, a
//! document becoming searchable. A tool that cannot be installed fails the test with a
//! message saying so.

use local_aws::{Broker, IotEndpoint, MqttSubscriber};
use rumqttc::QoS;
use sensor_core::ports::{AlarmStore, Indexer, Publisher, Registry};
use sensor_lambda::{App, IngestSettings};
use sensor_model::Sensor;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Deadline for any single awaited event.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn venv_dir() -> PathBuf {
    root().join("target").join("venv")
}

pub fn venv_bin(name: &str) -> PathBuf {
    venv_dir().join("bin").join(name)
}

/// A free TCP port on 127.0.0.1 (bound and released; callers retry on the rare race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

static PIP: Mutex<()> = Mutex::new(());

/// Makes sure `target/venv` holds `spec` (a pip requirement), judged by `present`.
/// Panics with a clear message when it cannot be installed.
pub fn ensure_python_package(spec: &str, present: impl Fn() -> Option<PathBuf>) -> PathBuf {
    let _guard = PIP.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = present() {
        return path;
    }
    if !venv_bin("python").exists() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(venv_dir())
            .status()
            .unwrap_or_else(|e| panic!("{spec} is needed and python3 cannot run ({e}): install Python 3 (or run `cargo xtask test`)"));
        assert!(
            status.success(),
            "python3 -m venv {} failed",
            venv_dir().display()
        );
    }
    let output = Command::new(venv_bin("python"))
        .args(["-m", "pip", "install", "--quiet", spec])
        .output()
        .unwrap_or_else(|e| panic!("cannot run pip to install {spec}: {e}"));
    assert!(
        output.status.success(),
        "pip install {spec} into {} failed: {}",
        venv_dir().display(),
        String::from_utf8_lossy(&output.stderr)
    );
    present().unwrap_or_else(|| panic!("pip installed {spec} but its executable is missing"))
}

/// The osmem-server binary (shipped inside the wheel, no console script).
pub fn osmem_binary() -> PathBuf {
    ensure_python_package("osmem-server", || {
        let script = venv_bin("osmem-server");
        if script.exists() {
            return Some(script);
        }
        std::fs::read_dir(venv_dir().join("lib"))
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("site-packages/osmem_server/bin/osmem-server"))
            .find(|p| p.exists())
    })
}

/// A child process killed (with its process group) when dropped.
pub struct ChildGuard {
    pub child: Child,
    pub name: &'static str,
}

impl ChildGuard {
    pub fn spawn(name: &'static str, command: &mut Command) -> ChildGuard {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildGuard { child, name }
    }

    /// Fails the test if the process has already exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early ({status})", self.name);
        }
    }
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's process group; no memory involved.
            unsafe {
                kill(-pid, 9);
            }
        }
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns `Some`, panicking with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {:?} waiting for {what}",
            deadline
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Building the functions under `cargo lambda watch` can take minutes on 2 cores when
/// the cache is cold.
pub const WATCH_BUILD: Duration = Duration::from_secs(600);

/// PATH with the project virtualenv first, so `cargo lambda` finds the venv's cargo-lambda.
pub fn path_with_venv() -> String {
    let mut path = venv_dir().join("bin").to_string_lossy().into_owned();
    if let Ok(existing) = std::env::var("PATH") {
        path.push(':');
        path.push_str(&existing);
    }
    path
}

/// `cargo lambda watch` serving the workspace's functions with `env` on a free loopback
/// port (installing cargo-lambda into the venv if needed), once it accepts connections.
/// `extra_args` go after the watch arguments. Stopped when the guard drops.
pub async fn start_watch(
    env: &HashMap<String, String>,
    extra_args: &[&std::ffi::OsStr],
) -> (ChildGuard, u16) {
    start_watch_logging(env, extra_args, None).await
}

/// [`start_watch`] with the functions' output (their log and EMF lines: watch passes their
/// stdout through its own) appended to `log` instead of discarded.
pub async fn start_watch_logging(
    env: &HashMap<String, String>,
    extra_args: &[&std::ffi::OsStr],
    log: Option<std::fs::File>,
) -> (ChildGuard, u16) {
    let stdout = log.map_or_else(Stdio::null, Stdio::from);
    let cargo_lambda = ensure_python_package("cargo-lambda", || {
        let bin = venv_bin("cargo-lambda");
        bin.exists().then_some(bin)
    });
    let port = free_port();
    let mut watch = ChildGuard::spawn(
        "cargo lambda watch",
        Command::new(&cargo_lambda)
            .current_dir(root())
            .env("PATH", path_with_venv())
            .envs(env)
            .args(["lambda", "watch", "--ignore-changes", "-A", "127.0.0.1"])
            .args(["-P", &port.to_string()])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(stdout),
    );
    eventually("cargo lambda watch to listen", WATCH_BUILD, || {
        watch.assert_running();
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        async move { up.then_some(()) }
    })
    .await;
    (watch, port)
}

/// An osmem-server subprocess on a free port with the project's index templates applied.
pub struct OpenSearch {
    pub url: String,
    pub http: reqwest::Client,
    _process: ChildGuard,
}

impl OpenSearch {
    pub async fn start() -> OpenSearch {
        let binary = osmem_binary();
        let http = reqwest::Client::new();
        for _attempt in 0..3 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let mut process = ChildGuard::spawn(
                "osmem-server",
                Command::new(&binary)
                    .args(["-addr", &addr, "-no-stdin-watch"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            let url = format!("http://{addr}");
            let start = Instant::now();
            let mut up = false;
            while start.elapsed() < WAIT {
                if let Ok(Some(_)) = process.child.try_wait() {
                    break; // lost the port race: try another
                }
                if let Ok(r) = http.get(&url).send().await {
                    up = r.status().is_success();
                    if up {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !up {
                continue;
            }
            let opensearch = OpenSearch {
                url,
                http,
                _process: process,
            };
            opensearch.apply_templates().await;
            return opensearch;
        }
        panic!("osmem-server ({}) did not come up", binary.display());
    }

    async fn apply_templates(&self) {
        let dir = root().join("infra/opensearch/index-templates");
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let body = std::fs::read_to_string(&path).unwrap();
            let response = self
                .http
                .put(format!("{}/_index_template/{name}", self.url))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            assert!(status.is_success(), "template {name}: {status} {text}");
        }
    }

    /// POST `path` with a JSON body; the status and JSON reply.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Documents in `index` matching `query` after a refresh (0 if the index is missing).
    pub async fn count(&self, index: &str, query: Value) -> u64 {
        let _ = self.post(&format!("/{index}/_refresh"), &json!({})).await;
        let (status, reply) = self
            .post(&format!("/{index}/_count"), &json!({ "query": query }))
            .await;
        match status {
            200 => reply["count"].as_u64().expect("_count without count"),
            404 => 0,
            other => panic!("_count on {index}: {other} {reply}"),
        }
    }

    /// Documents of group `group` in `index` after a refresh.
    pub async fn count_group(&self, index: &str, group: &str) -> u64 {
        self.count(index, json!({"term": {"groupid": group}})).await
    }

    /// Waits until `index` holds at least `n` documents matching `query`; the count.
    pub async fn wait_count(&self, index: &str, query: Value, n: u64) -> u64 {
        eventually(&format!("{n} documents in {index}"), WAIT, || {
            let query = query.clone();
            async move {
                let count = self.count(index, query).await;
                (count >= n).then_some(count)
            }
        })
        .await
    }

    /// The hits of a search.
    pub async fn search(&self, index: &str, query: Value) -> Vec<Value> {
        let _ = self.post(&format!("/{index}/_refresh"), &json!({})).await;
        let (status, reply) = self
            .post(
                &format!("/{index}/_search"),
                &json!({ "query": query, "size": 100 }),
            )
            .await;
        assert_eq!(status, 200, "_search on {index}: {reply}");
        reply["hits"]["hits"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// The local broker's subscriber ([`MqttSubscriber`]), with the tests' deadline and
/// JSON payloads.
pub struct Subscriber(MqttSubscriber);

impl Subscriber {
    pub async fn connect(broker: SocketAddr, filter: &str) -> Subscriber {
        Subscriber(
            MqttSubscriber::connect(broker, filter, WAIT)
                .await
                .expect("subscription"),
        )
    }

    /// The next message, as (topic, JSON payload, QoS).
    pub async fn next(&mut self) -> (String, Value, QoS) {
        let publish = self
            .0
            .next(WAIT)
            .await
            .expect("no MQTT message within the deadline");
        let payload = serde_json::from_slice(&publish.payload).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&publish.payload).into_owned())
        });
        (publish.topic, payload, publish.qos)
    }

    /// Publishes a marker on `topic` through the IoT endpoint at `iot_url`; every message
    /// received before it, as (topic, JSON payload). When the marker arrives, anything
    /// published before it has been delivered, so "nothing else arrived" is proven.
    pub async fn until_marker(&mut self, iot_url: &str, topic: &str) -> Vec<(String, Value)> {
        publish_marker(iot_url, topic).await;
        let mut before = Vec::new();
        loop {
            let (received, message, _) = self.next().await;
            if received == topic {
                return before;
            }
            before.push((received, message));
        }
    }
}

/// Publishes `{"marker":true}` on `topic` through the IoT endpoint at `iot_url`.
pub async fn publish_marker(iot_url: &str, topic: &str) {
    iot_client(iot_url)
        .publish()
        .topic(topic)
        .qos(1)
        .payload(aws_sdk_iotdataplane::primitives::Blob::new(
            br#"{"marker":true}"#.to_vec(),
        ))
        .send()
        .await
        .expect("marker publish");
}

/// Broker + IoT endpoint in-process, osmem-server as a subprocess.
pub struct Peers {
    pub broker: Broker,
    pub iot: IotEndpoint,
    pub opensearch: OpenSearch,
}

impl Peers {
    pub async fn start() -> Peers {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let broker = Broker::start(any).await.expect("broker");
        let iot = IotEndpoint::start(any, broker.publisher())
            .await
            .expect("IoT endpoint");
        let opensearch = OpenSearch::start().await;
        Peers {
            broker,
            iot,
            opensearch,
        }
    }

    /// The function configuration for these peers (the same keys as the env vars).
    pub fn env(&self) -> HashMap<String, String> {
        function_env(&self.iot.url(), &self.opensearch.url)
    }

    /// The real pipeline with the real adapters, configured for these peers.
    pub async fn app(&self, sensor: Sensor) -> App {
        app_with(sensor, self.env()).await
    }

    /// Publishes `marker` on `topic` through the IoT endpoint: once it arrives, anything
    /// published before it has been delivered, so "nothing else arrived" is proven.
    pub async fn publish_marker(&self, topic: &str) {
        publish_marker(&self.iot.url(), topic).await;
    }
}

/// moto in server mode: the IoT data plane (Publish, shadows) and control plane (the
/// registry: things, attributes, certificates) as a second implementation of AWS's API.
pub struct Moto {
    pub url: String,
    pub http: reqwest::Client,
    process: Option<ChildGuard>,
    workdir: std::path::PathBuf,
}

impl Drop for Moto {
    fn drop(&mut self) {
        drop(self.process.take());
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}

impl Moto {
    pub async fn start() -> Moto {
        let binary = ensure_python_package("moto[server]", || {
            let bin = venv_bin("moto_server");
            bin.exists().then_some(bin)
        });
        let http = reqwest::Client::new();
        for _attempt in 0..3 {
            let port = free_port().to_string();
            // moto writes its recording file into its working directory.
            let workdir =
                std::env::temp_dir().join(format!("it-moto-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&workdir).expect("moto working directory");
            let mut process = ChildGuard::spawn(
                "moto_server",
                Command::new(&binary)
                    .current_dir(&workdir)
                    .args(["-H", "127.0.0.1", "-p", &port])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            let url = format!("http://127.0.0.1:{port}");
            let start = Instant::now();
            while start.elapsed() < WAIT {
                if let Ok(Some(_)) = process.child.try_wait() {
                    break;
                }
                if let Ok(r) = http.get(format!("{url}/moto-api/")).send().await {
                    if r.status().is_success() {
                        process.assert_running();
                        return Moto {
                            url,
                            http,
                            process: Some(process),
                            workdir,
                        };
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("moto_server ({}) did not come up", binary.display());
    }

    /// Registers `thing` through moto's IoT control plane (boto3 `create_thing`).
    pub fn create_thing(&self, thing: &str) {
        let script = "import sys, boto3\n\
            c = boto3.client('iot', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
                aws_access_key_id='AKIDINTEGRATION', aws_secret_access_key='secret')\n\
            c.create_thing(thingName=sys.argv[2])\n";
        let output = Command::new(venv_bin("python"))
            .args(["-c", script, &self.url, thing])
            .output()
            .expect("run python for boto3");
        assert!(
            output.status.success(),
            "create_thing {thing}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Enrols box `thing` in group `group` in moto's registry with the real
    /// `aws-sdk-iot` client, as `fleet enroll` does (`CreateThing` with the `groupid`
    /// attribute).
    pub async fn register_box(&self, thing: &str, group: &str) {
        let client = registry_client(&self.url);
        let attributes = group_attribute(group);
        let created = client
            .create_thing()
            .thing_name(thing)
            .attribute_payload(attributes);
        if let Err(e) = created.send().await {
            panic!(
                "CreateThing {thing}: {}",
                aws_sdk_iot::error::DisplayErrorContext(e)
            );
        }
    }

    /// Moves box `thing` to `group` (`UpdateThing`), as `fleet move` does.
    pub async fn move_box(&self, thing: &str, group: &str) {
        let client = registry_client(&self.url);
        let attributes = group_attribute(group);
        let updated = client
            .update_thing()
            .thing_name(thing)
            .attribute_payload(attributes);
        if let Err(e) = updated.send().await {
            panic!(
                "UpdateThing {thing}: {}",
                aws_sdk_iot::error::DisplayErrorContext(e)
            );
        }
    }
}

/// The `groupid` attribute, merged into the thing's others.
fn group_attribute(group: &str) -> aws_sdk_iot::types::AttributePayload {
    aws_sdk_iot::types::AttributePayload::builder()
        .attributes("groupid", group)
        .merge(true)
        .build()
}

/// A box's key and CSR (subject `CN=<thing>`), as `sensorbox enroll` makes them.
pub fn box_key_and_csr(thing: &str) -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, thing);
    let csr = params
        .serialize_request(&key)
        .expect("CSR")
        .pem()
        .expect("PEM");
    (key, csr)
}

/// The local stack as boxes meet it: the broker (with `tls` when given), the IoT endpoint,
/// osmem-server, the registry (moto), the functions under `cargo lambda watch` asking it,
/// the IoT rules invoking them and the gateway.
pub struct DeviceStack {
    pub broker: Broker,
    pub iot: IotEndpoint,
    pub opensearch: OpenSearch,
    pub registry: Moto,
    pub rules: local_aws::IotRules,
    pub gateway: local_aws::Gateway,
    pub watch: ChildGuard,
    /// With [`DeviceStack::start_secured`]: the boxes' identity.
    pub identity: Option<Identity>,
    /// With [`DeviceStack::start_streaming`]: the stream path.
    pub stream: Option<Streaming>,
}

/// The stream path of a [`DeviceStack::start_streaming`] stack: the Kinesis emulator
/// (ferrokinesis) the Basic Ingest rule puts into, and one event source mapping per ingest
/// function invoking it under `cargo lambda watch`.
pub struct Streaming {
    pub kinesis: local_aws::Kinesis,
    /// gasdetector, dust, temp.
    pub mappings: Vec<local_aws::EventSourceMapping>,
}

impl Streaming {
    /// The mapping invoking `function`.
    pub fn mapping(&self, function: &str) -> &local_aws::EventSourceMapping {
        self.mappings
            .iter()
            .find(|m| m.function() == function)
            .unwrap_or_else(|| panic!("no mapping for {function}"))
    }
}

/// The per-box identity of a [`DeviceStack::start_secured`] stack: the local CA, the
/// registry front that signs CSRs with it (and revokes on the broker), and the IoT
/// credentials provider whose sessions the gateway checks signatures against.
pub struct Identity {
    pub certs: local_aws::Certs,
    pub front: local_aws::RegistryFront,
    pub credentials: local_aws::credentials::CredentialsProvider,
}

/// The role alias of the secured test stacks.
pub const ROLE_ALIAS: &str = "test-sensor-box";

impl DeviceStack {
    /// `extra` is added to the functions' environment.
    pub async fn start(tls: Option<local_aws::TlsListener>, extra: &[(&str, &str)]) -> DeviceStack {
        DeviceStack::start_with(tls, None, false, extra).await
    }

    /// [`DeviceStack::start`] with the stream path as `IngestPath=stream` deploys it: the
    /// Basic Ingest rule `sensorbox_readings` into a 2-shard stream, and the mappings
    /// (`MappingConfig::new`: batches of up to 1,000 records, a 1 s window).
    pub async fn start_streaming(
        tls: Option<local_aws::TlsListener>,
        extra: &[(&str, &str)],
    ) -> DeviceStack {
        DeviceStack::start_with(tls, None, true, extra).await
    }

    /// The stack as deployed: the broker's mutual-TLS listener, the registry front, the
    /// credentials provider (credentials lasting `lifetime`) and the gateway checking
    /// SigV4 on the boxes' routes; the CA under `certs`.
    pub async fn start_secured(
        certs: &Path,
        lifetime: Duration,
        extra: &[(&str, &str)],
    ) -> DeviceStack {
        let certs = local_aws::Certs::ensure(certs).expect("local CA");
        let tls = local_aws::TlsListener::from_certs("127.0.0.1:0".parse().expect("addr"), &certs);
        DeviceStack::start_with(Some(tls), Some((certs, lifetime)), false, extra).await
    }

    async fn start_with(
        tls: Option<local_aws::TlsListener>,
        secured: Option<(local_aws::Certs, Duration)>,
        streaming: bool,
        extra: &[(&str, &str)],
    ) -> DeviceStack {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let broker = Broker::start_with(local_aws::BrokerConfig {
            plain: any,
            tls,
            dir: None,
        })
        .await
        .expect("mosquitto");
        let iot = IotEndpoint::start(any, broker.publisher())
            .await
            .expect("IoT endpoint");
        let opensearch = OpenSearch::start().await;
        let registry = Moto::start().await;
        let sessions = local_aws::sts::IssuedCredentials::default();
        let identity = match secured {
            Some((certs, lifetime)) => {
                let reload: local_aws::registry::Reload = std::sync::Arc::new(broker.reloader());
                let front = local_aws::RegistryFront::start_revoking(
                    any,
                    registry.url.clone(),
                    certs.clone(),
                    Some(reload),
                )
                .await
                .expect("registry front");
                let credentials = local_aws::credentials::CredentialsProvider::start(
                    local_aws::credentials::CredentialsProviderConfig {
                        addr: any,
                        certs: certs.clone(),
                        moto: registry.url.clone(),
                        role_alias: ROLE_ALIAS.into(),
                        lifetime,
                        sessions: sessions.clone(),
                    },
                )
                .await
                .expect("credentials provider");
                Some(Identity {
                    certs,
                    front,
                    credentials,
                })
            }
            None => None,
        };
        let mut env = with_registry(function_env(&iot.url(), &opensearch.url), &registry.url);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let (watch, watch_port) = start_watch(&env, &[]).await;
        let invoke = format!("http://127.0.0.1:{watch_port}");
        // Boxed: inlined, this future is deep enough to overflow the layout query of
        // the tests that await a `DeviceStack`.
        let (rules, stream) = Box::pin(start_rules(&broker, &iot, &invoke, streaming)).await;
        let mut gateway_config = local_aws::GatewayConfig::sensors(invoke);
        gateway_config.sessions = identity.as_ref().map(|_| sessions);
        let gateway = local_aws::Gateway::start(any, gateway_config)
            .await
            .expect("gateway");
        wait_for_gasdetector(gateway.local_addr().port()).await;
        DeviceStack {
            broker,
            iot,
            opensearch,
            registry,
            rules,
            gateway,
            watch,
            identity,
            stream,
        }
    }
}

/// The IoT rules invoking the functions at `invoke`, and with `streaming` the stream path:
/// the Kinesis emulator, the Basic Ingest rule and one event source mapping per function.
async fn start_rules(
    broker: &Broker,
    iot: &IotEndpoint,
    invoke: &str,
    streaming: bool,
) -> (local_aws::IotRules, Option<Streaming>) {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let sensors: Vec<String> = local_aws::gateway::INGEST_FUNCTIONS
        .map(String::from)
        .to_vec();
    let kinesis = match streaming {
        true => Some(
            local_aws::Kinesis::start(local_aws::KinesisConfig::new(any))
                .await
                .expect("Kinesis emulator"),
        ),
        false => None,
    };
    let stream_rule = kinesis.as_ref().map(|kinesis| {
        local_aws::StreamRule::start(
            local_aws::StreamRuleConfig {
                rule: local_aws::stream_rule::DEFAULT_RULE.into(),
                device_root: "devices".into(),
                stream: kinesis.stream().to_owned(),
                sensors: sensors.clone(),
            },
            kinesis.client(),
            local_aws::Destination::sqs_or_log(None, local_aws::destination::RULE_ERROR_QUEUE),
        )
    });
    let rules = local_aws::IotRules::start_with_stream(
        local_aws::IotRulesConfig {
            broker: broker.local_addr(),
            device_root: "devices".into(),
            invoke_base: Some(invoke.to_owned()),
            sensors: sensors.clone(),
        },
        iot.shadows().clone(),
        broker.publisher(),
        stream_rule,
    )
    .await
    .expect("rules");
    let stream = match kinesis {
        Some(kinesis) => {
            let mut mappings = Vec::new();
            for function in &sensors {
                let source = local_aws::event_source::Source {
                    stream: kinesis.stream().to_owned(),
                    stream_arn: kinesis.stream_arn().to_owned(),
                    invoke_base: invoke.to_owned(),
                };
                let mut config = local_aws::MappingConfig::new(function);
                config.log = false;
                mappings.push(
                    local_aws::EventSourceMapping::start(
                        kinesis.client(),
                        source,
                        config,
                        local_aws::Destination::sqs_or_log(
                            None,
                            local_aws::destination::FAILURE_QUEUE,
                        ),
                    )
                    .await
                    .expect("event source mapping"),
                );
            }
            Some(Streaming { kinesis, mappings })
        }
        None => None,
    };
    (rules, stream)
}

/// `CreateCertificateFromCsr` (active) at the registry `endpoint`: the certificate's id
/// and PEM, as `fleet enroll` gets them.
pub async fn certificate_from_csr(endpoint: &str, csr_pem: &str) -> (String, String) {
    let output = registry_client(endpoint)
        .create_certificate_from_csr()
        .certificate_signing_request(csr_pem)
        .set_as_active(true)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "CreateCertificateFromCsr: {}",
                aws_sdk_iot::error::DisplayErrorContext(e)
            )
        });
    (
        output.certificate_id().unwrap_or_default().to_string(),
        output.certificate_pem().unwrap_or_default().to_string(),
    )
}

/// `UpdateCertificate` to REVOKED at the registry `endpoint`, as `fleet revoke` does.
pub async fn revoke_certificate(endpoint: &str, id: &str) {
    registry_client(endpoint)
        .update_certificate()
        .certificate_id(id)
        .new_status(aws_sdk_iot::types::CertificateStatus::Revoked)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "UpdateCertificate {id}: {}",
                aws_sdk_iot::error::DisplayErrorContext(e)
            )
        });
}

/// The SDK configuration of the tests' clients: dummy credentials, `endpoint` for every
/// service (moto, the local IoT endpoint, the registry front).
fn dummy_sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    use aws_sdk_iot::config::{Credentials, SharedCredentialsProvider};
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKIDINTEGRATION",
            "secret",
            None,
            None,
            "test",
        )))
        .endpoint_url(endpoint)
        .build()
}

/// The IoT control-plane client with dummy credentials against `endpoint`.
pub fn registry_client(endpoint: &str) -> aws_sdk_iot::Client {
    aws_sdk_iot::Client::new(&dummy_sdk_config(endpoint))
}

/// The functions' environment for a local IoT endpoint and OpenSearch (dummy credentials).
/// The shared-key routes are on, as under `cargo xtask dev` (the API key is optional
/// locally); the registry is unset (see [`with_registry`]).
pub fn function_env(iot_url: &str, opensearch_url: &str) -> HashMap<String, String> {
    [
        ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", iot_url),
        ("OPENSEARCH_URL", opensearch_url),
        ("OPENSEARCH_AUTH", "none"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "AKIDINTEGRATION"),
        ("AWS_SECRET_ACCESS_KEY", "integration-secret"),
        ("LEGACY_KEY_ROUTES", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `env` asking `registry` (moto's control plane) which group a box belongs to, trusting
/// each answer for one second (so a test sees a move soon).
pub fn with_registry(mut env: HashMap<String, String>, registry: &str) -> HashMap<String, String> {
    env.insert("AWS_ENDPOINT_URL_IOT".into(), registry.into());
    env.insert("REGISTRY_CACHE_TTL".into(), "1".into());
    env
}

pub async fn app_with(sensor: Sensor, env: HashMap<String, String>) -> App {
    let config = IngestSettings::from_lookup(sensor, |key: &str| env.get(key).cloned())
        .unwrap_or_else(|e| panic!("configuration: {e}"));
    App::from_settings(config)
        .await
        .unwrap_or_else(|e| panic!("init: {e}"))
}

/// The real SDK client with dummy credentials against `endpoint`.
pub fn iot_client(endpoint: &str) -> aws_sdk_iotdataplane::Client {
    aws_sdk_iotdataplane::Client::new(&dummy_sdk_config(endpoint))
}

/// `POST /<sensor>` with `body` through the pipeline: status and JSON reply.
pub async fn post<P: Publisher, I: Indexer, A: AlarmStore, R: Registry>(
    app: &App<P, I, A, R>,
    sensor: &str,
    body: &str,
) -> (u16, Value) {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("/{sensor}"))
        .header("content-type", "application/json")
        .body(lambda_http::Body::from(body.to_owned()))
        .expect("request");
    let response = app.handle(request).await;
    let status = response.status().as_u16();
    let body = match response.body() {
        lambda_http::Body::Text(text) => text.clone().into_bytes(),
        lambda_http::Body::Binary(bytes) => bytes.clone(),
        _ => Vec::new(),
    };
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, json)
}

/// A gasdetector reading: `no2` at `no2`, other measures harmless.
pub fn gas_reading(groupid: &str, no2: &str, createdtime: &str) -> String {
    json!({
        "groupid": groupid,
        "gps": "37.61002501514269, 126.99636868892937",
        "co": {"sensorid": "0005", "sensortype": "8", "value": "26.20", "createdtime": createdtime},
        "no2": {"sensorid": "0006", "sensortype": "9", "value": no2, "createdtime": createdtime},
        "c2h5oh": {"sensorid": "0007", "sensortype": "27", "value": "26.11", "createdtime": createdtime},
        "h2": {"sensorid": "0008", "sensortype": "30", "value": "400", "createdtime": createdtime}
    })
    .to_string()
}

/// A shadow answer's payload as JSON (`null` when absent or not JSON).
pub fn shadow_json(payload: Option<&aws_sdk_iotdataplane::primitives::Blob>) -> Value {
    payload
        .and_then(|p| serde_json::from_slice(p.as_ref()).ok())
        .unwrap_or(Value::Null)
}

/// The Device Shadow API as `aws-sdk-iotdataplane` sees it, for any endpoint (the local
/// one and moto must agree): 404 before the first update, versions counting up,
/// `state`/`metadata` shapes, merging with `null` deleting, 409 `ConflictException` on a
/// stale version, named shadows apart from the classic one, delta, delete.
pub async fn check_shadow_contract(client: &aws_sdk_iotdataplane::Client, thing: &str) {
    use aws_sdk_iotdataplane::operation::get_thing_shadow::GetThingShadowError;
    use aws_sdk_iotdataplane::operation::update_thing_shadow::UpdateThingShadowError;
    use aws_sdk_iotdataplane::primitives::Blob;
    let get = |name: Option<&'static str>| {
        let client = client.clone();
        let thing = thing.to_owned();
        async move {
            client
                .get_thing_shadow()
                .thing_name(thing)
                .set_shadow_name(name.map(str::to_owned))
                .send()
                .await
                .map(|o| shadow_json(o.payload()))
        }
    };
    let update = |name: Option<&'static str>, body: Value| {
        let client = client.clone();
        let thing = thing.to_owned();
        async move {
            client
                .update_thing_shadow()
                .thing_name(thing)
                .set_shadow_name(name.map(str::to_owned))
                .payload(Blob::new(body.to_string().into_bytes()))
                .send()
                .await
                .map(|o| shadow_json(o.payload()))
        }
    };
    let missing = get(Some("alarms"))
        .await
        .expect_err("no shadow before the first update");
    assert!(
        matches!(
            missing.as_service_error(),
            Some(GetThingShadowError::ResourceNotFoundException(_))
        ),
        "{missing:?}"
    );
    let first = update(
        Some("alarms"),
        json!({"state": {"reported": {"a": 1, "list": [1, 2], "o": {"x": 1, "y": 2}}}}),
    )
    .await
    .expect("first update");
    assert_eq!(first["version"], 1, "{first}");
    assert_eq!(first["state"]["reported"]["a"], 1, "{first}");
    assert!(
        first["metadata"]["reported"]["a"]["timestamp"].is_u64(),
        "{first}"
    );
    assert!(first["timestamp"].is_u64(), "{first}");
    let second = update(
        Some("alarms"),
        json!({"state": {"reported": {"a": null, "list": [3], "o": {"x": 5}}}, "version": 1}),
    )
    .await
    .expect("update at the current version");
    assert_eq!(second["version"], 2, "{second}");
    let stale = update(
        Some("alarms"),
        json!({"state": {"reported": {"b": 1}}, "version": 1}),
    )
    .await
    .expect_err("a stale version conflicts");
    assert!(
        matches!(
            stale.as_service_error(),
            Some(UpdateThingShadowError::ConflictException(_))
        ),
        "{stale:?}"
    );
    let document = get(Some("alarms")).await.expect("get");
    assert_eq!(document["version"], 2, "{document}");
    assert_eq!(
        document["state"]["reported"],
        json!({"list": [3], "o": {"x": 5, "y": 2}}),
        "{document}"
    );
    assert!(
        document["metadata"]["reported"]["o"]["y"]["timestamp"].is_u64(),
        "{document}"
    );
    // The classic shadow is another document.
    let classic = get(None).await.expect_err("no classic shadow yet");
    assert!(classic
        .as_service_error()
        .is_some_and(|e| e.is_resource_not_found_exception()));
    update(
        None,
        json!({"state": {"desired": {"led": "red"}, "reported": {"led": "off"}}}),
    )
    .await
    .expect("classic update");
    let classic = get(None).await.expect("classic get");
    assert_eq!(classic["version"], 1, "{classic}");
    assert_eq!(
        classic["state"]["delta"],
        json!({"led": "red"}),
        "{classic}"
    );
    assert_eq!(get(Some("alarms")).await.expect("named")["version"], 2);
    client
        .delete_thing_shadow()
        .thing_name(thing)
        .shadow_name("alarms")
        .send()
        .await
        .expect("delete");
    let gone = get(Some("alarms")).await.expect_err("deleted");
    assert!(gone
        .as_service_error()
        .is_some_and(|e| e.is_resource_not_found_exception()));
}

/// The queue depth `sensorbox queue` reports for the agent binary `agent` with `config`
/// (it opens the queue read-only, beside a running agent); `None` if it cannot say.
pub fn sensorbox_queue_depth(agent: &Path, config: &Path) -> Option<u64> {
    let out = Command::new(agent)
        .arg("--config")
        .arg(config)
        .arg("queue")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("depth"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Waits until `gasdetector` answers behind the local gateway on `port`: the first invoke
/// under `cargo lambda watch` may build the function, so callers that time requests wait
/// here first. An empty batch is the function's own 400, or its 403 with the shared-key
/// routes off (the gateway's 503 is neither).
pub async fn wait_for_gasdetector(port: u16) {
    let http = reqwest::Client::new();
    eventually("the function to answer", WATCH_BUILD, || {
        let request = http
            .post(format!("http://127.0.0.1:{port}/gasdetector"))
            .body("[]")
            .send();
        // 400 (an empty batch), or 403 when the shared-key routes are off: either way the
        // function itself answered.
        async move {
            request
                .await
                .ok()
                .filter(|r| matches!(r.status().as_u16(), 400 | 403))
                .map(|_| ())
        }
    })
    .await;
}
