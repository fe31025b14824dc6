//! The `query` function (`functions/query`): the read API and the page behind
//! `GET /`, `GET /api/...` of the same REST API as the ingest routes. Built once per cold
//! start from the environment; per request, the HTTP boundary only: method, path and
//! query string into [`QueryApi::answer`], its [`Answer`] into a response with the
//! content type, caching, CORS and security headers.
//!
//! Settings ([`QuerySettings`]): `OPENSEARCH_URL`, `OPENSEARCH_AUTH`,
//! `OPENSEARCH_SERVICE`, `RULES` (the thresholds the page draws), the AWS region and
//! credentials; plus `QUERY_INDICES` (index pattern per sensor, like `NO_DATA_INDICES`)
//! and `CORS_ORIGIN` (one origin allowed to call the API from another site; unset: none)
//! and `VIEWER_KEY_IDS` (the ids of the API keys that may read fleet data; the stacks set
//! their viewer key's id). API Gateway checks that a request carries *some* key of a usage
//! plan, but keys are not per route: without this check a box's key could read the whole
//! fleet. Unset (local stacks): any request that reached the function may read.

use crate::app::InitError;
use crate::runtime::Base64Guard;
use crate::settings::QuerySettings;
use lambda_http::http::header::{
    HeaderName, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, VARY,
};
use lambda_http::http::StatusCode;
use lambda_http::lambda_runtime::Runtime;
use lambda_http::request::RequestContext;
use lambda_http::{service_fn, Adapter, Body, Error, Request, RequestExt, Response};
use sensor_aws::opensearch::OpenSearchSearch;
use sensor_aws::sdk_config;
use sensor_core::ports::Search;
use sensor_core::query::{Answer, Body as AnswerBody, Indices, QueryApi};
use tokio::time::Instant;
use tracing::Instrument;

pub type QueryFunction = QueryHandler<OpenSearchSearch>;

pub struct QueryHandler<S> {
    api: QueryApi<S>,
    cors_origin: Option<HeaderValue>,
    viewer_keys: Option<Vec<String>>,
    function: String,
}

impl QueryFunction {
    /// Settings and the OpenSearch client from the environment; `page` is the built page
    /// (`web/dist/index.html`, embedded by the function crate).
    pub async fn from_env(page: &'static str) -> Result<QueryFunction, InitError> {
        QueryFunction::from_lookup(|key: &str| std::env::var(key).ok(), page).await
    }

    /// Like [`QueryFunction::from_env`], with `lookup` answering like `std::env::var`.
    pub async fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        page: &'static str,
    ) -> Result<QueryFunction, InitError> {
        let settings = QuerySettings::from_lookup(lookup)?;
        let sdk_config = sdk_config(&settings.aws);
        let search = OpenSearchSearch::new(&settings.opensearch, &sdk_config)?;
        Ok(QueryHandler::new(
            QueryApi::new(search, Indices::new(settings.indices), settings.rules, page),
            settings.cors_origin,
        )
        .with_viewer_keys(settings.viewer_keys)
        .named(settings.function_name))
    }
}

impl<S: Search> QueryHandler<S> {
    pub fn new(api: QueryApi<S>, cors_origin: Option<HeaderValue>) -> QueryHandler<S> {
        QueryHandler {
            api,
            cors_origin,
            viewer_keys: None,
            function: "query".into(),
        }
    }

    /// Only these API key ids may read fleet data (`None`: any).
    pub fn with_viewer_keys(mut self, ids: Option<Vec<String>>) -> Self {
        self.viewer_keys = ids;
        self
    }

    /// Whether the request may read fleet data: the key API Gateway checked for it
    /// (`requestContext.identity.apiKeyId`) is a viewer key, when viewer keys are set.
    fn may_read(&self, request: &Request) -> bool {
        let Some(ids) = &self.viewer_keys else {
            return true;
        };
        let key_id = match request.request_context_ref() {
            Some(RequestContext::ApiGatewayV1(context)) => context.identity.api_key_id.clone(),
            _ => None,
        };
        key_id.is_some_and(|id| ids.contains(&id))
    }

    fn named(mut self, function: String) -> Self {
        self.function = function;
        self
    }

