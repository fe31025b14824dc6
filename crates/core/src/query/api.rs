//! The read API's routes, independent of Lambda and HTTP types: method, path and query
//! pairs in, an [`Answer`] out. Parameters are validated (`params`, `interval`) before a
//! search is built (`search`) and run through the [`Search`] port; its JSON is shaped
//! (`shape`) into the answer. Every outcome is an answer: 400 naming the parameter, 404,
//! 405, or 503 with `Retry-After` when OpenSearch fails; nothing here panics.

use crate::downstream::Target;
use crate::ports::{DownstreamError, Search};
use crate::query::interval::Interval;
use crate::query::params::{self, Cursor, ParamError, Params, TimeRange};
use crate::query::search;
use crate::query::shape::{self, SeriesRequest};
use crate::retry::{self, RetryPolicy};
use chrono::{DateTime, Duration, Utc};
use sensor_model::domain::sensor::Sensor;
use sensor_model::rules::Rules;
use serde_json::{json, Value};
use tokio::time::Instant;

/// How long one request may spend on a search, retries included (API Gateway answers 504
/// after 29 s; a reader should see the 503 well before).
const SEARCH_BUDGET: std::time::Duration = std::time::Duration::from_secs(8);
/// Retries of a search: few and short, a reader is waiting.
const SEARCH_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    base_delay: std::time::Duration::from_millis(50),
    max_delay: std::time::Duration::from_millis(500),
    attempt_timeout: std::time::Duration::from_secs(5),
};

/// Seconds a client should wait after a 503 (the page retries on its next refresh anyway).
pub const RETRY_AFTER_SECS: u32 = 5;
/// Widest range any route accepts: a bit over a year, so "the last 12 months" always fits.
pub const MAX_RANGE_DAYS: i64 = 400;
/// Warnings per page: default and most.
pub const PAGE_DEFAULT: u32 = 50;
pub const PAGE_MAX: u32 = 500;

/// The routes, as api/openapi.yaml declares them.
pub const PAGE_PATH: &str = "/";
pub const API_PATHS: [&str; 4] = ["/api/boxes", "/api/readings", "/api/warnings", "/api/rules"];

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Json(Value),
    /// The page (embedded in the function binary at build time).
    Html(&'static str),
    Empty,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Body,
    pub retry_after: Option<u32>,
    /// `Allow` on a 405 and on a preflight.
    pub allow: Option<&'static str>,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body: Body::Json(body),
            retry_after: None,
            allow: None,
        }
    }

    pub fn bad_parameter(e: &ParamError) -> Answer {
        Answer::json(
            400,
            json!({"error": "invalid_parameter", "parameter": e.parameter, "message": e.message}),
        )
    }

    fn unavailable(e: &DownstreamError) -> Answer {
        tracing::warn!(error = %e, "search failed");
        Answer {
            retry_after: Some(RETRY_AFTER_SECS),
            ..Answer::json(
                503,
                json!({"error": "unavailable", "message": "OpenSearch did not answer the search; retry"}),
            )
        }
    }

    fn method_not_allowed(method: &str, allow: &'static str) -> Answer {
        let shown: String = method.chars().take(20).collect();
        Answer {
            allow: Some(allow),
            ..Answer::json(
                405,
                json!({"error": "method_not_allowed", "message": format!("{shown} is not allowed; use {allow}")}),
            )
        }
    }
}

/// Index patterns to search: one per sensor (default `gasdetect*`, `dust*`, `temp*`,
/// so dated indices match), from `QUERY_INDICES` (same form as `NO_DATA_INDICES`).
#[derive(Debug, Clone)]
pub struct Indices {
    per_sensor: Vec<(Sensor, String)>,
}

impl Indices {
    pub fn new(per_sensor: Vec<(Sensor, String)>) -> Indices {
        Indices { per_sensor }
    }

    /// The pattern of `sensor`; `None` when the configuration leaves that sensor out.
    pub fn of(&self, sensor: Sensor) -> Option<&str> {
        self.per_sensor
            .iter()
            .find(|(s, _)| *s == sensor)
            .map(|(_, p)| p.as_str())
    }

    /// Every pattern, comma-separated (one multi-index search).
    pub fn all(&self) -> String {
        let patterns: Vec<&str> = self.per_sensor.iter().map(|(_, p)| p.as_str()).collect();
        patterns.join(",")
    }
}

pub struct QueryApi<S> {
    search: S,
    indices: Indices,
    rules: Rules,
    page: &'static str,
}

impl<S: Search> QueryApi<S> {
    pub fn new(search: S, indices: Indices, rules: Rules, page: &'static str) -> QueryApi<S> {
        QueryApi {
            search,
            indices,
            rules,
            page,
        }
    }

    /// One search through the one retry: a throttled or failing OpenSearch is tried again
    /// briefly (a reader is waiting), then answered 503 with `Retry-After`.
    async fn find(&self, indices: &str, body: &Value) -> Result<Value, DownstreamError> {
        let deadline = Instant::now() + SEARCH_BUDGET;
        retry::call(SEARCH_RETRY, deadline, Target::OpenSearch, "search", || {
            self.search.search(indices, body)
        })
        .await
    }

