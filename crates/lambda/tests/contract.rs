//! api/openapi.yaml and the code, kept in step: every sample in `events/` is valid by the
//! document's request schema, every bad case in `events/bad/cases.json` that the code
//! refuses for its content is refused by the document too (or is listed in
//! `NOT_EXPRESSIBLE` with the reason), and the function's real answers (through the
//! handler with fake ports, failures included) are valid by the response schemas,
//! required headers included.

#[path = "support/bad_cases.rs"]
mod bad_cases;
mod support;

use base64::Engine;
use jsonschema::Validator;
use lambda_http::Body;
use sensor_model::Sensor;
use serde_json::{json, Value};
use std::collections::HashSet;
use support::{events_dir, good_reading, json_of, request, sensor_of_route, Harness};

/// Bad cases the document cannot refuse, and why. Kept exact: a case listed here that the
/// document does refuse fails the test, so the list cannot go stale.
const NOT_EXPRESSIBLE: &[(&str, &str)] = &[(
    "oversize-1mib-plus-1",
    "a body over 1 MiB is valid JSON; JSON Schema has no byte limit (the 413 is documented)",
)];

fn document() -> Value {
    let path = events_dir().join("../api/openapi.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_norway::from_str(&text).expect("api/openapi.yaml is YAML")
}

/// A validator for `#/components/schemas/<name>` of the document.
fn schema(doc: &Value, name: &str) -> Validator {
    assert!(
        doc["components"]["schemas"].get(name).is_some(),
        "no schema {name}"
    );
    let mut root = json!({"components": doc["components"].clone()});
    root["$ref"] = json!(format!("#/components/schemas/{name}"));
    jsonschema::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("schema {name}: {e}"))
}

fn schema_prefix(sensor: Sensor) -> &'static str {
    match sensor {
        Sensor::Gasdetector => "Gasdetector",
        Sensor::Dust => "Dust",
        Sensor::Temp => "Temp",
    }
}

fn errors(validator: &Validator, value: &Value) -> String {
    validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The body an event file carries: the file itself for a direct invoke, else the
/// envelope's `body` (base64-decoded when flagged).
fn body_of_event(event: &Value) -> Value {
    if event.get("httpMethod").is_none() && event.get("routeKey").is_none() {
        return event.clone();
    }
    let text = event["body"].as_str().expect("envelope body");
    let bytes = if event["isBase64Encoded"].as_bool() == Some(true) {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("base64 body")
    } else {
        text.as_bytes().to_vec()
    };
    serde_json::from_slice(&bytes).expect("the sample body is JSON")
}

#[test]
fn every_sample_event_is_valid_by_the_request_schema() {
    let doc = document();
    let mut checked = 0;
    for sensor in Sensor::ALL {
        let validator = schema(&doc, &format!("{}Request", schema_prefix(sensor)));
        let dir = events_dir().join(sensor.name());
        for entry in std::fs::read_dir(&dir).expect("events dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let event: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
            let body = body_of_event(&event);
            assert!(
                validator.is_valid(&body),
                "{path:?}: {}",
                errors(&validator, &body)
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} samples");
}

#[test]
fn every_bad_case_the_code_refuses_is_refused_by_the_document() {
    let doc = document();
    let listed: HashSet<&str> = NOT_EXPRESSIBLE.iter().map(|(name, _)| *name).collect();
    let mut unexpressed = HashSet::new();
    let mut checked = 0;
    for case in bad_cases::load() {
        let sensor = sensor_of_route(&case.route);
        let path = &doc["paths"][case.route.as_str()];
        if case.method != "POST" {
            // Refused by the document: no such operation, and any other method is a 405.
            assert!(
                path.get(case.method.to_lowercase()).is_none(),
                "{}",
                case.name
            );
            assert!(
                path["x-amazon-apigateway-any-method"]["responses"]["405"].is_object(),
                "{}",
                case.name
            );
            checked += 1;
            continue;
        }
        let Some(bytes) = &case.body else {
            continue; // undecodable base64: the envelope is bad, not the content
        };
        let Ok(body) = serde_json::from_slice::<Value>(bytes) else {
            // Not JSON (or a number beyond f64): refused by the media type, application/json.
            checked += 1;
            continue;
        };
        let request = schema(&doc, &format!("{}Request", schema_prefix(sensor)));
        let reading = schema(&doc, &format!("{}Reading", schema_prefix(sensor)));
        match (&case.items, body.as_array()) {
            (Some(fields), Some(items)) => {
                // Answered per item: each refused item is refused by the reading schema.
                assert_eq!(fields.len(), items.len(), "{}", case.name);
                for (index, item) in items.iter().enumerate() {
                    assert!(
                        !reading.is_valid(item),
                        "{}: item {index} is valid by the document",
                        case.name
                    );
                }
            }
            _ if request.is_valid(&body) => {
                unexpressed.insert(case.name.clone());
            }
            _ => {}
        }
        checked += 1;
    }
    let listed_names: HashSet<String> = listed.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        unexpressed, listed_names,
        "bad cases the document accepts vs NOT_EXPRESSIBLE"
    );
    assert!(checked >= 100, "only {checked} cases");
}

/// The schema name and the required headers the document gives an answer.
fn documented_answer(doc: &Value, route: &str, method: &str, status: u16) -> (String, Vec<String>) {
    let lower = method.to_ascii_lowercase();
    let operation = if doc["paths"][route][lower.as_str()].is_object() {
        lower.as_str()
    } else {
        "x-amazon-apigateway-any-method"
    };
    let answer = &doc["paths"][route][operation]["responses"][status.to_string()];
    let resolve = |v: &Value| -> Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => doc
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling {r}"))
                .clone(),
            None => v.clone(),
        }
    };
    let answer = resolve(answer);
    assert!(
        answer.is_object(),
        "{method} {route} {status} is not documented"
    );
    let schema_ref = answer
        .pointer("/content/application~1json/schema/$ref")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{method} {route} {status}: no schema"));
    let headers = answer["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .filter(|(_, v)| resolve(v)["required"] == json!(true))
                .map(|(k, _)| k.to_lowercase())
                .collect()
        })
        .unwrap_or_default();
    (
        schema_ref
            .trim_start_matches("#/components/schemas/")
            .to_owned(),
        headers,
    )
}

