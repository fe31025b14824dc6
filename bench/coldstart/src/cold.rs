//! Cold starts: a fresh process per invoke, timed from its start to the first
//! `GET /invocation/next` (init) and to the response of one real invoke, with its peak RSS.

use crate::cli::{Options, Target};
use crate::function::{check_response, peak_rss_kib, Function};
use crate::Result;
use bytes::Bytes;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One discarded start per target (page cache, Python bytecode), then `o.runs` starts per
/// target, round-robin so background load on the machine spreads over all of them.
pub async fn cold_starts<'a>(
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

pub struct Sample {
    pub init: Duration,
    pub first_response: Duration,
    pub rss_kib: u64,
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
    // A box's own route (`/things/{thing}/<sensor>`): the box of this group, which the
    // harness's registry stub binds to it (`box-<groupid>`).
    if event.pointer("/pathParameters/thing").is_some() {
        let thing = format!("box-{groupid}");
        event["pathParameters"]["thing"] = Value::String(thing.clone());
        if let Some(path) = event.get("path").and_then(Value::as_str) {
            let sensor = path.rsplit('/').next().unwrap_or("gasdetector").to_string();
            event["path"] = Value::String(format!("/things/{thing}/{sensor}"));
        }
    }
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
