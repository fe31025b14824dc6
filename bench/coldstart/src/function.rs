//! A function under test: its process, started fresh with the Lambda environment
//! against its own Runtime API, and the invokes sent to it.

use crate::cli::Target;
use crate::runtime_api::{runtime_api, Job, Outcome, RuntimeApi};
use crate::server::{serve, Server};
use crate::Result;
use bytes::Bytes;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

pub struct Function {
    child: tokio::process::Child,
    pub pid: u32,
    pub started: Instant,
    api: Arc<RuntimeApi>,
    pub jobs: Option<mpsc::Sender<Job>>,
    _server: Server,
    log: PathBuf,
}

impl Function {
    pub async fn start(
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
    pub async fn invoke(&mut self, event: Bytes, timeout: Duration) -> Result<Outcome> {
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

    pub fn first_next(&self) -> Option<Instant> {
        *self
            .api
            .first_next
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        // Ends the parked `/next` long-poll.
        self.jobs = None;
    }
}

/// Peak resident set size of a live process, in KiB (`VmHWM`).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A response is good when it is a 200 proxy response (or plain JSON for direct invokes).
pub fn check_response(outcome: &Outcome) -> Result {
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
