//! Drains the queue to the API, following README's "What a box must do".
//!
//! The oldest reading decides the route; when it is the only one queued it goes alone
//! (the live case), otherwise up to 500 of that route go as one batch (after an outage),
//! oldest first. What each answer means for the queue is [`judge`], a pure function with
//! table tests; the loop only carries it out and waits.
//!
//! Two ways to authenticate ([`Auth`]): the legacy shared key (`x-api-key` on
//! `POST {api_url}/{route}`), or the box's own identity (`[iam]`): each post to
//! `POST {api_url}/things/{thing}/{route}` SigV4-signed with credentials the IoT credentials
//! provider gave this box's certificate, cached for their lifetime (credentials.rs).

use crate::credentials::{CredentialsCache, FetchError, Provider};
use crate::queue::{Entry, Queue};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

pub const MAX_BATCH: usize = 500;
const CONTENT_TYPE: &str = "application/json";

/// How requests are authenticated: decides what a 401/403 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// The legacy shared key in `x-api-key` (or none, against a local gateway).
    ApiKey,
    /// SigV4 with this box's own short-lived credentials (`[iam]`).
    Iam,
}

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
    /// The key, the box's credentials or its group was refused (401/403): stop sending,
    /// keep the queue, say so.
    pub stop: Option<String>,
    /// The API said the credentials or the signature expired: fetch new credentials and
    /// resend at once (the entries are kept), rather than stop.
    pub refresh_credentials: bool,
    /// Lines worth a log entry (invalid items with field and message, refusals).
    pub notes: Vec<String>,
}

/// The function's 403 for a box the registry binds elsewhere: `{"error": "forbidden",
/// "field": "groupid" | "thing", "message"}` (on the whole answer or a batch item); what to
/// tell the person at the box.
fn registry_refusal(answer: &Value) -> Option<String> {
    if answer.get("error").and_then(Value::as_str) != Some("forbidden") {
        return None;
    }
    let message = answer
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("(no message)");
    match answer.get("field").and_then(Value::as_str) {
        Some("groupid") => Some(format!(
            "the registry binds this box to another group than its groupid (403: groupid: {message}): sending stopped, the queue is kept; the operator moves the box with `fleet move` (or groupid here is wrong), then restart"
        )),
        Some("thing") => Some(format!(
            "the registry does not know this box as a sensor box (403: thing: {message}): sending stopped, the queue is kept; the operator enrols it with `fleet enroll`, then restart"
        )),
        _ => None,
    }
}

/// API Gateway's 403 for a signature made with expired credentials, or too long ago (a
/// clock off by more than 5 minutes gives the second), or with a token it does not know
/// (the local gateway forgets what it issued when it restarts): new credentials may help.
fn credentials_expired(parsed: Option<&Value>) -> bool {
    let message = parsed
        .and_then(|v| v.get("message").or_else(|| v.get("Message")))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    message.contains("security token included in the request is expired")
        || message.contains("security token included in the request is invalid")
        || message.contains("signature expired")
}

/// What to do when no credentials could be had for a request: a refused certificate stops
/// the sender as a refused key does; anything else keeps the queue and backs off.
pub fn judge_credentials(entries: &[Entry], error: &FetchError) -> Judgement {
    let mut j = Judgement {
        keep: entries.iter().map(|e| e.seq).collect(),
        ..Judgement::default()
    };
    match error {
        FetchError::Refused(message) => {
            j.stop = Some(format!(
                "no credentials for this box: {message}; sending stopped, the queue is kept; restart once fixed"
            ));
        }
        FetchError::Transient(message) => {
            j.back_off = Some(None);
            j.notes.push(format!(
                "no credentials for this box: {message}; the queue is kept, trying again"
            ));
        }
    }
    j
}

