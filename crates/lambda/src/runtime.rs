//! The Lambda entry point the three functions call: `lambda_http`'s adapter, plus one
//! guard in front of it.
//!
//! `lambda_http` decodes an envelope's `isBase64Encoded` body with `.expect(..)`
//! (`aws_lambda_events::encodings::Body::from_maybe_encoded`), so base64 garbage panics
//! inside the adapter; `lambda_runtime` catches the panic and reports a function error,
//! which API Gateway turns into a bare 502. The guard is a layer on the raw invocation
//! bytes: when an envelope says its body is base64 but the body does not decode, it
//! replaces the body with a per-process marker (and clears the flag), and the handler
//! answers the marked request with a 400 naming `body`, like any other bad body.
//!
//! `run` is `lambda_http::run` (1.3: `Runtime::new(Adapter::from(handler))` with the
//! `TracingLayer`) plus the guard layer, minus the `TracingLayer` (the handler opens its
//! own request span). `lambda_http::Adapter` is public but
//! `#[doc(hidden)]`: recheck this file when upgrading lambda_http.

use crate::app::App;
use crate::request::RequestError;
use crate::response::Reply;
use base64::Engine;
use lambda_http::lambda_runtime::{LambdaInvocation, Runtime};
use lambda_http::tower::{Layer, Service};
use lambda_http::{service_fn, Adapter, Body, Error, Request, Response};
use sensor_core::ports::{AlarmStore, Indexer, Publisher, Registry};
use sensor_model::domain::error::ValidationError;
use serde_json::Value;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Serves invocations until the runtime stops: the function's whole `main` after init.
pub async fn run<P: Publisher, I: Indexer, A: AlarmStore, R: Registry>(
    app: App<P, I, A, R>,
) -> Result<(), Error> {
    let guard = Base64Guard::new();
    let (app, guard_ref) = (&app, &guard);
    let handler = service_fn(move |request: Request| answer(app, guard_ref, request));
    // No `TracingLayer`: the handler's own request span (observability::request) carries
    // the same requestId (and the X-Ray trace id) plus function, sensor and the reading's
    // ids; two spans would print every id twice in text logs.
    Runtime::new(Adapter::from(handler))
        .layer(guard.layer())
        .run()
        .await
}

/// What the runtime's handler does per request: a guarded (undecodable base64) body is a
/// 400 naming `body`; anything else goes to [`App::invoke`].
pub async fn answer<P: Publisher, I: Indexer, A: AlarmStore, R: Registry>(
    app: &App<P, I, A, R>,
    guard: &Base64Guard,
    request: Request,
) -> Result<Response<Body>, Error> {
    if guard.is_marked(&request) {
        let reply = Reply::from_request_error(&RequestError::Invalid(ValidationError::new(
            "body",
            "is marked base64-encoded (isBase64Encoded) but is not valid base64",
        )));
        let reply = app.reject(&request, reply, "invalid_base64").await;
        return Ok(reply.to_response());
    }
    app.invoke(request).await
}

/// Finds envelopes whose base64 body cannot be decoded and marks them.
#[derive(Clone, Debug)]
pub struct Base64Guard {
    /// Random per process: a client cannot forge a marked body (and would only earn
    /// itself a 400 if it did).
    marker: Arc<str>,
}

impl Default for Base64Guard {
    fn default() -> Self {
        Self::new()
    }
}

impl Base64Guard {
    pub fn new() -> Base64Guard {
        let marker = format!(
            "\u{1}invalid-base64-body:{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..)
        );
        Base64Guard {
            marker: marker.into(),
        }
    }

    /// The `lambda_runtime` layer applying [`Base64Guard::rewrite`] to every invocation.
    pub fn layer(&self) -> Base64GuardLayer {
        Base64GuardLayer {
            guard: self.clone(),
        }
    }

