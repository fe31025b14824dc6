//! `cargo run --release -p querybench -- [--release-functions] [--runs 50]`: the read
//! API's figures for BENCHMARKS.md, never a timed test.
//!
//! 1. Loads 100,000 documents straight into osmem-server with `_bulk` (built by the
//!    ingest code itself: `Reading::parse` + `Document::build`, so they are the documents
//!    the functions write): one month of group `month-1` at a 30 s cadence (86,400
//!    gasdetector readings, some over the no2 threshold), and a fleet of 50 groups sharing
//!    the other 13,600 across gasdetector, dust and temp over the same month.
//! 2. Starts the query function under `cargo lambda watch` behind the local gateway and
//!    times, after a warm-up, `--runs` requests of each: `/api/readings` for the month
//!    (automatic interval: 30 min, 1,440 buckets), `/api/boxes` for the month (51 groups),
//!    and the first page of `/api/warnings`; and, as the floor, the same search bodies
//!    (built by `sensor_core::query::search`) sent straight to osmem-server, so the table shows
//!    what the server costs and what the gateway and the function add.

use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use integration_tests::{eventually, start_watch, Peers, WATCH_BUILD};
use local_aws::{Gateway, GatewayConfig};
use sensor_aws::opensearch::bulk_body;
use sensor_model::document::Document;
use sensor_model::domain::arrival::{AheadTolerance, Arrival};
use sensor_model::index_name::IndexName;
use sensor_model::rules::Rules;
use sensor_model::{Reading, Sensor};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const MONTH_GROUP: &str = "month-1";
const FLEET: usize = 50;
const TOTAL: usize = 100_000;
const CADENCE_S: i64 = 30;

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0)
        .single()
        .expect("a valid start")
}

fn measure(created: &str, value: f64) -> Value {
    json!({"sensorid": "1", "sensortype": "2", "value": format!("{value:.2}"), "createdtime": created})
}

/// A reading of `sensor` for `group` at `t`, with values that wander (and, for no2, cross
/// the 88 threshold now and then).
fn reading(sensor: Sensor, group: &str, t: DateTime<Utc>, i: usize, gps: &str) -> Value {
    let created = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let wave = ((i as f64) / 240.0).sin();
    let mut body = json!({"groupid": group, "gps": gps});
    match sensor {
        Sensor::Gasdetector => {
            body["no2"] = measure(&created, 60.0 + 30.0 * wave);
            body["co"] = measure(&created, 20.0 + 5.0 * wave);
            body["c2h5oh"] = measure(&created, 26.0);
            body["h2"] = measure(&created, 400.0);
        }
        Sensor::Dust => {
            body["pm1"] = measure(&created, 10.0 + 4.0 * wave);
            body["pm25"] = measure(&created, 20.0 + 10.0 * wave);
            body["pm10"] = measure(&created, 40.0 + 20.0 * wave);
        }
        Sensor::Temp => {
            body["temperature"] = measure(&created, 20.0 + 8.0 * wave);
            body["humidity"] = measure(&created, 50.0 + 20.0 * wave);
        }
    }
    body
}

fn document(sensor: Sensor, body: Value, rules: &Rules) -> Document {
    let reading = Reading::parse(sensor, body, chrono_tz::Tz::UTC).expect("a valid reading");
    let warnings: Vec<_> = reading
        .measures()
        .iter()
        .filter(|m| rules.check(m.measure(), m.value()).is_some())
        .map(|m| m.measure())
        .collect();
    let index = IndexName::parse(sensor.default_index()).expect("index name");
    // Received as taken: the documents of a fleet whose clocks are right.
    let arrival = Arrival::new(reading.taken_at().utc(), AheadTolerance::default());
    Document::build(&reading, &index, &warnings, arrival)
}

