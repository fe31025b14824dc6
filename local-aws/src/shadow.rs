//! The Device Shadow data-plane API of the local IoT endpoint, in the real wire format
//! (restJson1, as `aws-sdk-iotdataplane` and moto speak it):
//! - `GET /things/{thing}/shadow[?name=]`: `{"state": {"desired", "reported", "delta"},
//!   "metadata": {...}, "version", "timestamp"}`, or 404 `ResourceNotFoundException`;
//! - `POST /things/{thing}/shadow[?name=]` with `{"state": {...}, "version"?,
//!   "clientToken"?}`: merges the state (objects key by key, `null` deletes, arrays
//!   replace), bumps the version; a `version` that is not the current one is 409
//!   `ConflictException` (the optimistic lock), and so is a version for a shadow that
//!   does not exist yet;
//! - `DELETE /things/{thing}/shadow[?name=]`: `{"version", "timestamp"}`;
//! - `GET /api/things/shadow/ListNamedShadowsForThing/{thing}`.
//!
//! Without `?name=` it is the classic (unnamed) shadow. A thing needs no registration
//! here. Documents are kept in memory, at most 8 KB of request payload each, as on AWS.

use crate::aws_error::error;
use crate::http::{self, BodyError, HttpResponse};
use crate::thing_name::{valid_shadow_name, valid_thing_name, MAX_SHADOW, MAX_THING};
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// AWS IoT: a shadow document (the update payload) is at most 8 KB.
pub const MAX_DOCUMENT: usize = 8 * 1024;

#[derive(Debug, Clone, Default)]
struct Shadow {
    desired: Option<Value>,
    reported: Option<Value>,
    metadata_desired: Option<Value>,
    metadata_reported: Option<Value>,
    version: u64,
}

/// Why an update was refused: the HTTP status and the error type AWS names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub code: u16,
    pub error_type: &'static str,
    pub message: String,
}

/// Every shadow of the endpoint: (thing, shadow name or "" for the classic one).
#[derive(Debug, Clone, Default)]
pub struct Shadows {
    documents: Arc<Mutex<HashMap<(String, String), Shadow>>>,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Merges `patch` into `target` as the shadow service does; `None` when nothing is left.
fn merge(target: Option<Value>, patch: &Value) -> Option<Value> {
    match (target, patch) {
        (_, Value::Null) => None,
        (Some(Value::Object(mut object)), Value::Object(fields)) => {
            for (key, value) in fields {
                if let Some(merged) = merge(object.remove(key), value) {
                    object.insert(key.clone(), merged);
                }
            }
            Some(Value::Object(object))
        }
        (_, Value::Object(fields)) => merge(
            Some(Value::Object(Map::new())),
            &Value::Object(fields.clone()),
        ),
        (_, other) => Some(other.clone()),
    }
}

/// The metadata of `patch`: the same shape with `{"timestamp": t}` at every leaf.
fn stamp(patch: &Value, t: u64) -> Value {
    match patch {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        if v.is_null() {
                            Value::Null
                        } else {
                            stamp(v, t)
                        },
                    )
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| stamp(v, t)).collect()),
        _ => json!({ "timestamp": t }),
    }
}

/// Fields of `desired` that `reported` does not match.
fn delta(desired: &Value, reported: Option<&Value>) -> Option<Value> {
    match (desired, reported) {
        (Value::Object(want), Some(Value::Object(have))) => {
            let differing: Map<String, Value> = want
                .iter()
                .filter_map(|(k, v)| delta(v, have.get(k)).map(|d| (k.clone(), d)))
                .collect();
            (!differing.is_empty()).then_some(Value::Object(differing))
        }
        (want, Some(have)) if want == have => None,
        (want, _) => Some(want.clone()),
    }
}