/// The answer to one request: `None` status for network errors and timeouts; `parsed` is
/// the body when it was JSON.
pub fn judge(
    auth: Auth,
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
                    // Not this box's group: kept (it is sendable once the registry is
                    // fixed), and sending stops until a person has done that.
                    Some("forbidden") => {
                        j.keep.push(entry.seq);
                        if j.stop.is_none() {
                            j.stop = item.and_then(registry_refusal);
                        }
                    }
                    // `retry`, or an answer without this item: keep it, resend later.
                    _ => j.keep.push(entry.seq),
                }
            }
            if !j.keep.is_empty() && j.stop.is_none() {
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
            if let Some(refusal) = parsed.and_then(registry_refusal) {
                j.stop = Some(refusal);
            } else if auth == Auth::Iam && credentials_expired(parsed) {
                j.refresh_credentials = true;
                j.notes.push(format!(
                    "the API refused the credentials as stale ({status}: {}): fetching new ones and resending",
                    reason()
                ));
            } else if auth == Auth::Iam {
                j.stop = Some(format!(
                    "the API refused this box's signed request ({status}: {}): sending stopped, the queue is kept; check [iam] (region, role_alias = the stacks' SensorBoxRoleAlias) and thing_name, then restart",
                    reason()
                ));
            } else {
                j.stop = Some(format!(
                    "the API refused the key ({status}: {}): sending stopped, the queue is kept; fix api_key and restart",
                    reason()
                ));
            }
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

/// Per-box identity: the credentials, and what the requests are signed for.
pub struct Iam {
    pub credentials: CredentialsCache<Provider>,
    /// The API's region (the SigV4 scope).
    pub region: String,
    /// This box's thing name: the path `/things/{thing}/{route}`.
    pub thing: String,
}

/// Drains the queue to the API; notes its state for `sensorbox status`.
pub struct Sender {
    client: reqwest::Client,
    base: reqwest::Url,
    api_key: Option<String>,
    iam: Option<Iam>,
    /// "Expired" answers in a row: the first refetches and resends at once, a second one
    /// (fresh credentials refused as expired: a wrong clock) backs off.
    expired_in_a_row: u32,
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
            iam: None,
            expired_in_a_row: 0,
            queue,
            backoff: ResendBackoff::new(Duration::from_millis(500), Duration::from_secs(60)),
            rng: fastrand::Rng::new(),
        }
    }

    /// Signs every request with this box's own credentials (`[iam]`), to
    /// `{api_url}/things/{thing}/{route}`, instead of the shared key.
    pub fn with_iam(mut self, iam: Iam) -> Sender {
        self.iam = Some(iam);
        self
    }

    fn auth(&self) -> Auth {
        if self.iam.is_some() {
            Auth::Iam
        } else {
            Auth::ApiKey
        }
    }

    /// Where a reading of `route` goes: api_url's path, then the route (or
    /// `things/{thing}/{route}` with `[iam]`).
    pub fn url(&self, route: &str) -> reqwest::Url {
        let mut url = self.base.clone();
        let prefix = url.path().trim_end_matches('/').to_owned();
        let path = match &self.iam {
            Some(iam) => format!("{prefix}/things/{}/{route}", iam.thing),
            None => format!("{prefix}/{route}"),
        };
        url.set_path(&path);
        url
    }

    fn with_queue<T>(&self, f: impl FnOnce(&mut Queue) -> T) -> T {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut queue)
    }

    /// Runs until the key, the box's certificate or its group is refused; returns the
    /// reason. `wake` is notified when readings are enqueued.
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

    async fn send(&mut self, entries: &[Entry], batch: bool) -> Judgement {
        let body = if batch {
            let items: Vec<&str> = entries.iter().map(|e| e.body.as_str()).collect();
            format!("[{}]", items.join(","))
        } else {
            entries.first().map(|e| e.body.clone()).unwrap_or_default()
        };
        let route = entries.first().map(|e| e.route.name()).unwrap_or("");
        let url = self.url(route);
        let auth = self.auth();
        let mut request = self
            .client
            .post(url.clone())
            .header("content-type", CONTENT_TYPE);
        if self.iam.is_some() {
            match self.signature(entries, &url, body.as_bytes()).await {
                Ok(headers) => {
                    for (name, value) in headers {
                        request = request.header(name, value);
                    }
                }
                Err(judgement) => return judgement,
            }
        } else if let Some(key) = &self.api_key {
            request = request.header("x-api-key", key);
        }
        let request = request.body(body);
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
                judge(
                    auth,
                    entries,
                    batch,
                    Some(status),
                    parsed.as_ref(),
                    retry_after,
                )
            }
            Err(e) => {
                let cause = crate::credentials::error_chain(&e);
                let kind = if e.is_timeout() {
                    "timed out"
                } else {
                    "failed"
                };
                tracing::warn!(route, readings = entries.len(), "send {kind}: {cause}");
                judge(auth, entries, batch, None, None, None)
            }
        }
    }

    /// The SigV4 headers for one post with this box's cached credentials (fetched when
    /// due, noted for `sensorbox status`), or the judgement when there are none.
    async fn signature(
        &mut self,
        entries: &[Entry],
        url: &reqwest::Url,
        body: &[u8],
    ) -> Result<Vec<(&'static str, String)>, Judgement> {
        let Some(iam) = &mut self.iam else {
            return Ok(Vec::new());
        };
        let fetched = iam.credentials.fetches();
        let credentials = iam
            .credentials
            .get(chrono::Utc::now())
            .await
            .map_err(|e| judge_credentials(entries, &e))?;
        let fetches = iam.credentials.fetches();
        let headers = crate::signing::sign_post(
            url,
            CONTENT_TYPE,
            body,
            &credentials,
            &iam.region,
            std::time::SystemTime::now(),
        );
        if fetches != fetched {
            let note = format!(
                "fetched {fetches}, expires {}",
                credentials.expiration.to_rfc3339()
            );
            self.with_queue(|q| {
                if let Err(e) = q.set_status("credentials", &note) {
                    tracing::warn!("cannot note the credentials for `sensorbox status`: {e}");
                }
            });
        }
        headers.map_err(|e| {
            // Not expected (the URL and the credentials are checked types): kept, retried.
            tracing::error!("{e}");
            judge(Auth::Iam, entries, false, None, None, None)
        })
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
        let mut back_off = j.back_off;
        if j.refresh_credentials {
            if let Some(iam) = &mut self.iam {
                iam.credentials.invalidate();
            }
            self.expired_in_a_row = self.expired_in_a_row.saturating_add(1);
            if self.expired_in_a_row > 1 {
                // Fresh credentials refused as expired too: refetching at once cannot help.
                tracing::warn!(
                    "the API refuses fresh credentials as expired or invalid too: backing off; is this box's clock right (clock = \"ntp\")?"
                );
                back_off = Some(None);
            }
        } else {
            self.expired_in_a_row = 0;
        }
        match back_off {
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
        judge_as(Auth::ApiKey, entries, batch, status, body, retry_after)
    }

    fn judge_as(
        auth: Auth,
        entries: &[Entry],
        batch: bool,
        status: Option<u16>,
        body: &str,
        retry_after: Option<Duration>,
    ) -> Judgement {
        let parsed: Option<Value> = serde_json::from_str(body).ok();
        judge(auth, entries, batch, status, parsed.as_ref(), retry_after)
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
    fn iam_answers_refresh_expired_credentials_and_stop_on_a_wrong_group() {
        let one = entries(1);
        let three = entries(3);
        // API Gateway's 403s for expired credentials or an old signature: refetch, resend.
        for message in [
            "The security token included in the request is expired",
            "The security token included in the request is invalid.",
            "Signature expired: 20261204T160000Z is now earlier than 20261204T160100Z (20261204T160600Z - 5 min.)",
        ] {
            let body = serde_json::json!({ "message": message }).to_string();
            let j = judge_as(Auth::Iam, &three, true, Some(403), &body, None);
            assert!(j.refresh_credentials && j.stop.is_none(), "{message}");
            assert_eq!((j.keep, j.back_off), (vec![1, 2, 3], None), "{message}");
            assert!(j.dead.is_empty() && j.remove.is_empty());
            // The shared key has no credentials to refresh: a refusal as before.
            let j = judge_as(Auth::ApiKey, &one, false, Some(403), &body, None);
            assert!(!j.refresh_credentials && j.stop.is_some(), "{message}");
        }

        // The function: the registry binds this thing to another group, or knows no such box.
        let group = r#"{"error":"forbidden","field":"groupid","message":"box-1 belongs to group 3, not 2"}"#;
        for auth in [Auth::Iam, Auth::ApiKey] {
            let j = judge_as(auth, &one, false, Some(403), group, None);
            let stop = j.stop.unwrap_or_default();
            assert!(
                stop.contains("fleet move") && stop.contains("group 3"),
                "{stop}"
            );
            assert_eq!((j.keep, j.refresh_credentials), (vec![1], false));
        }
        let thing = r#"{"error":"forbidden","field":"thing","message":"no such thing"}"#;
        let j = judge_as(Auth::Iam, &one, false, Some(403), thing, None);
        let stop = j.stop.unwrap_or_default();
        assert!(
            stop.contains("fleet enroll") && stop.contains("does not know"),
            "{stop}"
        );

        // As a batch item: stored ones go, the refused ones stay, sending stops.
        let items = r#"{"status":"ok","items":[{"index":0,"status":"stored"},
            {"index":1,"status":"forbidden","error":"forbidden","field":"groupid","message":"group 3"},
            {"index":2,"status":"forbidden","error":"forbidden","field":"groupid","message":"group 3"}]}"#;
        let j = judge_as(Auth::Iam, &three, true, Some(200), items, None);
        assert_eq!((j.remove, j.keep), (vec![1], vec![2, 3]));
        assert!(j.stop.unwrap_or_default().contains("fleet move"));

        // Any other 403 with [iam] (API Gateway's own refusal of the signature): stop.
        let j = judge_as(
            Auth::Iam,
            &one,
            false,
            Some(403),
            r#"{"message":"User: arn:aws:sts::1:assumed-role/box/box-2 is not authorized to perform: execute-api:Invoke"}"#,
            None,
        );
        let stop = j.stop.unwrap_or_default();
        assert!(
            stop.contains("[iam]") && stop.contains("not authorized"),
            "{stop}"
        );
        assert!(!j.refresh_credentials);
    }

    #[test]
    fn no_credentials_stops_on_a_refusal_and_backs_off_otherwise() {
        let two = entries(2);
        let refused = FetchError::Refused(
            "the credentials provider refused this box's certificate: revoked, inactive or not enrolled?".into(),
        );
        let j = judge_credentials(&two, &refused);
        assert_eq!((j.keep, j.back_off), (vec![1, 2], None));
        let stop = j.stop.unwrap_or_default();
        assert!(
            stop.contains("revoked") && stop.contains("queue is kept"),
            "{stop}"
        );

        let j = judge_credentials(&two, &FetchError::Transient("timed out".into()));
        assert_eq!((j.keep, j.back_off, j.stop), (vec![1, 2], Some(None), None));
        assert!(j.notes[0].contains("timed out"));
    }

    #[tokio::test]
    async fn a_stale_credentials_answer_resends_at_once_only_once_in_a_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = Queue::open(&dir.path().join("q.db"), 10).expect("queue");
        let base = reqwest::Url::parse("http://127.0.0.1:9").expect("url");
        let mut sender = Sender::new(
            reqwest::Client::new(),
            base,
            None,
            Arc::new(Mutex::new(queue)),
        );
        sender.backoff = ResendBackoff::new(Duration::from_millis(1), Duration::from_millis(1));
        let stale = || Judgement {
            keep: vec![1],
            refresh_credentials: true,
            ..Judgement::default()
        };
        assert_eq!(sender.apply(stale()).await, None);
        assert_eq!((sender.expired_in_a_row, sender.backoff.failures), (1, 0));
        // Refused as stale again with fresh credentials: back off this time.
        assert_eq!(sender.apply(stale()).await, None);
        assert_eq!((sender.expired_in_a_row, sender.backoff.failures), (2, 1));
        // Any other answer ends the run.
        sender.apply(Judgement::default()).await;
        assert_eq!((sender.expired_in_a_row, sender.backoff.failures), (0, 0));
    }

    #[test]
    fn iam_posts_go_to_the_things_routes_under_api_urls_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = Queue::open(&dir.path().join("q.db"), 10).expect("queue");
        let queue = Arc::new(Mutex::new(queue));
        let base = reqwest::Url::parse("https://abc.execute-api.eu-west-1.amazonaws.com/prod")
            .expect("url");
        let sender = Sender::new(reqwest::Client::new(), base.clone(), None, queue.clone());
        assert_eq!(
            sender.url("dust").as_str(),
            "https://abc.execute-api.eu-west-1.amazonaws.com/prod/dust"
        );
        crate::tls::install_crypto_provider();
        let certs = local_aws::Certs::ensure(&dir.path().join("ca")).expect("CA");
        let device = certs.device("box-1").expect("device certificate");
        let iam = crate::config::IamConfig {
            credentials_url: reqwest::Url::parse(
                "https://localhost:1/role-aliases/box/credentials",
            )
            .expect("url"),
            role_alias: "box".into(),
            region: "eu-west-1".into(),
            ca: certs.ca(),
            cert: device.cert,
            key: device.key,
        };
        let provider =
            Provider::new(&iam, "box-1", Duration::from_secs(1)).expect("provider client");
        let sender = Sender::new(reqwest::Client::new(), base, None, queue).with_iam(Iam {
            credentials: CredentialsCache::new(provider),
            region: iam.region,
            thing: "box-1".into(),
        });
        assert_eq!(
            sender.url("dust").as_str(),
            "https://abc.execute-api.eu-west-1.amazonaws.com/prod/things/box-1/dust"
        );
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
