//! Drains the queue to the API, following README's "What a box must do".
//!
//! The oldest reading decides the route; when it is the only one queued it goes alone
//! (the live case), otherwise up to 500 of that route go as one batch (after an outage),
//! oldest first. What each answer means for the queue is [`judge`], a pure function with
//! table tests; the loop only carries it out and waits.

use crate::queue::{Entry, Queue};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

pub const MAX_BATCH: usize = 500;

/// What to do with the entries of one request after its answer.
#[derive(Debug, Default, PartialEq)]
pub struct Judgement {
    /// Done: stored, already stored, or refused for good as a batch item (`invalid`).
    pub remove: Vec<i64>,
    /// Refused for good (400/413/422 as a whole, or a `rejected` batch item): kept in the
    /// dead-letter table with the status and reason, never resent.
    pub dead: Vec<(i64, u16, String)>,
    /// Items the API asked to resend (`retry`), or all of them on a transient failure.
    pub keep: Vec<i64>,
    /// Wait before the next request: transient failure, honouring `Retry-After`.
    pub back_off: Option<Option<Duration>>,
    /// The batch as a whole was refused: send its readings one by one to find the bad one.
    pub split: bool,
    /// The key was refused (401/403): stop sending, keep the queue, say so.
    pub stop: Option<String>,
    /// Lines worth a log entry (invalid items with field and message, refusals).
    pub notes: Vec<String>,
}

/// The answer to one request: `None` status for network errors and timeouts; `parsed` is
/// the body when it was JSON.
pub fn judge(
    entries: &[Entry],
    batch: bool,
    status: Option<u16>,
    parsed: Option<&Value>,
    retry_after: Option<Duration>,
) -> Judgement {
    let all = || entries.iter().map(|e| e.seq).collect::<Vec<_>>();
    let mut j = Judgement::default();
    let Some(status) = status else {
        j.keep = all();
        j.back_off = Some(None);
        return j;
    };
    let reason = || match parsed {
        Some(v) => {
            let field = v.get("field").and_then(Value::as_str).unwrap_or("");
            let message = v
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)");
            if field.is_empty() {
                message.to_string()
            } else {
                format!("{field}: {message}")
            }
        }
        None => format!("HTTP {status}"),
    };
    let items = parsed
        .and_then(|v| v.get("items"))
        .and_then(Value::as_array);
    match status {
        200 | 503 if batch && items.is_some() => {
            let items = items.map(Vec::as_slice).unwrap_or_default();
            for (index, entry) in entries.iter().enumerate() {
                let item = items
                    .iter()
                    .find(|i| i.get("index").and_then(Value::as_u64) == Some(index as u64));
                match item.and_then(|i| i.get("status")).and_then(Value::as_str) {
                    Some("stored" | "already_stored") => j.remove.push(entry.seq),
                    Some("invalid") => {
                        let item = item.cloned().unwrap_or_default();
                        j.notes.push(format!(
                            "reading {} refused for good: {}: {}",
                            entry.doc_id,
                            item.get("field").and_then(Value::as_str).unwrap_or(""),
                            item.get("message").and_then(Value::as_str).unwrap_or("")
                        ));
                        j.remove.push(entry.seq);
                    }
                    // Valid, but refused for good downstream (say a mapping conflict):
                    // resending can never store it, so it goes to the dead letters.
                    Some("rejected") => {
                        let message = item
                            .and_then(|i| i.get("message"))
                            .and_then(Value::as_str)
                            .unwrap_or("(no message)")
                            .to_string();
                        j.notes.push(format!(
                            "reading {} rejected for good: {message}; moved to dead letters",
                            entry.doc_id
                        ));
                        j.dead.push((entry.seq, 422, message));
                    }
                    // `retry`, or an answer without this item: keep it, resend later.
                    _ => j.keep.push(entry.seq),
                }
            }
            if !j.keep.is_empty() {
                j.back_off = Some(retry_after);
            }
        }
        200 => j.remove = all(),
        400 | 413 if batch && entries.len() > 1 => {
            j.keep = all();
            j.split = true;
            j.notes.push(format!(
                "batch refused ({status}: {}); resending one by one",
                reason()
            ));
        }
        // 422: valid, but refused for good downstream; like 400, final.
        400 | 413 | 422 => {
            let reason = reason();
            j.notes.push(format!(
                "reading {} refused ({status}): {reason}; moved to dead letters",
                entries.first().map(|e| e.doc_id.as_str()).unwrap_or("")
            ));
            j.dead = entries
                .iter()
                .map(|e| (e.seq, status, reason.clone()))
                .collect();
        }
        401 | 403 => {
            j.keep = all();
            j.stop = Some(format!(
                "the API refused the key ({status}: {}): sending stopped, the queue is kept; fix api_key and restart",
                reason()
            ));
        }
        429 | 500..=599 => {
            j.keep = all();
            j.back_off = Some(retry_after);
        }
        // 404/405 and the like: a wrong `api_url`, not a bad reading. Keep everything.
        _ => {
            j.keep = all();
            j.back_off = Some(retry_after);
            j.notes.push(format!(
                "unexpected answer {status} ({}): check api_url; the queue is kept",
                reason()
            ));
        }
    }
    j
}