impl Shadow {
    fn document(&self, t: u64) -> Value {
        let mut state = Map::new();
        let mut metadata = Map::new();
        if let Some(desired) = &self.desired {
            state.insert("desired".into(), desired.clone());
            if let Some(d) = delta(desired, self.reported.as_ref()) {
                state.insert("delta".into(), d);
            }
        }
        if let Some(reported) = &self.reported {
            state.insert("reported".into(), reported.clone());
        }
        if let Some(m) = &self.metadata_desired {
            metadata.insert("desired".into(), m.clone());
        }
        if let Some(m) = &self.metadata_reported {
            metadata.insert("reported".into(), m.clone());
        }
        json!({"state": state, "metadata": metadata, "version": self.version, "timestamp": t})
    }
}

fn not_found(thing: &str, name: &str) -> HttpResponse {
    let shown = if name.is_empty() {
        thing.to_string()
    } else {
        format!("{thing}~{name}")
    };
    error(
        404,
        "ResourceNotFoundException",
        &format!("No shadow exists with name: '{shown}'"),
    )
}

fn invalid(message: &str) -> HttpResponse {
    error(400, "InvalidRequestException", message)
}

impl Shadows {
    fn documents(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Shadow>> {
        self.documents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers a request under `/things/` or `/api/things/`; `None` if it is not a
    /// shadow route.
    pub async fn handle(&self, request: Request<Incoming>, path: &str) -> Option<HttpResponse> {
        if let Some(raw) = path.strip_prefix("/api/things/shadow/ListNamedShadowsForThing/") {
            let thing = http::percent_decode(raw)?;
            let mut names: Vec<String> = self
                .documents()
                .keys()
                .filter(|(t, n)| *t == thing && !n.is_empty())
                .map(|(_, n)| n.clone())
                .collect();
            names.sort();
            return Some(http::json(
                200,
                &json!({"results": names, "timestamp": now_s()}),
                &[],
            ));
        }
        let raw_thing = path.strip_prefix("/things/")?.strip_suffix("/shadow")?;
        let Some(thing) = http::percent_decode(raw_thing) else {
            return Some(invalid("Thing name is not valid percent-encoded UTF-8"));
        };
        let mut name = String::new();
        for (key, value) in http::query_pairs(request.uri().query()) {
            if key == "name" {
                name = value;
            }
        }
        if !valid_thing_name(&thing) {
            return Some(invalid(&format!(
                "Thing name {thing:?} must match [a-zA-Z0-9:_-]{{1,{MAX_THING}}}"
            )));
        }
        if request.uri().query().is_some_and(|q| q.contains("name=")) && !valid_shadow_name(&name) {
            return Some(invalid(&format!(
                "Shadow name {name:?} must match [$a-zA-Z0-9:_-]{{1,{MAX_SHADOW}}}"
            )));
        }
        let key = (thing, name);
        let method = request.method().clone();
        Some(match method {
            Method::GET => self.get(&key),
            Method::DELETE => self.delete(&key),
            Method::POST => match http::read_body(request.into_body(), MAX_DOCUMENT).await {
                Ok(body) => self.update(&key, &body),
                Err(BodyError::TooLarge) => error(
                    413,
                    "RequestEntityTooLargeException",
                    &format!("The payload exceeds the maximum size of {MAX_DOCUMENT} bytes"),
                ),
                Err(BodyError::Read(e)) => invalid(&format!("Cannot read the request body: {e}")),
            },
            other => error(
                405,
                "MethodNotAllowedException",
                &format!("Method {other} is not allowed on /things/{{thing}}/shadow"),
            ),
        })
    }

    fn get(&self, key: &(String, String)) -> HttpResponse {
        match self.documents().get(key) {
            Some(shadow) => http::json(200, &shadow.document(now_s()), &[]),
            None => not_found(&key.0, &key.1),
        }
    }

    fn delete(&self, key: &(String, String)) -> HttpResponse {
        match self.documents().remove(key) {
            Some(shadow) => http::json(
                200,
                &json!({"version": shadow.version, "timestamp": now_s()}),
                &[],
            ),
            None => not_found(&key.0, &key.1),
        }
    }

    fn update(&self, key: &(String, String), body: &[u8]) -> HttpResponse {
        match self.apply_update(&key.0, &key.1, body) {
            Ok(reply) => http::json(200, &reply, &[]),
            Err(rejected) => error(rejected.code, rejected.error_type, &rejected.message),
        }
    }

    /// `UpdateThingShadow` (the HTTP API and the `$aws/things/.../shadow/update` topic,
    /// which the local IoT rules feed): the accepted document, or why it was rejected.
    pub fn apply_update(&self, thing: &str, name: &str, body: &[u8]) -> Result<Value, Rejected> {
        let key = &(thing.to_owned(), name.to_owned());
        let invalid = |message: &str| Rejected {
            code: 400,
            error_type: "InvalidRequestException",
            message: message.to_owned(),
        };
        let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
            return Err(invalid("Payload contains invalid json"));
        };
        let Some(state) = request.get("state") else {
            return Err(invalid("Missing required node: state"));
        };
        let expected = match request.get("version") {
            None => None,
            Some(v) => match v.as_u64() {
                Some(v) => Some(v),
                None => return Err(invalid("Invalid version: must be a positive integer")),
            },
        };
        let t = now_s();
        let mut documents = self.documents();
        let current = documents.get(key);
        if let Some(expected) = expected {
            if current.map(|s| s.version) != Some(expected) {
                return Err(Rejected {
                    code: 409,
                    error_type: "ConflictException",
                    message: "Version conflict".into(),
                });
            }
        }
        let mut shadow = current.cloned().unwrap_or_default();
        let mut accepted = Map::new();
        let mut metadata = Map::new();
        match state {
            Value::Null => {
                shadow.desired = None;
                shadow.reported = None;
                shadow.metadata_desired = None;
                shadow.metadata_reported = None;
            }
            Value::Object(sections) => {
                for (section, patch) in sections {
                    let (value, meta) = match section.as_str() {
                        "desired" => (&mut shadow.desired, &mut shadow.metadata_desired),
                        "reported" => (&mut shadow.reported, &mut shadow.metadata_reported),
                        other => {
                            return Err(invalid(&format!(
                                "State contains an invalid node: '{other}'"
                            )))
                        }
                    };
                    *value = merge(value.take(), patch);
                    let stamped = stamp(patch, t);
                    *meta = merge(meta.take(), &stamped);
                    if value.is_none() {
                        *meta = None;
                    }
                    accepted.insert(section.clone(), patch.clone());
                    metadata.insert(section.clone(), stamped);
                }
            }
            _ => return Err(invalid("State node must be an object")),
        }
        shadow.version += 1;
        let mut reply = json!({
            "state": accepted,
            "metadata": metadata,
            "version": shadow.version,
            "timestamp": t,
        });
        if let Some(token) = request.get("clientToken") {
            reply["clientToken"] = token.clone();
        }
        documents.insert(key.clone(), shadow);
        Ok(reply)
    }

    /// A shadow's document as `GetThingShadow` returns it (tests).
    pub fn document(&self, thing: &str, name: &str) -> Option<Value> {
        self.documents()
            .get(&(thing.to_string(), name.to_string()))
            .map(|s| s.document(now_s()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_deletes_with_null_and_replaces_arrays() {
        let merged = merge(
            Some(json!({"a": 1, "b": {"c": 2, "d": 3}, "list": [1, 2, 3]})),
            &json!({"a": null, "b": {"c": 5}, "list": [9]}),
        );
        assert_eq!(merged, Some(json!({"b": {"c": 5, "d": 3}, "list": [9]})));
        assert_eq!(merge(Some(json!({"a": 1})), &Value::Null), None);
    }

    #[test]
    fn delta_lists_what_reported_does_not_match() {
        let d = delta(
            &json!({"led": "red", "n": 1}),
            Some(&json!({"led": "red", "n": 2})),
        );
        assert_eq!(d, Some(json!({"n": 1})));
        assert_eq!(delta(&json!({"a": 1}), Some(&json!({"a": 1}))), None);
    }
}