    /// `Some(new event)` when `event` is an envelope with `"isBase64Encoded": true` and a
    /// body that is not valid base64 (the decoder `lambda_http` uses); `None` otherwise,
    /// including for anything that is not JSON (left to `lambda_http` to report).
    pub fn rewrite(&self, event: &[u8]) -> Option<Vec<u8>> {
        if !mentions_base64_true(event) {
            return None;
        }
        // The common case (a valid body) is settled on a borrowed view of the two fields,
        // without building the whole event as a `Value`: API Gateway REST envelopes are
        // base64 by default, so this runs on nearly every invoke.
        let envelope: Envelope = serde_json::from_slice(event).ok()?;
        let body = envelope.body?;
        if !envelope.is_base64_encoded
            || base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .is_ok()
        {
            return None;
        }
        let mut value: Value = serde_json::from_slice(event).ok()?;
        let object = value.as_object_mut()?;
        object.insert("isBase64Encoded".into(), Value::Bool(false));
        object.insert("body".into(), Value::String(self.marker.to_string()));
        serde_json::to_vec(&value).ok()
    }

    /// Whether `request` is one [`Base64Guard::rewrite`] marked.
    pub fn is_marked(&self, request: &Request) -> bool {
        request.body().as_ref() == self.marker.as_bytes()
    }
}

/// The two fields of an API Gateway / Function URL envelope the guard looks at; every
/// other field is skipped unparsed. Anything that does not fit (not an object, a
/// non-boolean flag, a non-string body) is left to `lambda_http` to report.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "isBase64Encoded", default)]
    is_base64_encoded: bool,
    #[serde(borrow, default)]
    body: Option<std::borrow::Cow<'a, str>>,
}

/// Cheap pre-check so ordinary events are not parsed twice: some `"isBase64Encoded"`
/// key followed by `true`.
fn mentions_base64_true(event: &[u8]) -> bool {
    const KEY: &[u8] = b"\"isBase64Encoded\"";
    let mut rest = event;
    while let Some(at) = rest.windows(KEY.len()).position(|w| w == KEY) {
        rest = &rest[at + KEY.len()..];
        let after = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace() && *b != b':')
            .map_or(&[][..], |start| &rest[start..]);
        if after.starts_with(b"true") {
            return true;
        }
    }
    false
}

#[derive(Clone, Debug)]
pub struct Base64GuardLayer {
    guard: Base64Guard,
}

impl<S> Layer<S> for Base64GuardLayer {
    type Service = Base64GuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Base64GuardService {
            inner,
            guard: self.guard.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Base64GuardService<S> {
    inner: S,
    guard: Base64Guard,
}

impl<S> Service<LambdaInvocation> for Base64GuardService<S>
where
    S: Service<LambdaInvocation, Response = (), Error = Error>,
{
    type Response = ();
    type Error = Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut invocation: LambdaInvocation) -> Self::Future {
        if let Some(event) = self.guard.rewrite(&invocation.body) {
            invocation.body = event.into();
        }
        self.inner.call(invocation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_undecodable_flagged_bodies_are_rewritten() {
        let guard = Base64Guard::new();
        let event = |flag: Value, body: Value| {
            serde_json::to_vec(
                &json!({"httpMethod": "POST", "isBase64Encoded": flag, "body": body}),
            )
            .unwrap()
        };
        assert!(guard.rewrite(&event(json!(true), json!("e30="))).is_none());
        assert!(guard.rewrite(&event(json!(false), json!("!!"))).is_none());
        assert!(guard.rewrite(&event(json!(true), json!(null))).is_none());
        assert!(guard.rewrite(b"not json").is_none());
        assert!(guard.rewrite(b"{\"groupid\": 1}").is_none());
        for garbage in ["!!not base64!!", "Zm9v=", "e30", "\u{e9}"] {
            let rewritten = guard.rewrite(&event(json!(true), json!(garbage))).unwrap();
            let v: Value = serde_json::from_slice(&rewritten).unwrap();
            assert_eq!(v["isBase64Encoded"], json!(false), "{garbage}");
            assert_eq!(v["body"].as_str(), Some(&*guard.marker));
            assert_eq!(v["httpMethod"], "POST");
        }
    }

    #[test]
    fn pre_check_allows_whitespace_and_skips_false() {
        assert!(mentions_base64_true(b"{\"isBase64Encoded\" :\n true}"));
        assert!(!mentions_base64_true(b"{\"isBase64Encoded\": false}"));
        assert!(mentions_base64_true(
            b"{\"a\": \"\\\"isBase64Encoded\\\"\", \"isBase64Encoded\":true}"
        ));
        assert!(!mentions_base64_true(b"{\"isBase64Encoded\""));
    }
}
