//! One identity per box: the registry binds each box (thing) to its group, and a reading
//! for another group is refused (403 `forbidden`) having touched nothing. The box is named
//! by the data rules' envelope (MQTT) or by the IAM-authorized path
//! `/things/{thing}/<sensor>`; the shared-key routes name none and are refused unless
//! `LEGACY_KEY_ROUTES` is on. Fakes for the ports; the real registry is in `tests/`.

mod support;

use base64::Engine;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use sensor_core::ports::{DownstreamError, Registration};
use sensor_model::domain::group_id::GroupId;
use sensor_model::domain::thing_name::ThingName;
use sensor_model::Sensor;
use serde_json::{json, Value};
use support::{apigw_rest_event, http_api_event, json_of, Harness, SEED};

const GAS: Sensor = Sensor::Gasdetector;

/// The harness with box `pi-a` in group "2" (the seed's) and `pi-b` in group "9".
fn harness(extra: &[(&str, &str)]) -> Harness {
    let h = Harness::with_env(GAS, extra);
    for (thing, group) in [("pi-a", "2"), ("pi-b", "9")] {
        h.registry.set(
            &ThingName::parse(thing).unwrap(),
            Registration::Group(GroupId::parse(group).unwrap()),
        );
    }
    h
}

/// The data rule's event: `SELECT topic(2) AS thing, encode(*, 'base64') AS payload`.
fn from_mqtt(thing: &str, payload: &str) -> Request {
    let event = json!({
        "thing": thing,
        "payload": base64::engine::general_purpose::STANDARD.encode(payload),
    });
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

/// An API Gateway REST event for `POST /things/{thing}/gasdetector`, as API Gateway sends
/// it once IAM has checked the signature.
fn from_https(thing: &str, body: &str) -> Request {
    let mut event = thing_route_event(apigw_rest_event, thing, body);
    event["resource"] = json!("/things/{thing}/gasdetector");
    event["requestContext"]["resourcePath"] = json!("/things/{thing}/gasdetector");
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

/// `make`'s event (REST or HTTP API) for `POST /things/{thing}/gasdetector`, with the path
/// parameter API Gateway fills in.
fn thing_route_event(make: fn(&str, &str, &str, bool) -> String, thing: &str, body: &str) -> Value {
    let path = format!("/things/{thing}/gasdetector");
    let mut event: Value = serde_json::from_str(&make("POST", &path, body, false)).unwrap();
    event["pathParameters"] = json!({"thing": thing});
    event
}

fn legacy(body: &str) -> Request {
    lambda_http::request::from_str(&apigw_rest_event("POST", "/gasdetector", body, false)).unwrap()
}

fn seed_for(group: &str) -> String {
    SEED.replace(r#""groupid": "2""#, &format!(r#""groupid": "{group}""#))
}

/// Nothing stored, published or applied to alarm state.
fn untouched(h: &Harness) {
    assert_eq!(h.indexed(), 0, "nothing indexed");
    assert_eq!(h.index_calls(), 0, "no bulk request");
    assert_eq!(h.published(), 0, "nothing published");
    assert_eq!(*h.alarms.loads.lock().unwrap(), 0, "alarm state not read");
    assert_eq!(
        *h.alarms.stores.lock().unwrap(),
        0,
        "alarm state not written"
    );
}

#[tokio::test]
async fn a_box_posts_its_own_group_over_both_doors() {
    for request in [from_mqtt("pi-a", SEED), from_https("pi-a", SEED)] {
        let h = harness(&[]);
        let response = h.app.handle(request).await;
        assert_eq!(response.status(), 200, "{}", json_of(&response));
        assert_eq!(h.indexed(), 1);
    }
}

#[tokio::test]
async fn a_box_posting_for_another_group_is_refused_and_touches_nothing() {
    // A no2 of 95 would warn: a refused reading must not.
    let alarming = seed_for("9").replace("\"52.00\"", "\"95\"");
    for request in [from_mqtt("pi-a", &alarming), from_https("pi-a", &alarming)] {
        let h = harness(&[]);
        let response = h.app.handle(request).await;
        let body = json_of(&response);
        assert_eq!(response.status(), 403, "{body}");
        assert_eq!(body["error"], "forbidden");
        assert_eq!(body["field"], "groupid");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("\"pi-a\"") && message.contains("\"2\"") && message.contains("\"9\""),
            "{message}"
        );
        untouched(&h);
    }
}

#[tokio::test]
async fn a_batch_refuses_each_item_of_another_group_and_stores_the_rest() {
    let h = harness(&[]);
    let mut other = seed_for("9");
    other = other.replace("0005", "1005");
    let batch = format!("[{SEED}, {other}]");
    let response = h.app.handle(from_mqtt("pi-a", &batch)).await;
    let body = json_of(&response);
    assert_eq!(response.status(), 200, "{body}");
    assert_eq!(body["items"][0]["status"], "stored");
    assert_eq!(body["items"][1]["status"], "forbidden");
    assert_eq!(body["items"][1]["field"], "groupid");
    assert_eq!(body["forbidden"], 1);
    assert_eq!(h.indexed(), 1, "only the box's own group is stored");
}

#[tokio::test]
async fn an_unknown_thing_is_refused_naming_it() {
    for request in [from_mqtt("ghost", SEED), from_https("ghost", SEED)] {
        let h = harness(&[]);
        let response = h.app.handle(request).await;
        let body = json_of(&response);
        assert_eq!(response.status(), 403, "{body}");
        assert_eq!(body["field"], "thing");
        assert!(
            body["message"].as_str().unwrap().contains("\"ghost\""),
            "{body}"
        );
        untouched(&h);
    }
}

#[tokio::test]
async fn a_thing_without_a_group_is_refused_naming_it() {
    let h = harness(&[]);
    h.registry
        .set(&ThingName::parse("pi-c").unwrap(), Registration::NoGroup);
    let response = h.app.handle(from_mqtt("pi-c", SEED)).await;
    let body = json_of(&response);
    assert_eq!(response.status(), 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("no groupid"),
        "{body}"
    );
    untouched(&h);
}

#[tokio::test]
async fn a_revoked_box_is_refused_on_both_doors_even_with_credentials_from_before() {
    let h = harness(&[]);
    // `fleet revoke` sets the attribute; IAM still honours credentials issued before, so
    // the function is where the HTTPS door closes.
    h.registry.set(
        &ThingName::parse("pi-a").unwrap(),
        Registration::Revoked("2026-12-04T16:00:00Z".into()),
    );
    for request in [from_https("pi-a", SEED), from_mqtt("pi-a", SEED)] {
        let response = h.app.handle(request).await;
        let body = json_of(&response);
        assert_eq!(response.status(), 403, "{body}");
        assert_eq!(body["error"], "forbidden", "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("was revoked"),
            "{body}"
        );
    }
    untouched(&h);
}

#[tokio::test]
async fn the_payload_cannot_name_another_thing() {
    // pi-a claims to be pi-b inside its payload, for pi-b's group: the envelope's thing
    // (from the topic) is the only one that counts, so this is pi-a writing group 9.
    let h = harness(&[]);
    let mut reading: Value = serde_json::from_str(&seed_for("9")).unwrap();
    reading["thing"] = json!("pi-b");
    let response = h.app.handle(from_mqtt("pi-a", &reading.to_string())).await;
    let status = response.status();
    assert!(
        status == 403 || status == 400,
        "{status}: {}",
        json_of(&response)
    );
    untouched(&h);
}

#[tokio::test]
async fn the_shared_key_route_is_refused_unless_turned_on() {
    let h = harness(&[("LEGACY_KEY_ROUTES", "false")]);
    let response = h.app.handle(legacy(SEED)).await;
    let body = json_of(&response);
    assert_eq!(response.status(), 403, "{body}");
    assert_eq!(body["field"], "thing");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("LegacyKeyRoutes"),
        "{body}"
    );
    untouched(&h);

    let h = harness(&[("LEGACY_KEY_ROUTES", "true")]);
    let response = h.app.handle(legacy(SEED)).await;
    assert_eq!(response.status(), 200, "{}", json_of(&response));
    assert_eq!(
        h.indexed(),
        1,
        "the seed's payload, unchanged, on the legacy route"
    );
}

#[tokio::test]
async fn an_operators_direct_invoke_needs_no_box() {
    let h = harness(&[("LEGACY_KEY_ROUTES", "false")]);
    let request = lambda_http::request::from_str(SEED).unwrap();
    let response = h.app.handle(request).await;
    assert_eq!(response.status(), 200, "{}", json_of(&response));
}

#[tokio::test]
async fn an_unreachable_registry_is_a_503_and_a_function_error_for_the_rule() {
    struct Down;
    impl sensor_core::ports::Registry for Down {
        async fn lookup(&self, _: &ThingName) -> Result<Registration, DownstreamError> {
            Err(DownstreamError::Retryable(
                "HTTP 503 ServiceUnavailable".into(),
            ))
        }
    }
    let h = Harness::with_env(GAS, &[]);
    let docs = h.indexer.docs.clone();
    let app = h.app.with_registry(Down);
    let response = app.handle(from_https("pi-a", SEED)).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    // The rule's invoke fails, so its error action keeps the message.
    assert!(app.invoke(from_mqtt("pi-a", SEED)).await.is_err());
    assert_eq!(docs.lock().unwrap().len(), 0);
}

#[tokio::test]
async fn the_sample_event_of_a_boxs_own_route_is_taken_for_its_group() {
    // events/things/: what API Gateway sends once IAM let box-2 through (the benchmark's).
    let h = Harness::with_env(GAS, &[("LEGACY_KEY_ROUTES", "false")]);
    h.registry.set(
        &ThingName::parse("box-2").unwrap(),
        Registration::Group(GroupId::parse("2").unwrap()),
    );
    let text =
        std::fs::read_to_string(support::events_dir().join("things/gasdetector-apigw-rest.json"))
            .unwrap();
    let response = h
        .app
        .handle(lambda_http::request::from_str(&text).unwrap())
        .await;
    assert_eq!(response.status(), 200, "{}", json_of(&response));
    assert_eq!(h.indexed(), 1);
}

/// An HTTP API (v2, payload format 2.0) event for `POST /things/{thing}/gasdetector`, as the
/// optional HTTP API sends it once IAM has checked the signature (the route is AWS_IAM).
fn from_http_api(thing: &str, body: &str) -> Request {
    let mut event = thing_route_event(http_api_event, thing, body);
    event["routeKey"] = json!("POST /things/{thing}/gasdetector");
    event["requestContext"]["routeKey"] = json!("POST /things/{thing}/gasdetector");
    event["requestContext"]["authorizer"] = json!({"iam": {
        "accessKey": "ASIAEXAMPLE", "accountId": "123456789012",
        "callerId": "AROAEXAMPLE:session", "principalOrgId": null,
        "userArn": "arn:aws:sts::123456789012:assumed-role/SensorBoxHttpsRole/session",
        "userId": "AROAEXAMPLE:session"
    }});
    let request = lambda_http::request::from_str(&event.to_string()).unwrap();
    assert!(
        matches!(
            request.request_context_ref(),
            Some(RequestContext::ApiGatewayV2(_))
        ),
        "an HTTP API (v2) request"
    );
    request
}

#[tokio::test]
async fn a_box_on_the_http_api_is_named_by_its_path_and_held_to_its_group() {
    // Shared-key routes off (the default): only the path's thing can make this a 200.
    let h = harness(&[("LEGACY_KEY_ROUTES", "false")]);
    let response = h.app.handle(from_http_api("pi-a", SEED)).await;
    assert_eq!(response.status(), 200, "{}", json_of(&response));
    assert_eq!(h.indexed(), 1);

    let h = harness(&[("LEGACY_KEY_ROUTES", "false")]);
    let response = h.app.handle(from_http_api("pi-a", &seed_for("9"))).await;
    let body = json_of(&response);
    assert_eq!(response.status(), 403, "{body}");
    assert_eq!(body["error"], "forbidden");
    assert_eq!(body["field"], "groupid");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("\"pi-a\"") && message.contains("\"9\""),
        "{message}"
    );
    untouched(&h);
}