    /// The HTTP answer for any request; never fails, never panics. One `request done`
    /// line per request (method, route, status, time), never the query string's values.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let started = Instant::now();
        let request_id = request
            .lambda_context_ref()
            .map(|c| c.request_id.clone())
            .unwrap_or_default();
        let span =
            tracing::info_span!("request", requestId = %request_id, function = %self.function);
        let path = route_path(&request);
        let method = request.method().as_str().to_owned();
        let pairs: Vec<(String, String)> = request
            .query_string_parameters_ref()
            .map(|q| {
                q.iter()
                    .flat_map(|(k, _)| {
                        q.all(k)
                            .unwrap_or_default()
                            .into_iter()
                            .map(move |v| (k.to_string(), v.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let data_route =
            sensor_core::query::api::API_PATHS.contains(&path.as_str()) && method == "GET";
        let answer = if data_route && !self.may_read(&request) {
            // API Gateway's own shape for a refused key (GatewayMessage in the contract).
            Answer {
                status: 403,
                body: AnswerBody::Json(
                    serde_json::json!({"message": "Forbidden: not a viewer key"}),
                ),
                retry_after: None,
                allow: None,
            }
        } else {
            self.api
                .answer(&method, &path, &pairs, chrono::Utc::now())
                .instrument(span.clone())
                .await
        };
        span.in_scope(|| {
            tracing::info!(
                method = %method,
                route = %known_route(&path),
                status = answer.status,
                duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                "request done"
            )
        });
        self.response(&answer)
    }

    /// The answer as an HTTP response: the body's type, no caching of fleet data (a
    /// shared cache must never hand one viewer's answer to another), the page revalidated
    /// so a deploy shows at once, and CORS headers when an origin is configured.
    pub fn response(&self, answer: &Answer) -> Response<Body> {
        let (body, content_type, cache) = match &answer.body {
            AnswerBody::Json(v) => (Body::Text(v.to_string()), "application/json", "no-store"),
            AnswerBody::Html(page) => (
                Body::Text((*page).to_string()),
                "text/html; charset=utf-8",
                "no-cache",
            ),
            AnswerBody::Empty => (Body::Empty, "application/json", "no-store"),
        };
        let mut response = Response::new(body);
        *response.status_mut() =
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
        headers.insert(
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        );
        if matches!(answer.body, AnswerBody::Html(_)) {
            // The page is one file with its script and style inline, calling only its
            // own origin.
            headers.insert(
                HeaderName::from_static("content-security-policy"),
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                     form-action 'none'; frame-ancestors 'none'",
                ),
            );
        }
        if let Some(seconds) = answer.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(allow) = answer.allow {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(origin) = &self.cors_origin {
            headers.insert(
                HeaderName::from_static("access-control-allow-origin"),
                origin.clone(),
            );
            headers.insert(VARY, HeaderValue::from_static("Origin"));
            if answer.status == 204 {
                headers.insert(
                    HeaderName::from_static("access-control-allow-methods"),
                    HeaderValue::from_static("GET, OPTIONS"),
                );
                headers.insert(
                    HeaderName::from_static("access-control-allow-headers"),
                    HeaderValue::from_static("x-api-key"),
                );
                headers.insert(
                    HeaderName::from_static("access-control-max-age"),
                    HeaderValue::from_static("600"),
                );
            }
        }
        response
    }
}

/// The route as API Gateway saw it: the original path (without the stage prefix that
/// `lambda_http` adds to `uri()` for REST events), `/` when empty.
fn route_path(request: &Request) -> String {
    let raw = request.raw_http_path();
    let path = if raw.is_empty() {
        request.uri().path()
    } else {
        raw
    };
    if path.is_empty() {
        "/".to_string()
    } else {
        path.to_string()
    }
}

/// The path for the log line: a known route, or `other` (never a caller's text).
fn known_route(path: &str) -> &str {
    if path == sensor_core::query::api::PAGE_PATH
        || sensor_core::query::api::API_PATHS.contains(&path)
    {
        path
    } else {
        "other"
    }
}

/// Serves invocations until the runtime stops: the function's whole `main` after init.
/// The base64 guard of the ingest functions applies: an envelope with an undecodable body
/// is a 400, not a panic inside `lambda_http`.
pub async fn run<S: Search>(handler: QueryHandler<S>) -> Result<(), Error> {
    let guard = Base64Guard::new();
    let (handler, guard_ref) = (&handler, &guard);
    let service = service_fn(move |request: Request| async move {
        if guard_ref.is_marked(&request) {
            let e = sensor_core::query::params::ParamError::new(
                "body",
                "is marked base64-encoded (isBase64Encoded) but is not valid base64",
            );
            return Ok::<_, Error>(handler.response(&Answer::bad_parameter(&e)));
        }
        Ok(handler.handle(request).await)
    });
    Runtime::new(Adapter::from(service))
        .layer(guard.layer())
        .run()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{parse_cors_origin, parse_viewer_keys};
    use sensor_model::domain::sensor::Sensor;
    use sensor_model::rules::Rules;
    use serde_json::{json, Value};

    struct NoSearch;

    impl Search for NoSearch {
        async fn search(
            &self,
            _indices: &str,
            _body: &Value,
        ) -> Result<Value, sensor_core::ports::DownstreamError> {
            Ok(json!({}))
        }
    }

    /// A REST (v1) proxy event for `GET path`, with the key id API Gateway checked.
    fn event(path: &str, key_id: Option<&str>) -> Request {
        let event = json!({
            "resource": path, "path": path, "httpMethod": "GET", "headers": {},
            "multiValueHeaders": {}, "queryStringParameters": null,
            "multiValueQueryStringParameters": null, "pathParameters": null,
            "stageVariables": null, "body": null, "isBase64Encoded": false,
            "requestContext": {"accountId": "123456789012", "apiId": "abc", "resourceId": "r",
                "stage": "v1", "requestId": "id", "resourcePath": path, "httpMethod": "GET",
                "path": format!("/v1{path}"), "protocol": "HTTP/1.1",
                "identity": {"sourceIp": "127.0.0.1", "apiKeyId": key_id}}
        });
        lambda_http::request::from_str(&event.to_string()).expect("a REST event")
    }

    #[tokio::test]
    async fn only_viewer_keys_read_fleet_data_and_the_page_is_open() {
        let handler = QueryHandler::new(
            sensor_core::query::QueryApi::new(
                NoSearch,
                Indices::new(vec![(Sensor::Dust, "dust*".into())]),
                Rules::default(),
                "<html></html>",
            ),
            None,
        )
        .with_viewer_keys(parse_viewer_keys(Some("viewer1, viewer2")).unwrap());
        let status = |r: Response<Body>| r.status().as_u16();
        assert_eq!(
            status(handler.handle(event("/api/rules", Some("viewer2"))).await),
            200
        );
        assert_eq!(
            status(handler.handle(event("/api/rules", Some("boxkey"))).await),
            403
        );
        assert_eq!(status(handler.handle(event("/api/boxes", None)).await), 403);
        assert_eq!(
            status(handler.handle(event("/", None)).await),
            200,
            "stage prefix ignored"
        );
        assert!(parse_viewer_keys(Some("a,b-c")).is_err());
        assert_eq!(parse_viewer_keys(Some(" ")).unwrap(), None);
    }

    fn request(method: &str, path: &str) -> Request {
        http::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::Empty)
            .expect("request")
    }

    #[tokio::test]
    async fn cors_headers_only_for_the_configured_origin_and_the_page_has_a_csp() {
        let api = || {
            sensor_core::query::QueryApi::new(
                NoSearch,
                Indices::new(vec![(Sensor::Dust, "dust*".into())]),
                Rules::default(),
                "<html></html>",
            )
        };
        let origin = parse_cors_origin(Some("https://fleet.example.com")).unwrap();
        let with = QueryHandler::new(api(), origin);
        let preflight = with.handle(request("OPTIONS", "/api/boxes")).await;
        assert_eq!(preflight.status(), 204);
        let h = preflight.headers();
        assert_eq!(
            h["access-control-allow-origin"],
            "https://fleet.example.com"
        );
        assert_eq!(h["access-control-allow-headers"], "x-api-key");
        assert_eq!(h["access-control-allow-methods"], "GET, OPTIONS");
        let get = with.handle(request("GET", "/api/rules")).await;
        assert_eq!(
            get.headers()["access-control-allow-origin"],
            "https://fleet.example.com"
        );
        assert_eq!(get.headers()["cache-control"], "no-store");

        let without = QueryHandler::new(api(), None);
        let get = without.handle(request("GET", "/api/rules")).await;
        assert!(!get.headers().contains_key("access-control-allow-origin"));
        let page = without.handle(request("GET", "/")).await;
        assert!(page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("connect-src 'self'"));
    }

    #[tokio::test]
    async fn the_sample_events_are_answered() {
        let handler = QueryHandler::new(
            sensor_core::query::QueryApi::new(
                NoSearch,
                Indices::new(crate::settings::parse_indices(None).unwrap()),
                Rules::default(),
                "<html></html>",
            ),
            None,
        )
        .with_viewer_keys(Some(vec!["k1k2k3".into()]));
        for (file, status) in [
            (
                include_str!("../../../events/query/readings-apigw-rest.json"),
                200,
            ),
            (
                include_str!("../../../events/query/boxes-apigw-rest.json"),
                200,
            ),
            (
                include_str!("../../../events/query/page-apigw-rest.json"),
                200,
            ),
        ] {
            let request = lambda_http::request::from_str(file).expect("an event");
            let response = handler.handle(request).await;
            assert_eq!(response.status().as_u16(), status);
        }
    }

    #[test]
    fn cors_origin_is_one_plain_origin() {
        assert_eq!(parse_cors_origin(None).unwrap(), None);
        assert_eq!(parse_cors_origin(Some(" ")).unwrap(), None);
        assert_eq!(
            parse_cors_origin(Some("https://fleet.example.com")).unwrap(),
            Some(HeaderValue::from_static("https://fleet.example.com"))
        );
        assert_eq!(
            parse_cors_origin(Some("http://127.0.0.1:8080/")).unwrap(),
            Some(HeaderValue::from_static("http://127.0.0.1:8080"))
        );
        for bad in [
            "*",
            "fleet.example.com",
            "https://fleet.example.com/app",
            "https://a.example?x=1",
            "ftp://a.example",
            "https://user@a.example",
        ] {
            assert!(parse_cors_origin(Some(bad)).is_err(), "{bad}");
        }
    }
}