/// "stored 498, already_stored 2" from a batch answer, for the log.
fn tally_items(parsed: Option<&Value>) -> Option<String> {
    let items = parsed?.get("items")?.as_array()?;
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for status in items
        .iter()
        .filter_map(|i| i.get("status").and_then(Value::as_str))
    {
        match counts.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => counts.push((status, 1)),
        }
    }
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
    Some(parts.join(", "))
}

/// Exponential backoff with full jitter, at least `Retry-After`.
#[derive(Debug, Clone)]
pub struct ResendBackoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl ResendBackoff {
    pub fn new(base: Duration, cap: Duration) -> ResendBackoff {
        ResendBackoff {
            base,
            cap,
            failures: 0,
        }
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn next(&mut self, retry_after: Option<Duration>, rng: &mut fastrand::Rng) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
        let jitter = Duration::from_secs_f64(exp.as_secs_f64() * rng.f64());
        jitter.max(retry_after.unwrap_or_default().min(self.cap))
    }
}

/// How a request went, for the loop and `sensorbox status`.
pub struct Sender {
    client: reqwest::Client,
    base: reqwest::Url,
    api_key: Option<String>,
    queue: Arc<Mutex<Queue>>,
    backoff: ResendBackoff,
    rng: fastrand::Rng,
}

impl Sender {
    pub fn new(
        client: reqwest::Client,
        base: reqwest::Url,
        api_key: Option<String>,
        queue: Arc<Mutex<Queue>>,
    ) -> Sender {
        Sender {
            client,
            base,
            api_key,
            queue,
            backoff: ResendBackoff::new(Duration::from_millis(500), Duration::from_secs(60)),
            rng: fastrand::Rng::new(),
        }
    }

