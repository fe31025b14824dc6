//! What the run watches while it runs, straight at the peers (never through the
//! functions' proxies): osmem-server's document count and the timed readings' ids
//! (searchable = found by a `_search`), the warnings on `pi/#`, and the CPU time of the
//! function processes `cargo lambda watch` started.

use crate::boxes::Published;
use crate::warnings::Messages;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The index pattern the gasdetector documents go to (`INDEX` unset: `gasdetect`).
pub const INDEX: &str = "gasdetect*";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// osmem-server as the run queries it.
#[derive(Clone)]
pub struct Search {
    pub url: String,
    pub http: reqwest::Client,
}

impl Search {
    async fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        if status.as_u16() == 404 {
            return Ok(Value::Null);
        }
        if !status.is_success() {
            return Err(format!("POST {path}: {status} {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("POST {path}: not JSON ({e}): {text}"))
    }

    /// Documents stored (0 before the first one).
    pub async fn count(&self) -> Result<u64, String> {
        let reply = self
            .post(
                &format!("/{INDEX}/_count"),
                &json!({"query": {"match_all": {}}}),
            )
            .await?;
        Ok(reply["count"].as_u64().unwrap_or(0))
    }

    pub async fn refresh(&self) -> Result<(), String> {
        self.post(&format!("/{INDEX}/_refresh"), &json!({}))
            .await
            .map(|_| ())
    }

    /// Which of `ids` a search finds, with how many hits each has.
    pub async fn found(&self, ids: &[String]) -> Result<HashMap<String, u64>, String> {
        let body = json!({
            "query": {"ids": {"values": ids}},
            "size": ids.len() * 2 + 1,
            "_source": false,
        });
        let reply = self.post(&format!("/{INDEX}/_search"), &body).await?;
        let mut found: HashMap<String, u64> = HashMap::new();
        for hit in reply["hits"]["hits"].as_array().into_iter().flatten() {
            if let Some(id) = hit["_id"].as_str() {
                *found.entry(id.to_owned()).or_default() += 1;
            }
        }
        Ok(found)
    }
}

/// When the document count first reached the target, and the last time it moved.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub count: u64,
    pub reached: Option<Instant>,
    pub last_change: Instant,
}

/// Polls the count every 250 ms until it reaches `target`.
pub fn watch_count(search: Search, target: u64) -> watch::Receiver<Progress> {
    let (tx, rx) = watch::channel(Progress {
        count: 0,
        reached: None,
        last_change: Instant::now(),
    });
    tokio::spawn(async move {
        loop {
            if let Ok(count) = search.count().await {
                let now = Instant::now();
                tx.send_modify(|p| {
                    if count != p.count {
                        p.count = count;
                        p.last_change = now;
                    }
                    if count >= target && p.reached.is_none() {
                        p.reached = Some(now);
                    }
                });
                if count >= target || tx.is_closed() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    rx
}

/// Publish-to-searchable times of the timed readings: every ~100 ms the ids published
/// and not yet found are searched for.
pub struct Latency {
    found: Arc<Mutex<Vec<Duration>>>,
    pending: Arc<Mutex<usize>>,
    /// Completed polling rounds.
    rounds: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Latency {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Latency {
    pub fn start(search: Search, published: Published) -> Latency {
        let found = Arc::new(Mutex::new(Vec::new()));
        let pending_count = Arc::new(Mutex::new(0usize));
        let (rounds_tx, rounds) = watch::channel(0u64);
        let task = {
            let found = found.clone();
            let pending_count = pending_count.clone();
            tokio::spawn(async move {
                let mut pending: Vec<(String, Instant)> = Vec::new();
                loop {
                    let started = Instant::now();
                    pending.append(&mut lock(&published));
                    for chunk_start in (0..pending.len()).step_by(500) {
                        let end = (chunk_start + 500).min(pending.len());
                        let ids: Vec<String> = pending[chunk_start..end]
                            .iter()
                            .map(|(id, _)| id.clone())
                            .collect();
                        if let Ok(hits) = search.found(&ids).await {
                            let now = Instant::now();
                            for entry in &mut pending[chunk_start..end] {
                                if hits.contains_key(&entry.0) {
                                    lock(&found).push(now.saturating_duration_since(entry.1));
                                    entry.0.clear();
                                }
                            }
                        }
                    }
                    pending.retain(|(id, _)| !id.is_empty());
                    *lock(&pending_count) = pending.len();
                    rounds_tx.send_modify(|n| *n += 1);
                    let next = started + Duration::from_millis(100);
                    tokio::time::sleep_until(next).await;
                }
            })
        };
        Latency {
            found,
            pending: pending_count,
            rounds,
            task,
        }
    }

    /// Waits (at most `wait`) for a whole polling round that started after this call, so
    /// a reading that became searchable before it is counted.
    pub async fn settle(&self, wait: Duration) {
        let mut rounds = self.rounds.clone();
        let now = *rounds.borrow_and_update();
        let _ = tokio::time::timeout(wait, rounds.wait_for(|n| *n >= now + 2)).await;
    }

    /// The times measured so far, and how many timed readings are still not found.
    pub fn results(&self) -> (Vec<Duration>, usize) {
        (lock(&self.found).clone(), *lock(&self.pending))
    }
}

/// Every message on `pi/#` since the subscription, with its arrival time.
pub struct Warnings {
    messages: Arc<Mutex<Messages>>,
    last: watch::Receiver<Instant>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Warnings {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Warnings {
    pub async fn subscribe(broker: std::net::SocketAddr) -> Result<Warnings, String> {
        let mut subscriber =
            local_aws::MqttSubscriber::connect(broker, "pi/#", Duration::from_secs(20)).await?;
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (last_tx, last) = watch::channel(Instant::now());
        let task = {
            let messages = messages.clone();
            tokio::spawn(async move {
                while let Some(publish) = subscriber.next(Duration::from_secs(3600)).await {
                    let payload = serde_json::from_slice(&publish.payload).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(&publish.payload).into_owned())
                    });
                    lock(&messages).push((publish.topic, payload));
                    let _ = last_tx.send(Instant::now());
                }
            })
        };
        Ok(Warnings {
            messages,
            last,
            task,
        })
    }

    pub fn messages(&self) -> Messages {
        lock(&self.messages).clone()
    }

    /// Waits until a message with `"marker": <token>` arrived (`false` after `wait`).
    pub async fn wait_marker(&self, token: &str, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut last = self.last.clone();
        loop {
            let seen = lock(&self.messages)
                .iter()
                .any(|(_, m)| m["marker"].as_str() == Some(token));
            if seen {
                return true;
            }
            if tokio::time::timeout_at(deadline, last.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }
}

/// The pids of the `cargo lambda watch` processes of this run (one more per restart).
pub type Roots = Arc<Mutex<Vec<u32>>>;

/// The function binaries `cargo lambda watch` runs.
pub const FUNCTIONS: [&str; 5] = ["gasdetector", "dust", "temp", "nodata", "query"];

/// A function process: its binary's name and its CPU time so far, in clock ticks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub name: String,
    pub ticks: u64,
}

/// The parent pid in a `/proc/<pid>/stat` line (field 4).
pub fn parent(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` descends from one of `roots` (within a few generations).
fn descends(pid: u32, roots: &[u32]) -> bool {
    let mut current = pid;
    for _ in 0..8 {
        let Some(up) = std::fs::read_to_string(format!("/proc/{current}/stat"))
            .ok()
            .and_then(|stat| parent(&stat))
        else {
            return false;
        };
        if roots.contains(&up) {
            return true;
        }
        if up <= 1 {
            return false;
        }
        current = up;
    }
    false
}

/// The function processes running now under one of `roots` (this run's `cargo lambda
/// watch`; another stack's functions on the machine are not counted): `/proc/<pid>/exe`
/// is a `target/*/<function>`.
pub fn function_processes(roots: &[u32]) -> BTreeMap<u32, Process> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        let exe = exe
            .to_string_lossy()
            .trim_end_matches(" (deleted)")
            .to_owned();
        let Some(name) = exe.rsplit('/').next() else {
            continue;
        };
        if !exe.contains("/target/") || !FUNCTIONS.contains(&name) || !descends(pid, roots) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(ticks) = cpu_ticks(&stat) {
            found.insert(
                pid,
                Process {
                    name: name.to_owned(),
                    ticks,
                },
            );
        }
    }
    found
}

/// utime + stime of a `/proc/<pid>/stat` line (fields 14 and 15; the command name in
/// parentheses may hold spaces, so fields are counted after its closing parenthesis).
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// The function processes' CPU time, sampled every 500 ms so a process that dies (the
/// kill fault) keeps what it used until its last sample; [`Cpu::sample`] takes one at once.
pub struct Cpu {
    roots: Roots,
    baseline: BTreeMap<u32, Process>,
    latest: Arc<Mutex<BTreeMap<u32, Process>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Cpu {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Cpu {
    /// Starts sampling the functions under `roots`; those running now are the baseline.
    pub fn start(roots: Roots) -> Cpu {
        let baseline = function_processes(&lock(&roots));
        let latest = Arc::new(Mutex::new(baseline.clone()));
        let task = {
            let latest = latest.clone();
            let roots = roots.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Cpu::merge(&roots, &latest);
                }
            })
        };
        Cpu {
            roots,
            baseline,
            latest,
            task,
        }
    }

    fn merge(roots: &Roots, latest: &Mutex<BTreeMap<u32, Process>>) {
        let roots = lock(roots).clone();
        let now = function_processes(&roots);
        let mut latest = lock(latest);
        for (pid, process) in now {
            latest.insert(pid, process);
        }
    }

    pub fn sample(&self) {
        Cpu::merge(&self.roots, &self.latest);
    }

    /// CPU ticks used since the start, per binary, and the processes seen.
    pub fn used(&self) -> (BTreeMap<String, u64>, usize) {
        self.sample();
        let latest = lock(&self.latest);
        let mut used: BTreeMap<String, u64> = BTreeMap::new();
        for (pid, process) in latest.iter() {
            let before = self.baseline.get(pid).map_or(0, |p| p.ticks);
            *used.entry(process.name.clone()).or_default() += process.ticks.saturating_sub(before);
        }
        (used, latest.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat = "4242 (gas detector) S 1 4242 4242 0 -1 4194304 120 0 0 0 37 5 0 0 20 0 4 0 100 1000 200";
        assert_eq!(cpu_ticks(stat), Some(42));
        assert_eq!(cpu_ticks("garbage"), None);
        assert_eq!(parent(stat), Some(1));
    }
}
