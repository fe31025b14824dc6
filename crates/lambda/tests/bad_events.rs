//! Every bad request in `events/bad/cases.json`, answered through the handler
//! (`App::handle`) and through the runtime path (an API Gateway REST envelope, the
//! runtime's base64 guard, lambda_http's event parser, `runtime::answer`): the right
//! status, a JSON error naming the field, nothing published or indexed, no panic or
//! hang, and the same app still stores a good reading afterwards.

#[path = "support/bad_cases.rs"]
mod bad_cases;
mod support;

use sensor_lambda::runtime::{answer, Base64Guard};
use sensor_model::Sensor;
use std::collections::HashMap;
use std::time::Duration;
use support::{apigw_rest_event, good_reading, request, sensor_of_route, Harness};

const PER_REQUEST: Duration = Duration::from_secs(10);

#[test]
fn the_corpus_is_big_and_covers_every_route_and_kind() {
    let cases = bad_cases::load();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(names.insert(&c.name), "duplicate case name {}", c.name);
        sensor_of_route(&c.route);
        if c.status == 400 && c.items.is_none() {
            assert!(c.field.is_some(), "{}: a 400 names its field", c.name);
        }
    }
    for status in [400, 405, 413, 200] {
        assert!(cases.iter().any(|c| c.status == status), "a {status} case");
    }
    assert!(cases.iter().any(|c| c.body.is_none()), "base64 garbage");
}

#[tokio::test]
async fn every_bad_request_gets_its_answer_through_the_handler() {
    let harnesses: HashMap<Sensor, Harness> = Sensor::ALL
        .into_iter()
        .map(|s| (s, Harness::new(s)))
        .collect();
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in bad_cases::load() {
        let Some(body) = case.body.clone() else {
            continue; // undecodable base64 exists only inside an envelope
        };
        let h = &harnesses[&sensor_of_route(&case.route)];
        let response = tokio::time::timeout(
            PER_REQUEST,
            h.app.handle(request(&case.method, &case.route, body)),
        )
        .await
        .unwrap_or_else(|_| panic!("{}: no answer within {PER_REQUEST:?}", case.name));
        ran += 1;
        if let Err(e) = bad_cases::check(&case, response.status().as_u16(), response.body()) {
            failures.push(e);
        }
        if h.published() + h.indexed() + h.index_calls() > 0 {
            failures.push(format!("{}: something was published or indexed", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{ran} cases, failures:\n{}",
        failures.join("\n")
    );
    still_serving(&harnesses).await;
}

#[tokio::test]
async fn every_bad_request_gets_its_answer_through_the_runtime_path() {
    let harnesses: HashMap<Sensor, Harness> = Sensor::ALL
        .into_iter()
        .map(|s| (s, Harness::new(s)))
        .collect();
    let guard = Base64Guard::new();
    let mut failures = Vec::new();
    for case in bad_cases::load() {
        let h = &harnesses[&sensor_of_route(&case.route)];
        let event = apigw_rest_event(
            &case.method,
            &case.route,
            &case.envelope_body,
            case.envelope_base64,
        );
        let event = match guard.rewrite(event.as_bytes()) {
            Some(rewritten) => String::from_utf8(rewritten).expect("JSON is UTF-8"),
            None => event,
        };
        let request = lambda_http::request::from_str(&event)
            .unwrap_or_else(|e| panic!("{}: envelope does not parse: {e}", case.name));
        let response = tokio::time::timeout(PER_REQUEST, answer(&h.app, &guard, request))
            .await
            .unwrap_or_else(|_| panic!("{}: no answer within {PER_REQUEST:?}", case.name))
            .unwrap_or_else(|e| panic!("{}: function error {e}", case.name));
        if let Err(e) = bad_cases::check(&case, response.status().as_u16(), response.body()) {
            failures.push(e);
        }
        if h.published() + h.indexed() + h.index_calls() > 0 {
            failures.push(format!("{}: something was published or indexed", case.name));
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
    still_serving(&harnesses).await;
}

/// The same apps store a good reading after all the bad ones.
async fn still_serving(harnesses: &HashMap<Sensor, Harness>) {
    for (sensor, h) in harnesses {
        let route = format!("/{}", sensor.name());
        let response = h
            .app
            .handle(request("POST", &route, good_reading(*sensor).to_string()))
            .await;
        assert_eq!(response.status(), 200, "{route} still serves");
        assert_eq!(h.indexed(), 1, "{route}");
    }
}
