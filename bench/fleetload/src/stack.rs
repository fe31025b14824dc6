//! One path's local stack, in this process and its children: osmem-server, moto with the
//! fleet registered, the functions under `cargo lambda watch`, Mosquitto, the IoT
//! endpoint, the rules and (stream path) the Kinesis emulator, the stream rule and one
//! event source mapping per ingest function. The functions reach OpenSearch, the IoT
//! endpoint and are invoked only through the counting proxies ([`crate::proxy`]).

use crate::observe::Roots;
use crate::options::{IngestPath, Options};
use crate::proxy::{Kind, Proxy};
use crate::readings::{group, thing};
use integration_tests::{
    free_port, function_env, start_watch_logging, wait_for_gasdetector, ChildGuard, Moto,
    OpenSearch,
};
use local_aws::{GatewayConfig, KinesisConfig, MappingConfig, Stack, StackConfig, StreamConfig};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RunStack {
    pub opensearch: OpenSearch,
    /// The registry and the failure queues (kept running for the run).
    pub _moto: Moto,
    pub os_proxy: Proxy,
    pub iot_proxy: Proxy,
    pub invoke_proxy: Proxy,
    pub stack: Stack,
    /// `cargo lambda watch` (stopped with its process group when dropped or restarted).
    watch: Mutex<Option<ChildGuard>>,
    /// The pids of this run's `cargo lambda watch` (the functions are their descendants).
    pub watch_pids: Roots,
    watch_env: HashMap<String, String>,
    watch_args: Vec<String>,
    /// Where the functions' JSON log lines go (appended across restarts).
    pub functions_log: PathBuf,
    /// How long the bring-up took.
    pub setup: Duration,
}

impl RunStack {
    pub fn broker(&self) -> SocketAddr {
        self.stack.broker.local_addr()
    }

    /// Stops `cargo lambda watch` (its process group: every function process and every
    /// invocation it holds) and starts it again on a new port behind the invoke proxy,
    /// which holds new invocations meanwhile. `cargo lambda watch` does not start a
    /// function again whose process died (it keeps waiting for the dead process's answer),
    /// so this is the local stand-in for Lambda replacing a crashed sandbox.
    pub async fn restart_watch(&self) -> Duration {
        let started = Instant::now();
        let old = self.watch.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(old);
        let args: Vec<&OsStr> = self.watch_args.iter().map(OsStr::new).collect();
        let (watch, port) =
            start_watch_logging(&self.watch_env, &args, append(&self.functions_log)).await;
        self.watch_pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(watch.child.id());
        self.invoke_proxy
            .set_upstream(&format!("http://127.0.0.1:{port}"));
        *self.watch.lock().unwrap_or_else(|e| e.into_inner()) = Some(watch);
        started.elapsed()
    }

    /// Messages given up by the mappings (on-failure destination) and by the stream
    /// rule's error action: what went to `StreamFailureQueue` / `StreamRuleErrorQueue`.
    pub fn failure_destination(&self) -> (u64, u64) {
        let failed = self.stack.stream.as_ref().map_or(0, |s| {
            s.mappings.iter().map(|m| m.counts().failed_batches).sum()
        });
        let rule_errors = self
            .stack
            .iot_rules
            .stream_rule()
            .map_or(0, |r| r.counts().error_actions);
        (failed, rule_errors)
    }
}

/// `path` opened for appending (created if missing); `None`, and a line saying so, if it
/// cannot be: the run goes on without the functions' timing.
fn append(path: &Path) -> Option<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| eprintln!("fleetload: {}: {e}; no function timing", path.display()))
        .ok()
}

/// Registers `boxes` things in moto's registry (`CreateThing` with the `groupid`
/// attribute, as `fleet enroll` does).
async fn register(moto: &Moto, boxes: usize) {
    for i in 0..boxes {
        moto.register_box(&thing(i), &group(i)).await;
    }
}

/// One path's stack for `boxes` boxes; the functions log to `functions_log` (emptied
/// first).
pub async fn start(
    options: &Options,
    path: IngestPath,
    boxes: usize,
    functions_log: PathBuf,
) -> RunStack {
    let started = Instant::now();
    let opensearch = OpenSearch::start().await;
    let os_proxy = Proxy::start(Kind::OpenSearch, &opensearch.url)
        .await
        .expect("OpenSearch proxy: no loopback port");
    // The IoT endpoint is started with the stack below, on this port probed free now, so
    // the functions' environment can name its proxy first.
    let iot_port = free_port();
    let iot_proxy = Proxy::start(Kind::Iot, &format!("http://127.0.0.1:{iot_port}"))
        .await
        .expect("IoT proxy: no loopback port");
    let moto = Moto::start().await;
    register(&moto, boxes).await;
    let mut env: HashMap<String, String> = function_env(&iot_proxy.url(), &os_proxy.url());
    // The registry the functions bind boxes with; its cache keeps the default TTL (60 s).
    env.insert("AWS_ENDPOINT_URL_IOT".into(), moto.url.clone());
    // Flat JSON lines: each invocation's `request done` gives its own duration.
    env.insert("AWS_LAMBDA_LOG_FORMAT".into(), "JSON".into());
    let _ = std::fs::remove_file(&functions_log);
    let concurrency = options.concurrency.to_string();
    let mut watch_args: Vec<&OsStr> = vec![OsStr::new("--concurrency"), OsStr::new(&concurrency)];
    if options.release {
        watch_args.push(OsStr::new("--release"));
    }
    let (watch, watch_port) = start_watch_logging(&env, &watch_args, append(&functions_log)).await;
    let invoke_proxy = Proxy::start(Kind::Invoke, &format!("http://127.0.0.1:{watch_port}"))
        .await
        .expect("invoke proxy: no loopback port");
    // Enough to keep every instance busy, far below watch's queue of 100.
    invoke_proxy.limit_per_function(2 * options.concurrency as usize + 2);
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut gateway_config = GatewayConfig::sensors(invoke_proxy.url());
    gateway_config.log = false;
    let stream = match path {
        IngestPath::Direct => None,
        IngestPath::Stream => {
            let mut kinesis = KinesisConfig::new(any);
            kinesis.shards = options.shards;
            let mut mapping = MappingConfig::new("gasdetector");
            mapping.batch_size = options.batch_size;
            mapping.window = options.window;
            mapping.max_retries = Some(options.max_retries);
            mapping.log = options.verbose;
            Some(StreamConfig {
                kinesis,
                mapping,
                // The failure queues live in moto's SQS, as `cargo xtask dev --stream` keeps them.
                moto: Some(moto.url.clone()),
                ..StreamConfig::new(any)
            })
        }
    };
    let stack = Stack::start(StackConfig {
        mqtt: any,
        mqtt_tls: None,
        broker_dir: None,
        iot: ([127, 0, 0, 1], iot_port).into(),
        gateway: any,
        gateway_config,
        device_root: "devices".into(),
        stream,
    })
    .await
    .unwrap_or_else(|e| panic!("local stack: {e}"));
    // The first invoke starts (and, if stale, builds) the function: wait for its answer.
    wait_for_gasdetector(stack.gateway.local_addr().port()).await;
    RunStack {
        opensearch,
        _moto: moto,
        os_proxy,
        iot_proxy,
        invoke_proxy,
        stack,
        watch_pids: std::sync::Arc::new(Mutex::new(vec![watch.child.id()])),
        watch: Mutex::new(Some(watch)),
        watch_env: env,
        watch_args: watch_args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        functions_log,
        setup: started.elapsed(),
    }
}
