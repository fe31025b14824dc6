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

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

type Body = Full<Bytes>;
type Result<T = ()> = std::result::Result<T, String>;

const USAGE: &str = "\
usage: coldstart [options] --fn 'NAME|EVENT_FILE|COMMAND [ARGS..]' ...

  --fn SPEC            a function to measure (repeat; KEY=VALUE words before COMMAND set
                       that target's environment); NAME `hello` is the floor baseline,
                       `hello-io` the floor plus the same two HTTP requests, `python` the
                       Python baseline
  --runs N             cold starts per function (default 15)
  --osmem PATH         start this osmem-server for OpenSearch (or --opensearch URL)
  --opensearch URL     an OpenSearch-compatible server already running
  --env KEY=VALUE      extra environment for every function (repeat)
  --warm N             then N warm requests per warm target through the local gateway
  --warm-fn NAME       warm target (repeat; default gasdetector and python)
  --concurrency C      concurrent clients in the warm test (default 1)
  --out FILE           write the markdown report there too
  --logs DIR           functions' stdout/stderr (default target/bench/logs)
  --note TEXT          a line for the report (toolchain, versions)
";

struct Target {
    name: String,
    event: Bytes,
    program: String,
    args: Vec<String>,
    /// `KEY=VALUE` words before the program in `--fn`: this target's own environment.
    env: Vec<(String, String)>,
}

struct Options {
    targets: Vec<Target>,
    runs: usize,
    osmem: Option<PathBuf>,
    opensearch: Option<String>,
    env: Vec<(String, String)>,
    warm: usize,
    warm_fns: Vec<String>,
    concurrency: usize,
    out: Option<PathBuf>,
    logs: PathBuf,
    notes: Vec<String>,
}

fn parse_args() -> Result<Options> {
    let mut o = Options {
        targets: Vec::new(),
        runs: 15,
        osmem: None,
        opensearch: None,
        env: Vec::new(),
        warm: 0,
        warm_fns: Vec::new(),
        concurrency: 1,
        out: None,
        logs: PathBuf::from("target/bench/logs"),
        notes: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--fn" => {
                let spec = value()?;
                let mut parts = spec.splitn(3, '|');
                let (Some(name), Some(event), Some(command)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(format!("--fn {spec:?}: expected NAME|EVENT|COMMAND"));
                };
                let event = std::fs::read(event).map_err(|e| format!("{event}: {e}"))?;
                let mut words = command.split_whitespace().map(str::to_string).peekable();
                let mut env = Vec::new();
                while let Some((k, v)) = words.peek().and_then(|w| w.split_once('=')) {
                    env.push((k.to_string(), v.to_string()));
                    words.next();
                }
                let program = words
                    .next()
                    .ok_or_else(|| format!("--fn {spec:?}: empty command"))?;
                o.targets.push(Target {
                    name: name.to_string(),
                    event: Bytes::from(event),
                    program,
                    args: words.collect(),
                    env,
                });
            }
            "--runs" => o.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--osmem" => o.osmem = Some(PathBuf::from(value()?)),
            "--opensearch" => o.opensearch = Some(value()?),
            "--env" => {
                let kv = value()?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("--env {kv:?}: expected KEY=VALUE"))?;
                o.env.push((k.to_string(), v.to_string()));
            }
            "--warm" => o.warm = value()?.parse().map_err(|e| format!("--warm: {e}"))?,
            "--warm-fn" => o.warm_fns.push(value()?),
            "--concurrency" => {
                o.concurrency = value()?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            "--out" => o.out = Some(PathBuf::from(value()?)),
            "--logs" => o.logs = PathBuf::from(value()?),
            "--note" => o.notes.push(value()?),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.targets.is_empty() {
        return Err(format!("no --fn given\n{USAGE}"));
    }
    if o.warm_fns.is_empty() {
        o.warm_fns = vec!["gasdetector".into(), "python".into()];
    }
    o.concurrency = o.concurrency.max(1);
    Ok(o)
}

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
        for name in &o.warm_fns {
            let Some(t) = o.targets.iter().find(|t| &t.name == name) else {
                return Err(format!("--warm-fn {name}: no --fn with that name"));
            };
            let r = warm_run(t, &env, &o.logs, o.warm, o.concurrency).await?;
            rows.push((name.clone(), r));
        }
        warm_report(&o, &rows, &mut report);
    }
    let _ = writeln!(
        report,
        "\nIoT publishes received by the stub: {}.",
        publishes.load(Ordering::Relaxed)
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

/// One discarded start per target (page cache, Python bytecode), then `o.runs` starts per
/// target, round-robin so background load on the machine spreads over all of them.
async fn cold_starts<'a>(
    o: &'a Options,
    env: &[(String, String)],
) -> Result<HashMap<&'a str, Vec<Sample>>> {
    for t in &o.targets {
        cold_run(t, env, &o.logs)
            .await
            .map_err(|e| format!("{}: warm-up run: {e}", t.name))?;
    }
    let mut samples: HashMap<&str, Vec<Sample>> = HashMap::new();
    for run in 0..o.runs {
        for t in &o.targets {
            let s = cold_run(t, env, &o.logs)
                .await
                .map_err(|e| format!("{}: run {run}: {e}", t.name))?;
            samples.entry(t.name.as_str()).or_default().push(s);
        }
        eprint!(".");
    }
    eprintln!();
    Ok(samples)
}