    fn with_queue<T>(&self, f: impl FnOnce(&mut Queue) -> T) -> T {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut queue)
    }

    /// Runs until the key is refused; returns the reason. `wake` is notified when readings
    /// are enqueued.
    pub async fn run(mut self, wake: Arc<Notify>) -> String {
        loop {
            let entries = match self.with_queue(|q| q.next_batch(MAX_BATCH)) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!("{e}");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            if entries.is_empty() {
                let _ = tokio::time::timeout(Duration::from_secs(5), wake.notified()).await;
                continue;
            }
            let judgement = self.send(&entries, entries.len() > 1).await;
            if judgement.split {
                for entry in &entries {
                    let single = std::slice::from_ref(entry);
                    let j = self.send(single, false).await;
                    if let Some(reason) = self.apply(j).await {
                        return reason;
                    }
                }
                continue;
            }
            if let Some(reason) = self.apply(judgement).await {
                return reason;
            }
        }
    }

    async fn send(&self, entries: &[Entry], batch: bool) -> Judgement {
        let body = if batch {
            let items: Vec<&str> = entries.iter().map(|e| e.body.as_str()).collect();
            format!("[{}]", items.join(","))
        } else {
            entries.first().map(|e| e.body.clone()).unwrap_or_default()
        };
        let route = entries.first().map(|e| e.route.name()).unwrap_or("");
        let mut url = self.base.clone();
        let path = format!("{}/{route}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        let mut request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = &self.api_key {
            request = request.header("x-api-key", key);
        }
        let started = std::time::Instant::now();
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = response.text().await.unwrap_or_default();
                let parsed: Option<Value> = serde_json::from_str(&text).ok();
                let tally = tally_items(parsed.as_ref());
                tracing::info!(
                    route,
                    status,
                    readings = entries.len(),
                    ms = started.elapsed().as_millis() as u64,
                    items = tally.as_deref().unwrap_or("-"),
                    "sent"
                );
                judge(entries, batch, Some(status), parsed.as_ref(), retry_after)
            }
            Err(e) => {
                let mut cause = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(inner) = source {
                    cause.push_str(": ");
                    cause.push_str(&inner.to_string());
                    source = inner.source();
                }
                let kind = if e.is_timeout() {
                    "timed out"
                } else {
                    "failed"
                };
                tracing::warn!(route, readings = entries.len(), "send {kind}: {cause}");
                judge(entries, batch, None, None, None)
            }
        }
    }

    /// Carries out a judgement; `Some(reason)` when sending must stop.
    async fn apply(&mut self, j: Judgement) -> Option<String> {
        for note in &j.notes {
            tracing::warn!("{note}");
        }
        let queue = self.queue.clone();
        let (remove, dead) = (j.remove.clone(), j.dead.clone());
        let stored = tokio::task::spawn_blocking(move || {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            q.remove(&remove)?;
            for (seq, status, reason) in &dead {
                q.dead_letter(&[*seq], *status, reason)?;
            }
            if !remove.is_empty() {
                q.set_status("last_send", &chrono::Utc::now().to_rfc3339())?;
            }
            Ok::<_, crate::queue::QueueError>(())
        })
        .await;
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("{e}"),
            Err(e) => tracing::error!("queue task failed: {e}"),
        }
        if let Some(reason) = j.stop {
            return Some(reason);
        }
        match j.back_off {
            Some(retry_after) => {
                let wait = self.backoff.next(retry_after, &mut self.rng);
                tracing::info!(
                    waiting_ms = wait.as_millis() as u64,
                    kept = j.keep.len(),
                    "backing off"
                );
                tokio::time::sleep(wait).await;
            }
            None => self.backoff.reset(),
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use sensor_model::Sensor;

    /// `judge` of an answer given as text, as it comes off the wire.
    fn judge_text(
        entries: &[Entry],
        batch: bool,
        status: Option<u16>,
        body: &str,
        retry_after: Option<Duration>,
    ) -> Judgement {
        let parsed: Option<Value> = serde_json::from_str(body).ok();
        judge(entries, batch, status, parsed.as_ref(), retry_after)
    }

    fn entries(n: i64) -> Vec<Entry> {
        (1..=n)
            .map(|seq| Entry {
                seq,
                route: Sensor::Gasdetector,
                doc_id: format!("id{seq}"),
                created: Utc::now(),
                body: "{}".into(),
            })
            .collect()
    }

    #[test]
    fn single_answers() {
        let one = entries(1);
        let j = judge_text(&one, false, Some(200), r#"{"status":"ok"}"#, None);
        assert_eq!((j.remove, j.back_off), (vec![1], None));

        let j = judge_text(
            &one,
            false,
            Some(400),
            r#"{"error":"invalid_reading","field":"no2.value","message":"not a number"}"#,
            None,
        );
        assert_eq!(
            j.dead,
            vec![(1, 400, "no2.value: not a number".to_string())]
        );
        assert!(j.remove.is_empty() && j.keep.is_empty());

        let j = judge_text(&one, false, Some(413), "", None);
        assert_eq!(j.dead[0].1, 413);

        for status in [429, 500, 502, 503, 504] {
            let j = judge_text(&one, false, Some(status), "", Some(Duration::from_secs(2)));
            assert_eq!(j.keep, vec![1], "{status}");
            assert_eq!(j.back_off, Some(Some(Duration::from_secs(2))), "{status}");
        }

        let j = judge_text(&one, false, None, "", None);
        assert_eq!((j.keep, j.back_off), (vec![1], Some(None)));

        let j = judge_text(&one, false, Some(403), r#"{"message":"Forbidden"}"#, None);
        assert!(j.stop.is_some() && j.keep == vec![1] && j.dead.is_empty());

        let j = judge_text(&one, false, Some(404), "", None);
        assert!(j.keep == vec![1] && j.dead.is_empty() && j.back_off.is_some());
    }

    #[test]
    fn batch_items_decide_one_by_one() {
        let three = entries(3);
        let body = r#"{"status":"retry","items":[
            {"index":0,"status":"stored","id":"a"},
            {"index":1,"status":"invalid","field":"co.value","message":"bad"},
            {"index":2,"status":"retry","id":"c"}]}"#;
        let j = judge_text(&three, true, Some(503), body, Some(Duration::from_secs(1)));
        assert_eq!(j.remove, vec![1, 2]);
        assert_eq!(j.keep, vec![3]);
        assert_eq!(j.back_off, Some(Some(Duration::from_secs(1))));
        assert!(j.notes[0].contains("co.value"));

        let ok = r#"{"status":"ok","items":[{"index":0,"status":"already_stored"},
            {"index":1,"status":"stored"},{"index":2,"status":"stored"}]}"#;
        let j = judge_text(&three, true, Some(200), ok, None);
        assert_eq!((j.remove, j.back_off), (vec![1, 2, 3], None));

        let j = judge_text(&three, true, Some(413), "", None);
        assert!(j.split && j.dead.is_empty() && j.keep.len() == 3);

        // Valid but refused for good downstream: dead-lettered, never resent.
        let rejected = r#"{"status":"ok","items":[{"index":0,"status":"stored"},
            {"index":1,"status":"rejected","id":"b","message":"indexing refused: 400 mapper_parsing_exception"},
            {"index":2,"status":"stored"}]}"#;
        let j = judge_text(&three, true, Some(200), rejected, None);
        assert_eq!((j.remove, j.keep, j.back_off), (vec![1, 3], vec![], None));
        assert_eq!(j.dead.len(), 1);
        assert_eq!((j.dead[0].0, j.dead[0].1), (2, 422));
        assert!(j.dead[0].2.contains("mapper_parsing_exception"));
        let single = r#"{"error":"rejected","id":"a","message":"indexing refused"}"#;
        let j = judge_text(&three[..1], false, Some(422), single, None);
        assert_eq!((j.dead.len(), j.keep.len()), (1, 0));

        // A 503 from something in front of the function: no items, keep everything.
        let j = judge_text(&three, true, Some(503), "<html>", None);
        assert_eq!(j.keep, vec![1, 2, 3]);
    }

    #[test]
    fn backoff_grows_with_full_jitter_and_honours_retry_after() {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut b = ResendBackoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let waits: Vec<Duration> = (0..12).map(|_| b.next(None, &mut rng)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(10)));
        assert!(waits[..2].iter().all(|w| *w <= Duration::from_millis(200)));
        assert!(b.next(Some(Duration::from_secs(7)), &mut rng) >= Duration::from_secs(7));
        b.reset();
        assert!(b.next(None, &mut rng) <= Duration::from_millis(100));
    }
}