fn documents() -> Vec<Document> {
    let rules = Rules::default();
    let mut docs = Vec::with_capacity(TOTAL);
    let month = 30 * 86_400 / CADENCE_S as usize; // 86,400
    for i in 0..month {
        let t = start() + ChronoDuration::seconds(i as i64 * CADENCE_S);
        let body = reading(Sensor::Gasdetector, MONTH_GROUP, t, i, "37.5665, 126.9780");
        docs.push(document(Sensor::Gasdetector, body, &rules));
    }
    let rest = TOTAL - month;
    let per_group = rest / FLEET;
    let step = 30 * 86_400 / per_group as i64;
    for g in 0..FLEET {
        let group = format!("fleet-{g:02}");
        let gps = format!(
            "{:.4}, {:.4}",
            35.0 + (g % 10) as f64 * 0.3,
            126.5 + (g / 10) as f64 * 0.4
        );
        for i in 0..per_group {
            let sensor = Sensor::ALL[i % 3];
            let t = start() + ChronoDuration::seconds(i as i64 * step + g as i64);
            docs.push(document(
                sensor,
                reading(sensor, &group, t, i, &gps),
                &rules,
            ));
        }
    }
    docs
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `runs` requests: GET `url`, or POST `body` to it (a search straight to osmem-server).
async fn time_route(
    http: &reqwest::Client,
    url: &str,
    body: Option<&Value>,
    runs: usize,
) -> (Vec<Duration>, Value) {
    let mut times = Vec::with_capacity(runs);
    let mut last = Value::Null;
    for _ in 0..runs {
        let started = Instant::now();
        let request = match body {
            Some(b) => http
                .post(url)
                .header("content-type", "application/json")
                .body(b.to_string()),
            None => http.get(url),
        };
        let response = request.send().await.expect("request");
        let status = response.status();
        let body = response.bytes().await.expect("body");
        times.push(started.elapsed());
        assert!(status.is_success(), "{url}: {status}");
        last = serde_json::from_slice(&body).unwrap_or(Value::Null);
    }
    times.sort();
    (times, last)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let release = args.iter().any(|a| a == "--release-functions");
    let runs: usize = arg_value(&args, "--runs")
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);

    let peers = Peers::start().await;
    let docs = documents();
    let load_started = Instant::now();
    for chunk in docs.chunks(5_000) {
        let refs: Vec<&Document> = chunk.iter().collect();
        let response = peers
            .opensearch
            .http
            .post(format!("{}/_bulk", peers.opensearch.url))
            .header("content-type", "application/x-ndjson")
            .body(bulk_body(&refs))
            .send()
            .await
            .expect("bulk");
        assert!(
            response.status().is_success(),
            "bulk: {}",
            response.status()
        );
    }
    let loaded = load_started.elapsed();
    let mut count = 0;
    for index in ["gasdetect", "dust", "temp"] {
        count += peers
            .opensearch
            .count(index, json!({"match_all": {}}))
            .await;
    }
    assert_eq!(count as usize, TOTAL, "documents in osmem-server");

    let watch_args: Vec<&std::ffi::OsStr> = if release {
        vec![std::ffi::OsStr::new("--release")]
    } else {
        Vec::new()
    };
    let (_watch, watch_port) = start_watch(&peers.env(), &watch_args).await;
    let gateway = Gateway::start(
        ([127, 0, 0, 1], 0).into(),
        GatewayConfig::sensors(format!("http://127.0.0.1:{watch_port}")),
    )
    .await
    .expect("gateway");
    let http = reqwest::Client::new();
    let base = gateway.url();
    eventually("the query function to answer", WATCH_BUILD, || {
        let request = http.get(format!("{base}/api/rules")).send();
        async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;

    let (from, to) = (start(), start() + ChronoDuration::days(30));
    let range = format!(
        "from={}&to={}",
        from.format("%Y-%m-%dT%H:%M:%SZ"),
        to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    let span = sensor_core::query::params::TimeRange { from, to };
    // The page's default view: the last 24 hours (of the month loaded).
    let day = sensor_core::query::params::TimeRange {
        from: to - ChronoDuration::days(1),
        to,
    };
    let day_range = format!(
        "from={}&to={}",
        day.from.format("%Y-%m-%dT%H:%M:%SZ"),
        day.to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    let group = sensor_model::domain::group_id::GroupId::parse(MONTH_GROUP).expect("group");
    let os = &peers.opensearch.url;
    let routes = [
        (
            "/api/readings (one month, auto interval)",
            format!(
                "{base}/api/readings?sensor=gasdetector&groupid={MONTH_GROUP}&measure=no2&{range}"
            ),
            format!("{os}/gasdetect*/_search"),
            sensor_core::query::search::readings(
                Sensor::Gasdetector,
                &group,
                sensor_model::Measure::No2,
                &span,
                sensor_core::query::interval::Interval::auto(span.span()),
            ),
        ),
        (
            "/api/boxes (one month)",
            format!("{base}/api/boxes?{range}"),
            format!("{os}/gasdetect*,dust*,temp*/_search"),
            sensor_core::query::search::boxes(&span),
        ),
        (
            "/api/readings (last 24 h, the page's default)",
            format!("{base}/api/readings?sensor=gasdetector&groupid={MONTH_GROUP}&measure=no2&{day_range}"),
            format!("{os}/gasdetect*/_search"),
            sensor_core::query::search::readings(
                Sensor::Gasdetector,
                &group,
                sensor_model::Measure::No2,
                &day,
                sensor_core::query::interval::Interval::auto(day.span()),
            ),
        ),
        (
            "/api/boxes (last 24 h, the page's default)",
            format!("{base}/api/boxes?{day_range}"),
            format!("{os}/gasdetect*,dust*,temp*/_search"),
            sensor_core::query::search::boxes(&day),
        ),
        (
            "/api/warnings (first page of 50)",
            format!("{base}/api/warnings?{range}"),
            format!("{os}/gasdetect*,dust*,temp*/_search"),
            sensor_core::query::search::warnings(&span, None, 50, None),
        ),
    ];
    println!(
        "{TOTAL} documents loaded in {:.1} s; query function in {} mode; {runs} runs per route after 3 warm-up requests\n",
        loaded.as_secs_f64(),
        if release { "release" } else { "debug" }
    );
    println!(
        "| route | answer | p50 | p95 | max | osmem-server alone p50 / p95 |\n|---|---|---:|---:|---:|---:|"
    );
    // Gateway + function with no search behind them: what they add to every route.
    let rules_url = format!("{base}/api/rules");
    let _ = time_route(&http, &rules_url, None, 3).await;
    let (rules, _) = time_route(&http, &rules_url, None, runs).await;
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!(
        "| /api/rules (no search: gateway + function alone) | 9 rules | {} | {} | {} | - |",
        ms(percentile(&rules, 50.0)),
        ms(percentile(&rules, 95.0)),
        ms(*rules.last().expect("runs"))
    );
    for (name, url, direct_url, body) in routes {
        let _ = time_route(&http, &url, None, 3).await;
        let (times, last) = time_route(&http, &url, None, runs).await;
        let (direct, _) = time_route(&http, &direct_url, Some(&body), runs).await;
        let answer = if let Some(b) = last["buckets"].as_array() {
            format!(
                "{} buckets of {}, {} readings",
                b.len(),
                last["interval"].as_str().unwrap_or("?"),
                last["count"]
            )
        } else if let Some(b) = last["boxes"].as_array() {
            format!("{} groups", b.len())
        } else {
            format!(
                "{} warnings, next page: {}",
                last["warnings"].as_array().map_or(0, Vec::len),
                last.get("next").is_some()
            )
        };
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| {name} | {answer} | {} | {} | {} | {} / {} |",
            ms(percentile(&times, 50.0)),
            ms(percentile(&times, 95.0)),
            ms(*times.last().expect("runs")),
            ms(percentile(&direct, 50.0)),
            ms(percentile(&direct, 95.0)),
        );
    }
}