/// The answer's body matches the schema the document gives for its status, and it carries
/// the headers the document lists.
fn assert_documented(
    doc: &Value,
    route: &str,
    method: &str,
    response: &lambda_http::Response<Body>,
) {
    let status = response.status().as_u16();
    let (name, headers) = documented_answer(doc, route, method, status);
    let value = json_of(response);
    let validator = schema(doc, &name);
    assert!(
        validator.is_valid(&value),
        "{method} {route} {status} {value}: {}",
        errors(&validator, &value)
    );
    for header in headers {
        assert!(
            response.headers().contains_key(header.as_str()),
            "{method} {route} {status}: no {header} header"
        );
    }
}

/// Sends `body` with `method` through the handler and checks the answer against the
/// document; the status.
async fn answer_matches(
    doc: &Value,
    h: &Harness,
    sensor: Sensor,
    method: &str,
    body: Vec<u8>,
) -> u16 {
    let route = format!("/{}", sensor.name());
    let response = h
        .app
        .handle(request(method, &route, Body::from(body)))
        .await;
    let status = response.status().as_u16();
    assert_documented(doc, &route, method, &response);
    status
}

#[tokio::test]
async fn the_functions_answers_are_valid_by_the_response_schemas() {
    let doc = document();
    let mut statuses = HashSet::new();
    for sensor in Sensor::ALL {
        let h = Harness::new(sensor);
        let good = good_reading(sensor);
        let mut bad = good.clone();
        bad["groupid"] = json!("a/b");
        for (method, body) in [
            ("POST", good.to_string()),
            ("POST", json!([good, bad]).to_string()),
            ("POST", bad.to_string()),
            ("POST", "not json".into()),
            ("GET", String::new()),
            ("PUT", good.to_string()),
        ] {
            statuses.insert(answer_matches(&doc, &h, sensor, method, body.into_bytes()).await);
        }
        let oversize = bad_cases::generate("oversize");
        statuses.insert(answer_matches(&doc, &h, sensor, "POST", oversize).await);
        // OpenSearch keeps failing: 503 with Retry-After, single and batch.
        let failing = Harness::new(sensor);
        failing.fail_index_requests(100);
        let mut other = good.clone();
        other["groupid"] = json!("8");
        for body in [good.to_string(), json!([good, other]).to_string()] {
            statuses
                .insert(answer_matches(&doc, &failing, sensor, "POST", body.into_bytes()).await);
        }
    }
    // OpenSearch refuses the reading for good (a mapping conflict): 422 alone, `rejected`
    // in a batch.
    let refusing = Harness::new(Sensor::Temp);
    let good = good_reading(Sensor::Temp);
    let group = good["groupid"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| good["groupid"].to_string());
    refusing.reject_group(&group);
    let mut other = good.clone();
    other["groupid"] = json!("8");
    for body in [good.to_string(), json!([good, other]).to_string()] {
        statuses
            .insert(answer_matches(&doc, &refusing, Sensor::Temp, "POST", body.into_bytes()).await);
    }
    // Warnings, from the samples that trip rules.
    let h = Harness::new(Sensor::Gasdetector);
    let warn =
        std::fs::read(events_dir().join("gasdetector/warn-no2-direct.json")).expect("sample");
    assert_eq!(
        answer_matches(&doc, &h, Sensor::Gasdetector, "POST", warn).await,
        200
    );
    assert!(h.published() > 0, "the sample trips a rule");
    let expected: HashSet<u16> = [200, 400, 405, 413, 422, 503].into();
    assert_eq!(statuses, expected);
}

/// Answers the read API's searches like OpenSearch does (shapes taken from osmem-server
/// and OpenSearch 2.x), or fails every search.
struct CannedSearch {
    fail: bool,
}