    /// The answer to one request; `now` fixes the default ranges (tests pass their own).
    pub async fn answer(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Answer {
        let is_api = API_PATHS.contains(&path);
        if path != PAGE_PATH && !is_api {
            return Answer::json(
                404,
                json!({"error": "not_found", "message": "no such route; see /openapi.json"}),
            );
        }
        match method {
            "GET" => {}
            "OPTIONS" if is_api => {
                // A CORS preflight; the Lambda boundary adds the CORS headers when an
                // origin is configured.
                return Answer {
                    status: 204,
                    body: Body::Empty,
                    retry_after: None,
                    allow: Some("GET, OPTIONS"),
                };
            }
            _ if is_api => return Answer::method_not_allowed(method, "GET, OPTIONS"),
            _ => return Answer::method_not_allowed(method, "GET"),
        }
        let result = match path {
            "/api/boxes" => self.boxes(query, now).await,
            "/api/readings" => self.readings(query, now).await,
            "/api/warnings" => self.warnings(query, now).await,
            "/api/rules" => Params::parse(query.iter().map(|(k, v)| (k, v)), &[])
                .map(|_| Ok(shape::rules(&self.rules))),
            _ => {
                // The page takes no parameters but ignores them: links with tracking
                // suffixes or cache busters must still open it.
                return Answer {
                    status: 200,
                    body: Body::Html(self.page),
                    retry_after: None,
                    allow: None,
                };
            }
        };
        match result {
            Ok(Ok(mut body)) => {
                strip_nulls(&mut body);
                Answer::json(200, body)
            }
            Ok(Err(e)) => Answer::unavailable(&e),
            Err(e) => Answer::bad_parameter(&e),
        }
    }

    async fn boxes(
        &self,
        query: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<Result<Value, DownstreamError>, ParamError> {
        let p = Params::parse(query.iter().map(|(k, v)| (k, v)), &["from", "to"])?;
        let range = TimeRange::parse(&p, now, Duration::days(7), max_range())?;
        let body = search::boxes(&range);
        Ok(self
            .find(&self.indices.all(), &body)
            .await
            .map(|r| shape::boxes(&r, &range)))
    }

    async fn readings(
        &self,
        query: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<Result<Value, DownstreamError>, ParamError> {
        let p = Params::parse(
            query.iter().map(|(k, v)| (k, v)),
            &["sensor", "groupid", "measure", "from", "to", "interval"],
        )?;
        let sensor = params::sensor(p.required("sensor")?)?;
        let group = params::group(p.required("groupid")?)?;
        let measure = params::measure(sensor, p.required("measure")?)?;
        let range = TimeRange::parse(&p, now, Duration::days(1), max_range())?;
        let interval = match p.get("interval") {
            Some(text) => Interval::parse(text, range.span())?,
            None => Interval::auto(range.span()),
        };
        let Some(indices) = self.indices.of(sensor) else {
            return Err(ParamError::new(
                "sensor",
                format!("{sensor} is not searched by this deployment (QUERY_INDICES)"),
            ));
        };
        let body = search::readings(sensor, &group, measure, &range, interval);
        let request = SeriesRequest {
            sensor,
            groupid: group.as_str(),
            measure,
            range,
            interval,
        };
        Ok(self
            .find(indices, &body)
            .await
            .map(|r| shape::readings(&r, &request)))
    }

    async fn warnings(
        &self,
        query: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<Result<Value, DownstreamError>, ParamError> {
        let p = Params::parse(
            query.iter().map(|(k, v)| (k, v)),
            &["from", "to", "groupid", "size", "after"],
        )?;
        let range = TimeRange::parse(&p, now, Duration::days(7), max_range())?;
        let group = p.get("groupid").map(params::group).transpose()?;
        let size = params::page_size(&p, PAGE_DEFAULT, PAGE_MAX)?;
        let after = p.get("after").map(Cursor::parse).transpose()?;
        let body = search::warnings(&range, group.as_ref(), size, after.as_ref());
        Ok(self
            .find(&self.indices.all(), &body)
            .await
            .map(|r| shape::warnings(&r, &self.rules, size)))
    }
}

/// Unknown fields are left out rather than `null`: the contract (OpenAPI 3.0, read by
/// plain JSON Schema validators too) marks them optional instead of nullable.
fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn max_range() -> Duration {
    Duration::days(MAX_RANGE_DAYS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::sync::Mutex;

    /// Answers every search with `reply` and keeps what it was asked.
    struct FakeSearch {
        reply: Result<Value, DownstreamError>,
        asked: Mutex<Vec<(String, Value)>>,
    }

    impl Search for FakeSearch {
        async fn search(&self, indices: &str, body: &Value) -> Result<Value, DownstreamError> {
            self.asked
                .lock()
                .unwrap()
                .push((indices.to_string(), body.clone()));
            self.reply.clone()
        }
    }

    fn api(reply: Result<Value, DownstreamError>) -> QueryApi<FakeSearch> {
        QueryApi::new(
            FakeSearch {
                reply,
                asked: Mutex::default(),
            },
            Indices::new(vec![
                (Sensor::Gasdetector, "gasdetect*".into()),
                (Sensor::Dust, "dust*".into()),
            ]),
            Rules::default(),
            "<html>page</html>",
        )
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    async fn get(api: &QueryApi<FakeSearch>, path: &str, pairs: &[(&str, &str)]) -> Answer {
        api.answer("GET", path, &q(pairs), now()).await
    }

    fn parameter(answer: &Answer) -> String {
        assert_eq!(answer.status, 400, "{answer:?}");
        match &answer.body {
            Body::Json(v) => {
                assert_eq!(v["error"], "invalid_parameter");
                v["parameter"].as_str().unwrap().to_string()
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn each_bad_readings_parameter_is_named() {
        let api = api(Ok(json!({})));
        let good = [
            ("sensor", "gasdetector"),
            ("groupid", "2"),
            ("measure", "no2"),
        ];
        assert_eq!(get(&api, "/api/readings", &good).await.status, 200);
        for missing in ["sensor", "groupid", "measure"] {
            let pairs: Vec<_> = good
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            assert_eq!(
                parameter(&get(&api, "/api/readings", &pairs).await),
                missing
            );
        }
        let cases = [
            ("sensor", "air"),
            ("groupid", "a/b"),
            ("measure", "pm25"),
            ("from", "now"),
            ("to", "2026-13-01T00:00:00Z"),
            ("interval", "1s"),
            ("interval", "5x"),
            ("colour", "red"),
        ];
        for (key, value) in cases {
            let mut pairs: Vec<_> = good.iter().copied().filter(|(k, _)| *k != key).collect();
            pairs.push((key, value));
            assert_eq!(
                parameter(&get(&api, "/api/readings", &pairs).await),
                key,
                "{key}={value}"
            );
        }
        let dust_only = QueryApi::new(
            FakeSearch {
                reply: Ok(json!({})),
                asked: Mutex::default(),
            },
            Indices::new(vec![(Sensor::Dust, "dust*".into())]),
            Rules::default(),
            "",
        );
        assert_eq!(
            parameter(&get(&dust_only, "/api/readings", &good).await),
            "sensor"
        );
    }

    #[tokio::test]
    async fn readings_search_the_sensor_pattern_with_an_automatic_interval() {
        let api = api(Ok(json!({"aggregations": {"series": {"buckets": []}}})));
        let answer = get(
            &api,
            "/api/readings",
            &[
                ("sensor", "dust"),
                ("groupid", "9"),
                ("measure", "pm25"),
                ("from", "2026-11-01T00:00:00Z"),
                ("to", "2026-12-01T00:00:00Z"),
            ],
        )
        .await;
        let Body::Json(body) = &answer.body else {
            panic!("{answer:?}")
        };
        assert_eq!(body["interval"], "30m");
        let asked = api.search.asked.lock().unwrap();
        assert_eq!(asked[0].0, "dust*");
        assert_eq!(
            asked[0].1["aggs"]["series"]["date_histogram"]["fixed_interval"],
            "1800s"
        );
    }

    #[tokio::test]
    async fn other_routes_methods_and_failures() {
        let api = api(Ok(json!({})));
        let page = get(&api, "/", &[("utm", "x")]).await;
        assert_eq!(page.body, Body::Html("<html>page</html>"));
        assert_eq!(get(&api, "/api/nope", &[]).await.status, 404);
        let post = api.answer("POST", "/api/boxes", &[], now()).await;
        assert_eq!((post.status, post.allow), (405, Some("GET, OPTIONS")));
        let options = api.answer("OPTIONS", "/api/boxes", &[], now()).await;
        assert_eq!(options.status, 204);
        assert_eq!(
            api.answer("DELETE", "/", &[], now()).await.allow,
            Some("GET")
        );
        assert_eq!(
            parameter(&get(&api, "/api/rules", &[("x", "1")]).await),
            "x"
        );
        let rules = get(&api, "/api/rules", &[]).await;
        assert_eq!(rules.status, 200);
        assert_eq!(
            parameter(&get(&api, "/api/warnings", &[("size", "0")]).await),
            "size"
        );
        assert_eq!(
            parameter(&get(&api, "/api/warnings", &[("after", "x")]).await),
            "after"
        );
        assert_eq!(
            parameter(&get(&api, "/api/boxes", &[("from", "2000-01-01T00:00:00Z")]).await),
            "from"
        );
        let boxes = get(&api, "/api/boxes", &[]).await;
        assert_eq!(boxes.status, 200);
        assert_eq!(api.search.asked.lock().unwrap()[0].0, "gasdetect*,dust*");

        let down = self::api(Err(DownstreamError::Retryable("connection refused".into())));
        let answer = get(&down, "/api/boxes", &[]).await;
        assert_eq!(
            (answer.status, answer.retry_after),
            (503, Some(RETRY_AFTER_SECS))
        );
        let Body::Json(body) = answer.body else {
            panic!()
        };
        assert!(
            !body.to_string().contains("refused"),
            "no internals in answers"
        );
    }
}
