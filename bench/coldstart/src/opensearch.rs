//! OpenSearch for the functions: an in-process `_bulk` stub that answers at once, or a
//! real osmem-server started as a child.

use crate::server::{reply, Body};
use crate::Result;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;

/// Answers at once, as a real cluster would if writes were free: `POST /_bulk` with one
/// 201 item per action line (`create` or `index`, `_index`/`_id` echoed), and
/// `POST /{index}/_doc` (the Python baseline) with 201 and a generated `_id`.
pub async fn opensearch_stub(req: Request<Incoming>) -> Response<Body> {
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

pub async fn start_osmem(bin: &Path) -> Result<(tokio::process::Child, String)> {
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
