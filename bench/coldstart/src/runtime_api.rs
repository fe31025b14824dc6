//! The local Lambda Runtime API a function process polls: it hands out queued events
//! (`GET /invocation/next`), records when the first poll came, and passes each response
//! (or error) back to whoever queued the event.

use crate::server::{reply, whole_body, Body};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

pub struct Job {
    pub event: Bytes,
    pub reply: oneshot::Sender<Outcome>,
}

pub struct Outcome {
    pub at: Instant,
    pub ok: bool,
    pub body: Bytes,
}

pub struct RuntimeApi {
    pub function_name: String,
    pub jobs: tokio::sync::Mutex<mpsc::Receiver<Job>>,
    pub pending: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    pub first_next: Mutex<Option<Instant>>,
    pub init_error: Mutex<Option<String>>,
    pub seq: AtomicU64,
}

const API_PREFIX: &str = "/2018-06-01/runtime";

fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

pub async fn runtime_api(api: Arc<RuntimeApi>, req: Request<Incoming>) -> Response<Body> {
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
        let text = String::from_utf8_lossy(&whole_body(req).await).into_owned();
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
    let body = whole_body(req).await;
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