// ---------------------------------------------------------------------------------------
// HTTP plumbing

fn reply(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

struct Server {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `handler` over HTTP/1.1 on an ephemeral port of 127.0.0.1.
async fn serve<F, Fut>(handler: F) -> std::io::Result<(u16, Server)>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((port, Server { port, task }))
}

/// `POST /topics/{topic}?qos=1` answers 200 `{}`, like the IoT data plane; the alarm
/// shadows (`/things/{thing}/shadow?name=`) are kept with versions and answer at once
/// (409 on a stale version, 404 before the first update), so the alarm state's round
/// trip is measured as the function's own cost, as the publish is.
async fn iot_stub(count: Arc<AtomicU64>, req: Request<Incoming>) -> Response<Body> {
    static SHADOWS: Mutex<Option<HashMap<String, (Value, u64)>>> = Mutex::new(None);
    let path = req.uri().path().to_string();
    if req.method() == Method::POST && path.starts_with("/topics/") {
        let _ = req.into_body().collect().await;
        count.fetch_add(1, Ordering::Relaxed);
        return reply(200, "{}");
    }
    if !path.starts_with("/things/") {
        return reply(404, r#"{"message":"not found"}"#);
    }
    let key = format!("{path}?{}", req.uri().query().unwrap_or(""));
    let method = req.method().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut guard = SHADOWS.lock().unwrap_or_else(|e| e.into_inner());
    let shadows = guard.get_or_insert_with(HashMap::new);
    let not_found = || {
        let mut r = reply(404, r#"{"message":"No shadow exists"}"#);
        r.headers_mut().insert(
            "x-amzn-ErrorType",
            hyper::header::HeaderValue::from_static("ResourceNotFoundException"),
        );
        r
    };
    match method {
        Method::GET => match shadows.get(&key) {
            Some((reported, version)) => reply(
                200,
                json!({"state": {"reported": reported}, "version": version}).to_string(),
            ),
            None => not_found(),
        },
        Method::POST => {
            let update: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let current = shadows.get(&key).map(|(_, v)| *v);
            if let Some(expected) = update["version"].as_u64() {
                if current != Some(expected) {
                    let mut r = reply(409, r#"{"message":"Version conflict"}"#);
                    r.headers_mut().insert(
                        "x-amzn-ErrorType",
                        hyper::header::HeaderValue::from_static("ConflictException"),
                    );
                    return r;
                }
            }
            // The alarm state writes whole arrays, so replacing `reported` is merging it.
            let version = current.unwrap_or(0) + 1;
            shadows.insert(key, (update["state"]["reported"].clone(), version));
            reply(200, json!({"version": version}).to_string())
        }
        _ => reply(405, r#"{"message":"method not allowed"}"#),
    }
}

/// Answers at once, as a real cluster would if writes were free: `POST /_bulk` with one
/// 201 item per action line (`create` or `index`, `_index`/`_id` echoed), and
/// `POST /{index}/_doc` (the Python baseline) with 201 and a generated `_id`.
async fn opensearch_stub(req: Request<Incoming>) -> Response<Body> {
    static IDS: AtomicU64 = AtomicU64::new(0);
    let path = req.uri().path().to_string();
    if req.method() != Method::POST {
        return reply(404, r#"{"error":"not found"}"#);
    }
    let Ok(body) = req.into_body().collect().await else {
        return reply(400, r#"{"error":"unreadable body"}"#);
    };
    let body = body.to_bytes();
    if path.ends_with("/_bulk") {
        let mut items = Vec::new();
        let mut lines = body.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        while let Some(action) = lines.next() {
            let Ok(Value::Object(action)) = serde_json::from_slice(action) else {
                return reply(400, r#"{"error":"bad action line"}"#);
            };
            let Some((op, meta)) = action.into_iter().next() else {
                return reply(400, r#"{"error":"empty action line"}"#);
            };
            let _source = lines.next();
            items.push(json!({op: {
                "_index": meta.get("_index"),
                "_id": meta.get("_id"),
                "status": 201,
                "result": "created",
            }}));
        }
        reply(
            200,
            json!({"took": 0, "errors": false, "items": items}).to_string(),
        )
    } else if path.ends_with("/_doc") {
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        reply(
            201,
            json!({"_id": format!("stub-{id}"), "result": "created"}).to_string(),
        )
    } else {
        reply(404, r#"{"error":"not found"}"#)
    }
}

async fn start_osmem(bin: &Path) -> Result<(tokio::process::Child, String)> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        l.local_addr().map_err(|e| e.to_string())?.port()
    };
    let child = tokio::process::Command::new(bin)
        .args(["-addr", &format!("127.0.0.1:{port}"), "-no-stdin-watch"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok((child, format!("http://127.0.0.1:{port}")));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!("{} did not listen on {port}", bin.display()))
}

// ---------------------------------------------------------------------------------------
// The Lambda Runtime API

struct Job {
    event: Bytes,
    reply: oneshot::Sender<Outcome>,
}

struct Outcome {
    at: Instant,
    ok: bool,
    body: Bytes,
}

struct RuntimeApi {
    function_name: String,
    jobs: tokio::sync::Mutex<mpsc::Receiver<Job>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    first_next: Mutex<Option<Instant>>,
    init_error: Mutex<Option<String>>,
    seq: AtomicU64,
}

const API_PREFIX: &str = "/2018-06-01/runtime";

fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

async fn runtime_api(api: Arc<RuntimeApi>, req: Request<Incoming>) -> Response<Body> {
    let now = Instant::now();
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix(API_PREFIX) else {
        return reply(404, "");
    };
    if req.method() == Method::GET && rest == "/invocation/next" {
        {
            let mut first = api.first_next.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert(now);
        }
        // Parks until a job is queued; ends when the harness drops the queue.
        let Some(job) = api.jobs.lock().await.recv().await else {
            return reply(410, "harness done");
        };
        let id = format!("bench-{}", api.seq.fetch_add(1, Ordering::Relaxed));
        api.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), job.reply);
        let arn = format!(
            "arn:aws:lambda:us-east-1:123456789012:function:{}",
            api.function_name
        );
        return Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("lambda-runtime-aws-request-id", id)
            .header(
                "lambda-runtime-deadline-ms",
                (epoch_ms() + 60_000).to_string(),
            )
            .header("lambda-runtime-invoked-function-arn", arn)
            .header(
                "lambda-runtime-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0",
            )
            .body(Full::new(job.event))
            .unwrap_or_else(|_| reply(500, ""));
    }
    if req.method() != Method::POST {
        return reply(405, "");
    }
    if rest == "/init/error" {
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        let text = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
        *api.init_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
        return reply(202, r#"{"status":"OK"}"#);
    }
    let Some((id, kind)) = rest
        .strip_prefix("/invocation/")
        .and_then(|t| t.split_once('/'))
    else {
        return reply(404, "");
    };
    let (id, ok) = (id.to_string(), kind == "response");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let at = Instant::now();
    let waiter = api
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    match waiter {
        Some(tx) => {
            let _ = tx.send(Outcome { at, ok, body });
            reply(202, r#"{"status":"OK"}"#)
        }
        None => reply(400, r#"{"errorMessage":"unknown request id"}"#),
    }
}

struct Function {
    child: tokio::process::Child,
    pid: u32,
    started: Instant,
    api: Arc<RuntimeApi>,
    jobs: Option<mpsc::Sender<Job>>,
    _server: Server,
    log: PathBuf,
}

impl Function {
    async fn start(
        t: &Target,
        env: &[(String, String)],
        logs: &Path,
        queue: usize,
    ) -> Result<Function> {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let api = Arc::new(RuntimeApi {
            function_name: t.name.clone(),
            jobs: tokio::sync::Mutex::new(rx),
            pending: Mutex::new(HashMap::new()),
            first_next: Mutex::new(None),
            init_error: Mutex::new(None),
            seq: AtomicU64::new(0),
        });
        let handle = api.clone();
        let (port, server) = serve(move |req| runtime_api(handle.clone(), req))
            .await
            .map_err(|e| format!("runtime API: {e}"))?;
        let log = logs.join(format!("{}.log", t.name));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut command = tokio::process::Command::new(&t.program);
        command
            .args(&t.args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("TZ", ":UTC")
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("127.0.0.1:{}", server.port),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", &t.name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", t.name),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "AKIDBENCHMARK0000000")
            .env("AWS_SECRET_ACCESS_KEY", "benchmark-secret-key")
            .env("AWS_SESSION_TOKEN", "benchmark-session-token")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(t.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        if t.name == "python" {
            command.env("INDEX", "gasdetect-python");
        }
        debug_assert_eq!(port, server.port);
        let started = Instant::now();
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", t.program))?;
        let pid = child.id().unwrap_or(0);
        Ok(Function {
            child,
            pid,
            started,
            api,
            jobs: Some(tx),
            _server: server,
            log,
        })
    }

    /// Queues one event and waits for its response (or the process's death).
    async fn invoke(&mut self, event: Bytes, timeout: Duration) -> Result<Outcome> {
        let (tx, rx) = oneshot::channel();
        let jobs = self.jobs.as_ref().ok_or("stopped")?;
        jobs.send(Job { event, reply: tx })
            .await
            .map_err(|_| "runtime API gone".to_string())?;
        tokio::select! {
            outcome = rx => outcome.map_err(|_| "runtime API dropped the request".to_string()),
            status = self.child.wait() => Err(format!(
                "exited before answering ({}); init error: {:?}; log: {}",
                status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                self.api.init_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                self.log.display()
            )),
            _ = tokio::time::sleep(timeout) => Err(format!("no answer in {timeout:?}; log: {}", self.log.display())),
        }
    }

    fn first_next(&self) -> Option<Instant> {
        *self
            .api
            .first_next
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        // Ends the parked `/next` long-poll.
        self.jobs = None;
    }
}

/// Peak resident set size of a live process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A response is good when it is a 200 proxy response (or plain JSON for direct invokes).
fn check_response(outcome: &Outcome) -> Result {
    let text = String::from_utf8_lossy(&outcome.body);
    if !outcome.ok {
        return Err(format!("function error: {text}"));
    }
    let value: Value = serde_json::from_slice(&outcome.body)
        .map_err(|e| format!("response is not JSON ({e}): {text}"))?;
    match value.get("statusCode").and_then(Value::as_u64) {
        Some(200) | None => Ok(()),
        Some(status) => Err(format!("status {status}: {text}")),
    }
}

// ---------------------------------------------------------------------------------------
// Cold starts

struct Sample {
    init: Duration,
    first_response: Duration,
    rss_kib: u64,
}

async fn cold_run(t: &Target, env: &[(String, String)], logs: &Path) -> Result<Sample> {
    // Built before the process starts, so it is not in the timings.
    let event = unique_event(&t.event)?;
    let mut f = Function::start(t, env, logs, 1).await?;
    let outcome = f.invoke(event, Duration::from_secs(30)).await;
    let rss = peak_rss_kib(f.pid);
    let first_next = f.first_next();
    let started = f.started;
    f.stop().await;
    let outcome = outcome?;
    check_response(&outcome)?;
    Ok(Sample {
        init: first_next.ok_or("no /next poll")? - started,
        first_response: outcome.at - started,
        rss_kib: rss.ok_or("no VmHWM")?,
    })
}

/// The target's event with a `groupid` no other start has used, so every cold start indexes
/// a new document (as a real cold start does) instead of answering a resend (`create` ->
/// 409, which osmem-server answers ~0.7 ms sooner than a write). Works on API Gateway
/// events (plain or base64 `body`) and direct invokes (the reading itself).
fn unique_event(event: &[u8]) -> Result<Bytes> {
    use base64::Engine as _;
    static STARTS: AtomicU64 = AtomicU64::new(0);
    let groupid = format!(
        "cold-{}-{}",
        std::process::id(),
        STARTS.fetch_add(1, Ordering::Relaxed)
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut event: Value =
        serde_json::from_slice(event).map_err(|e| format!("event is not JSON: {e}"))?;
    let with_group = |mut reading: Value| -> Result<Value> {
        let object = reading
            .as_object_mut()
            .ok_or("event body is not a JSON object")?;
        object.insert("groupid".into(), Value::String(groupid.clone()));
        Ok(reading)
    };
    let Some(body) = event.get("body").and_then(Value::as_str) else {
        return Ok(Bytes::from(with_group(event)?.to_string()));
    };
    let base64_body = event.get("isBase64Encoded") == Some(&Value::Bool(true));
    let text = if base64_body {
        let raw = b64
            .decode(body)
            .map_err(|e| format!("event body is not base64: {e}"))?;
        String::from_utf8(raw).map_err(|e| format!("event body is not UTF-8: {e}"))?
    } else {
        body.to_string()
    };
    let reading =
        serde_json::from_str(&text).map_err(|e| format!("event body is not JSON: {e}"))?;
    let text = with_group(reading)?.to_string();
    event["body"] = Value::String(if base64_body { b64.encode(text) } else { text });
    Ok(Bytes::from(event.to_string()))
}

/// One timing of every sample, in ascending order (what [`median`] and [`percentile`] take).
fn sorted<'a>(
    samples: impl IntoIterator<Item = &'a Sample>,
    timing: fn(&Sample) -> Duration,
) -> Vec<Duration> {
    let mut v: Vec<Duration> = samples.into_iter().map(timing).collect();
    v.sort();
    v
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!(
        "{model}, {cpus} CPUs, {:.0} GiB RAM, Linux {}",
        mem_kib as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

struct Row {
    name: String,
    init: Duration,
    init_p90: Duration,
    /// First response with the document written into osmem-server.
    first: Duration,
    first_p90: Duration,
    /// First response with the `_bulk` stub: the function's own cost.
    first_stub: Duration,
    first_stub_p90: Duration,
    rss_mib: f64,
}

/// Targets that are measured for comparison, not checked against the targets: `hello`
/// (the floor), `hello-io` (the floor plus the same two HTTP requests), `python` (the
/// original system).
const BASELINES: [&str; 3] = ["hello", "hello-io", "python"];

fn cold_report(
    o: &Options,
    real: &HashMap<&str, Vec<Sample>>,
    stubbed: &HashMap<&str, Vec<Sample>>,
    out: &mut String,
) {
    let rows: Vec<Row> = o
        .targets
        .iter()
        .filter_map(|t| {
            let (real, stubbed) = (real.get(t.name.as_str())?, stubbed.get(t.name.as_str())?);
            let init = sorted(real.iter().chain(stubbed), |s| s.init);
            let first = sorted(real, |s| s.first_response);
            let first_stub = sorted(stubbed, |s| s.first_response);
            let mut rss: Vec<u64> = real.iter().map(|s| s.rss_kib).collect();
            rss.sort_unstable();
            Some(Row {
                name: t.name.clone(),
                init_p90: percentile(&init, 90.0),
                first_p90: percentile(&first, 90.0),
                first_stub_p90: percentile(&first_stub, 90.0),
                init: median(init),
                first: median(first),
                first_stub: median(first_stub),
                rss_mib: rss.get(rss.len() / 2).copied().unwrap_or(0) as f64 / 1024.0,
            })
        })
        .collect();
    let hello = rows.iter().find(|r| r.name == "hello");
    let hello_io = rows.iter().find(|r| r.name == "hello-io");
    let python = rows.iter().find(|r| r.name == "python");

    let _ = writeln!(
        out,
        "### Cold start: process start to first `/next` (init) and to the first response\n"
    );
    let _ = writeln!(out, "Machine: {}.  ", machine());
    for note in &o.notes {
        let _ = writeln!(out, "{note}.  ");
    }
    let _ = writeln!(
        out,
        "{runs} cold starts per function and pass (after one discarded warm-up start per pass), round-robin; \
         medians, p90 in brackets. One invoke per start: the target's API Gateway REST event (warning-tripping unless the name says otherwise) whose \
         `groupid` no earlier start used (so each start stores a new document), one IoT publish to a local stub and one \
         `_bulk`. Two passes: **osmem** indexes into osmem-server (a real write: the server's time is in the \
         first response), **stub** into an in-process `_bulk` stub that answers at once (the function's own \
         cost, like the IoT stub). Init is the median over both passes ({both} starts). Peak RSS = `VmHWM` after \
         the response (osmem pass).\n",
        runs = o.runs,
        both = 2 * o.runs,
    );
    let _ = writeln!(
        out,
        "| function | init ms | first response ms, osmem | first response ms, stub | init / hello | first resp. / hello, osmem | first resp. / hello, stub | first resp. / hello-io, stub | Python first resp. / this, osmem | peak RSS MiB |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let ratio = |a: Duration, b: Option<Duration>| match b {
        Some(b) if !b.is_zero() => format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64()),
        _ => "-".into(),
    };
    for r in &rows {
        let _ = writeln!(
            out,
            "| {} | {:.2} [{:.2}] | {:.2} [{:.2}] | {:.2} [{:.2}] | {} | {} | {} | {} | {} | {:.1} |",
            r.name,
            ms(r.init),
            ms(r.init_p90),
            ms(r.first),
            ms(r.first_p90),
            ms(r.first_stub),
            ms(r.first_stub_p90),
            ratio(r.init, hello.map(|h| h.init)),
            ratio(r.first, hello.map(|h| h.first)),
            ratio(r.first_stub, hello.map(|h| h.first_stub)),
            ratio(r.first_stub, hello_io.map(|h| h.first_stub)),
            python
                .map(|p| ratio(p.first, Some(r.first)))
                .unwrap_or_else(|| "-".into()),
            r.rss_mib
        );
    }
    let _ = writeln!(out, "\nTargets (functions other than the baselines):\n");
    for r in rows
        .iter()
        .filter(|r| !BASELINES.contains(&r.name.as_str()))
    {
        let mut checks = Vec::new();
        if let Some(h) = hello {
            let within = |a: Duration, b: Duration| a.as_secs_f64() <= 2.0 * b.as_secs_f64();
            checks.push(("init <= 2x hello", within(r.init, h.init)));
            checks.push((
                "first response <= 2x hello, osmem",
                within(r.first, h.first),
            ));
            checks.push((
                "first response <= 2x hello, stub",
                within(r.first_stub, h.first_stub),
            ));
        }
        if let Some(p) = python {
            checks.push((
                "first response >= 30x faster than Python, osmem",
                p.first.as_secs_f64() >= 30.0 * r.first.as_secs_f64(),
            ));
        }
        checks.push(("peak RSS < 12 MB", r.rss_mib * 1024.0 * 1024.0 < 12e6));
        let text: Vec<String> = checks
            .iter()
            .map(|(what, ok)| format!("{what}: {}", if *ok { "PASS" } else { "FAIL" }))
            .collect();
        let _ = writeln!(out, "- {}: {}", r.name, text.join("; "));
    }
}

// ---------------------------------------------------------------------------------------
// Warm path through a local gateway

struct WarmResult {
    requests: usize,
    ok: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    rss_mib: f64,
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

/// API Gateway stand-in: an HTTP request becomes a REST (v1) proxy event on the Runtime
/// API; the proxy response becomes the HTTP response.
async fn gateway(
    jobs: mpsc::Sender<Job>,
    seq: Arc<AtomicUsize>,
    req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(400, ""),
    };
    let n = seq.fetch_add(1, Ordering::Relaxed);
    let event = json!({
        "resource": path, "path": path, "httpMethod": method,
        "headers": {"content-type": "application/json", "host": "127.0.0.1"},
        "multiValueHeaders": {"content-type": ["application/json"], "host": ["127.0.0.1"]},
        "queryStringParameters": null, "multiValueQueryStringParameters": null,
        "pathParameters": null, "stageVariables": null,
        "requestContext": {
            "accountId": "123456789012", "resourceId": "bench", "stage": "prod",
            "requestId": format!("gw-{n}"), "httpMethod": method, "path": format!("/prod{path}"),
            "resourcePath": path, "protocol": "HTTP/1.1", "apiId": "bench",
            "identity": {"sourceIp": "127.0.0.1"}, "requestTimeEpoch": epoch_ms() as u64
        },
        "body": String::from_utf8_lossy(&body), "isBase64Encoded": false
    });
    let (tx, rx) = oneshot::channel();
    if jobs
        .send(Job {
            event: Bytes::from(event.to_string()),
            reply: tx,
        })
        .await
        .is_err()
    {
        return reply(502, "");
    }
    let Ok(outcome) = rx.await else {
        return reply(502, "");
    };
    if !outcome.ok {
        return reply(502, outcome.body);
    }
    let Ok(proxy) = serde_json::from_slice::<Value>(&outcome.body) else {
        return reply(502, outcome.body);
    };
    let status = proxy
        .get("statusCode")
        .and_then(Value::as_u64)
        .unwrap_or(200) as u16;
    let body = proxy
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    reply(status, body)
}

async fn warm_run(
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
    let path = format!(
        "/{}",
        if t.name == "python" {
            "gasdetector"
        } else {
            &t.name
        }
    );
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

fn warm_report(o: &Options, rows: &[(String, WarmResult)], out: &mut String) {
    let _ = writeln!(
        out,
        "\n### Warm path through the harness's local gateway\n\n\
         HTTP POST -> API Gateway REST (v1) proxy event -> Runtime API -> one warm process -> proxy response. \
         {} timed requests per function after 50 warm-up requests, {} client connection(s), each request a new \
         reading that trips the no2 rule (one IoT publish, one new document).\n",
        o.warm, o.concurrency
    );
    let _ = writeln!(
        out,
        "| function | requests | 200s | throughput req/s | p50 ms | p99 ms | max ms | peak RSS MiB |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, r) in rows {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} |",
            r.requests,
            r.ok,
            r.requests as f64 / r.elapsed.as_secs_f64(),
            ms(percentile(&r.latencies, 50.0)),
            ms(percentile(&r.latencies, 99.0)),
            ms(r.latencies.last().copied().unwrap_or_default()),
            r.rss_mib
        );
    }
}
