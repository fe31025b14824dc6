//! Loads `events/bad/cases.json`: each bad request, the bytes the function sees, the
//! API Gateway envelope that carries them, and the answer it must get. Shared by
//! `crates/lambda/tests/bad_events.rs` and the gateway test in `tests/` (included by path).
#![allow(dead_code)]

use base64::Engine;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Largest body the function accepts (sensor_lambda::request::MAX_BODY_BYTES).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub route: String,
    pub method: String,
    /// The body the function sees after API Gateway; `None` when the envelope's base64
    /// cannot be decoded (only the envelope path applies).
    pub body: Option<Vec<u8>>,
    /// The envelope's `body` field and `isBase64Encoded` flag.
    pub envelope_body: String,
    pub envelope_base64: bool,
    pub status: u16,
    /// The field a 400 names.
    pub field: Option<String>,
    /// For a batch answered per item: the field each item's error names.
    pub items: Option<Vec<String>>,
}

/// `events/bad` of the workspace: this file is compiled into crates at different depths
/// (`crates/lambda`, `tests`), so the nearest ancestor holding `events/` is the root.
pub fn dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("events/bad"))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| manifest.join("../../events/bad"))
}

pub fn load() -> Vec<Case> {
    load_from(&dir())
}

pub fn load_from(dir: &Path) -> Vec<Case> {
    let path = dir.join("cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let manifest: Value = serde_json::from_str(&text).expect("cases.json is JSON");
    let b64 = base64::engine::general_purpose::STANDARD;
    manifest["cases"]
        .as_array()
        .expect("cases is an array")
        .iter()
        .map(|c| {
            let name = c["name"].as_str().expect("name").to_string();
            let text = |key: &str| c.get(key).and_then(Value::as_str).map(str::to_string);
            let envelope_base64 = c["is_base64_encoded"].as_bool().unwrap_or(false);
            let raw: Option<Vec<u8>> = if let Some(body) = text("body") {
                if envelope_base64 {
                    b64.decode(&body).ok()
                } else {
                    Some(body.into_bytes())
                }
            } else if let Some(encoded) = text("body_base64") {
                Some(
                    b64.decode(&encoded)
                        .unwrap_or_else(|e| panic!("{name}: {e}")),
                )
            } else if let Some(file) = text("body_file") {
                Some(std::fs::read(dir.join(&file)).unwrap_or_else(|e| panic!("{file}: {e}")))
            } else if let Some(kind) = text("generate") {
                Some(generate(&kind))
            } else {
                Some(Vec::new())
            };
            let (envelope_body, envelope_base64) = match (&raw, text("body"), text("body_base64")) {
                (_, Some(body), _) if envelope_base64 => (body, true),
                (_, _, Some(encoded)) => (encoded, true),
                (Some(bytes), _, _) => match std::str::from_utf8(bytes) {
                    Ok(s) => (s.to_string(), false),
                    Err(_) => (b64.encode(bytes), true),
                },
                (None, _, _) => unreachable!("{name}: undecodable bodies are given as text"),
            };
            Case {
                route: text("route").expect("route"),
                method: text("method").unwrap_or_else(|| "POST".into()),
                body: raw,
                envelope_body,
                envelope_base64,
                status: u16::try_from(c["status"].as_u64().expect("status")).expect("status"),
                field: text("field"),
                items: c.get("items").and_then(Value::as_array).map(|items| {
                    items
                        .iter()
                        .map(|f| f.as_str().expect("item field").to_string())
                        .collect()
                }),
                name,
            }
        })
        .collect()
}

/// Bodies too big or too repetitive to commit.
pub fn generate(kind: &str) -> Vec<u8> {
    let reading = r#"{"groupid": "2", "no2": {"sensorid": "0006", "sensortype": "9", "value": "52.00", "createdtime": "2021-09-03 18:14:49"}}"#;
    match kind {
        "deep_arrays" => "[".repeat(100_000).into_bytes(),
        "deep_objects" => "{\"a\":".repeat(50_000).into_bytes(),
        "oversize" => {
            let mut body = reading.as_bytes().to_vec();
            body.resize(MAX_BODY_BYTES + 1, b' ');
            body
        }
        "batch501" => format!("[{}]", vec![reading; 501].join(",")).into_bytes(),
        other => panic!("unknown generator {other}"),
    }
}

/// Checks one answer (status and JSON body) against the case; `Err` says what differs.
pub fn check(case: &Case, status: u16, body: &[u8]) -> Result<(), String> {
    let reply: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "{}: answer is not JSON ({e}): {:?}",
            case.name,
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
    })?;
    if status != case.status {
        return Err(format!(
            "{}: status {status}, expected {}: {reply}",
            case.name, case.status
        ));
    }
    let expect = |cond: bool, what: &str| {
        if cond {
            Ok(())
        } else {
            Err(format!("{}: {what}: {reply}", case.name))
        }
    };
    match status {
        400 => {
            expect(
                reply["error"] == "invalid_reading",
                "error is invalid_reading",
            )?;
            expect(
                reply["message"].as_str().is_some_and(|m| !m.is_empty()),
                "a message",
            )?;
            if let Some(field) = &case.field {
                expect(
                    reply["field"] == field.as_str(),
                    &format!("field {field:?}"),
                )?;
            }
        }
        405 => expect(reply["error"] == "method_not_allowed", "method_not_allowed")?,
        413 => expect(reply["error"] == "payload_too_large", "payload_too_large")?,
        200 => {
            let fields = case.items.as_ref().ok_or("200 cases list their items")?;
            expect(reply["stored"] == 0, "nothing stored")?;
            let items = reply["items"].as_array().ok_or("items")?;
            expect(items.len() == fields.len(), "one entry per item")?;
            for (item, field) in items.iter().zip(fields) {
                expect(item["status"] == "invalid", "every item invalid")?;
                expect(
                    item["field"] == field.as_str(),
                    &format!("item field {field:?}"),
                )?;
            }
        }
        _ => {}
    }
    Ok(())
}