impl sensor_core::ports::Search for CannedSearch {
    async fn search(
        &self,
        _indices: &str,
        body: &Value,
    ) -> Result<Value, sensor_core::ports::DownstreamError> {
        if self.fail {
            return Err(sensor_core::ports::DownstreamError::Retryable(
                "down".into(),
            ));
        }
        let reading = json!({"groupid": "2", "sensor": "gasdetector", "@timestamp": "2026-12-01T10:00:00Z",
            "date": "2026-12-01 10:00:01", "location": {"lat": 37.6, "lon": 127.0},
            "warnings": ["no2"], "no2": {"value": "95.00"}, "co": {"value": 26.2}});
        let bare = json!({"groupid": "3", "sensor": "temp", "@timestamp": "2026-12-01T09:00:00Z",
            "warnings": [], "temperature": {"value": "21.5"}});
        Ok(if body["aggs"]["groups"].is_object() {
            json!({"aggregations": {"groups": {"buckets": [
                {"key": "2", "doc_count": 3, "sensors": {"buckets": [{"key": "gasdetector", "doc_count": 3,
                    "latest": {"hits": {"hits": [{"_id": "a", "_source": reading}]}}}]}},
                {"key": "3", "doc_count": 1, "sensors": {"buckets": [{"key": "temp", "doc_count": 1,
                    "latest": {"hits": {"hits": [{"_id": "b", "_source": bare}]}}}]}}
            ]}}})
        } else if body["aggs"]["series"].is_object() {
            json!({"hits": {"total": {"value": 3}}, "aggregations": {"series": {"buckets": [
                {"key": 1_796_083_200_000i64, "key_as_string": "2026-12-01T00:00:00.000Z", "doc_count": 2,
                 "stats": {"count": 2, "min": 1.0, "avg": 1.5, "max": 2.0, "sum": 3.0}},
                {"key": 1_796_085_000_000i64, "doc_count": 1,
                 "stats": {"count": 1, "min": 4.0, "avg": 4.0, "max": 4.0, "sum": 4.0}}
            ]}}})
        } else {
            let hit = |id: &str, ms: i64, source: &Value| json!({"_id": id, "_source": source, "sort": [ms, id]});
            json!({"hits": {"hits": [
                hit("a", 1_796_119_200_000, &reading),
                hit("c", 1_796_115_600_000, &json!({"groupid": "3", "sensor": "dust", "@timestamp": "2026-12-01T09:00:00Z", "warnings": ["pm25"]})),
                hit("d", 1_796_112_000_000, &reading),
            ]}})
        })
    }
}

#[tokio::test]
async fn the_query_answers_are_valid_by_the_response_schemas() {
    use lambda_http::RequestExt;
    use sensor_core::query::{Indices, QueryApi};
    use sensor_lambda::query_function::QueryHandler;
    use std::collections::HashMap;

    let doc = document();
    let handler = |fail: bool| {
        QueryHandler::new(
            QueryApi::new(
                CannedSearch { fail },
                Indices::new(sensor_lambda::settings::parse_indices(None).expect("defaults")),
                sensor_model::rules::Rules::default(),
                "<html></html>",
            ),
            None,
        )
    };
    let (up, down) = (handler(false), handler(true));
    let readings = [
        ("sensor", "gasdetector"),
        ("groupid", "2"),
        ("measure", "no2"),
    ];
    // (handler, method, route, query, expected status)
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        &QueryHandler<CannedSearch>,
        &str,
        &str,
        Vec<(&str, &str)>,
        u16,
    )> = vec![
        (&up, "GET", "/api/boxes", vec![], 200),
        (&up, "GET", "/api/readings", readings.to_vec(), 200),
        (&up, "GET", "/api/warnings", vec![("size", "2")], 200),
        (&up, "GET", "/api/warnings", vec![], 200),
        (&up, "GET", "/api/rules", vec![], 200),
        (&up, "GET", "/api/readings", vec![("sensor", "air")], 400),
        (&up, "GET", "/api/boxes", vec![("x", "1")], 400),
        (&up, "POST", "/api/boxes", vec![], 405),
        (&up, "DELETE", "/", vec![], 405),
        (&up, "OPTIONS", "/api/rules", vec![], 204),
        (&down, "GET", "/api/boxes", vec![], 503),
        (&down, "GET", "/api/readings", readings.to_vec(), 503),
    ];
    for (h, method, route, query, want) in cases {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in &query {
            map.entry((*k).to_owned())
                .or_default()
                .push((*v).to_owned());
        }
        let request = http::Request::builder()
            .method(method)
            .uri(route)
            .body(Body::Empty)
            .expect("request")
            .with_query_string_parameters(map);
        let response = h.handle(request).await;
        let status = response.status().as_u16();
        assert_eq!(status, want, "{method} {route} {query:?}");
        if status == 204 {
            let documented = &doc["paths"][route]["options"]["responses"]["204"];
            assert!(documented.is_object(), "204 not documented for {route}");
            continue;
        }
        assert_documented(&doc, route, method, &response);
    }
}
