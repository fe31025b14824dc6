//! The read API against real peers: readings posted through the ingest pipeline (real
//! adapters, osmem-server, the local IoT endpoint) come back from every route of the
//! query function (built from the environment as on Lambda) with the right counts,
//! buckets, latest values, warnings and pages.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use integration_tests::{gas_reading, post, Peers};
use lambda_http::{Body, RequestExt};
use sensor_lambda::query_function::QueryFunction;
use sensor_model::Sensor;
use serde_json::{json, Value};
use std::collections::HashMap;

const START: &str = "2026-11-30 10:00:00";
const FROM: &str = "2026-11-30T09:00:00Z";
const TO: &str = "2026-11-30T11:00:00Z";

fn at(offset_s: i64) -> String {
    let start = NaiveDateTime::parse_from_str(START, "%Y-%m-%d %H:%M:%S").expect("start");
    (start + Duration::seconds(offset_s))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

async fn get(handler: &QueryFunction, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in query {
        map.entry((*k).to_owned())
            .or_default()
            .push((*v).to_owned());
    }
    let request = http::Request::builder()
        .method("GET")
        .uri(path)
        .body(Body::Empty)
        .expect("request")
        .with_query_string_parameters(map);
    let response = handler.handle(request).await;
    let status = response.status().as_u16();
    let body = match response.body() {
        Body::Text(t) => t.clone(),
        _ => String::new(),
    };
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_readings_come_back_from_every_route() {
    let started = Utc::now();
    let peers = Peers::start().await;
    let gas = peers.app(Sensor::Gasdetector).await;
    let temp = peers.app(Sensor::Temp).await;

    // Group q1: ten gas readings 30 s apart (no2 10..16, then 90, 95, 99: three warnings),
    // one temp reading; group q2: one gas reading elsewhere.
    let no2 = ["10", "11", "12", "13", "14", "15", "16", "90", "95", "99"];
    for (i, value) in no2.iter().enumerate() {
        let (status, reply) = post(
            &gas,
            "gasdetector",
            &gas_reading("q1", value, &at(i as i64 * 30)),
        )
        .await;
        assert_eq!(status, 200, "{reply}");
    }
    let mut other: Value = serde_json::from_str(&gas_reading("q2", "20", &at(60))).unwrap();
    other["gps"] = json!("35.1796, 129.0756");
    assert_eq!(post(&gas, "gasdetector", &other.to_string()).await.0, 200);
    let t = json!({"groupid": "q1", "gps": "37.61, 126.99",
        "temperature": {"sensorid": "1", "sensortype": "2", "value": "21.5", "createdtime": at(100)},
        "humidity": {"sensorid": "3", "sensortype": "4", "value": 85, "createdtime": at(100)}});
    assert_eq!(post(&temp, "temp", &t.to_string()).await.0, 200);
    peers
        .opensearch
        .wait_count("gasdetect", json!({"match_all": {}}), 11)
        .await;
    peers
        .opensearch
        .wait_count("temp", json!({"match_all": {}}), 1)
        .await;

    let env = peers.env();
    let handler = QueryFunction::from_lookup(|k: &str| env.get(k).cloned(), "<html>page</html>")
        .await
        .expect("query function init");
    let range = [("from", FROM), ("to", TO)];

    // /api/boxes: both groups, q1 with its latest values per sensor and its warnings.
    let (status, boxes) = get(&handler, "/api/boxes", &range).await;
    assert_eq!(status, 200, "{boxes}");
    let list = boxes["boxes"].as_array().expect("boxes");
    let ids: Vec<&str> = list.iter().filter_map(|b| b["groupid"].as_str()).collect();
    assert_eq!(ids, ["q1", "q2"]);
    let q1 = &list[0];
    // Last seen is when we last heard from the box (receive time), not what its clock
    // said; the newest reading's own (effective) time is `time`.
    let last_seen = q1["last_seen"].as_str().expect("last_seen");
    let last_seen = DateTime::parse_from_rfc3339(last_seen).expect("RFC 3339");
    assert!(
        (started - Duration::seconds(1)..=Utc::now()).contains(&last_seen.with_timezone(&Utc)),
        "{last_seen} is not this run's receive time"
    );
    assert_eq!(q1["sensors"][0]["time"], "2026-11-30T10:04:30.000Z");
    assert_eq!(
        q1["clock_skewed"], true,
        "readings dated days before they arrived"
    );
    assert_eq!(q1["warnings"], json!(["humidity", "no2"]));
    let gas_latest = &q1["sensors"][0];
    assert_eq!(gas_latest["sensor"], "gasdetector");
    assert_eq!(gas_latest["count"], 10);
    assert_eq!(gas_latest["latest"]["no2"], 99.0);
    assert_eq!(gas_latest["latest"]["co"], 26.2);
    assert_eq!(gas_latest["warnings"], json!(["no2"]));
    let temp_latest = &q1["sensors"][1];
    assert_eq!(temp_latest["sensor"], "temp");
    assert_eq!(
        temp_latest["latest"],
        json!({"temperature": 21.5, "humidity": 85.0})
    );
    assert_eq!(q1["location"]["lat"], 37.61002501514269);
    assert_eq!(
        list[1]["location"],
        json!({"lat": 35.1796, "lon": 129.0756})
    );
    assert!(list[1]["warnings"].as_array().unwrap().is_empty());

    // /api/readings: one-minute buckets hold two readings each.
    let series = [
        ("sensor", "gasdetector"),
        ("groupid", "q1"),
        ("measure", "no2"),
        ("from", FROM),
        ("to", TO),
    ];
    let mut by_minute = series.to_vec();
    by_minute.push(("interval", "1m"));
    let (status, readings) = get(&handler, "/api/readings", &by_minute).await;
    assert_eq!(status, 200, "{readings}");
    assert_eq!(readings["count"], 10);
    let buckets = readings["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 5, "{readings}");
    assert_eq!(buckets[0]["t"], 1_796_032_800_000i64); // 2026-11-30T10:00:00Z
    assert_eq!(buckets[0]["count"], 2);
    assert_eq!(
        (
            buckets[0]["min"].as_f64(),
            buckets[0]["avg"].as_f64(),
            buckets[0]["max"].as_f64()
        ),
        (Some(10.0), Some(10.5), Some(11.0))
    );
    assert_eq!(buckets[4]["min"], 95.0);
    assert_eq!(buckets[4]["max"], 99.0);
    // Left out, the interval is chosen (two hours: 5 s buckets, one reading each).
    let (_, auto) = get(&handler, "/api/readings", &series).await;
    assert_eq!(auto["interval"], "5s");
    assert_eq!(auto["buckets"].as_array().map(Vec::len), Some(10));
    // Another group's series is its own.
    let mut q2 = series.to_vec();
    q2[1] = ("groupid", "q2");
    assert_eq!(get(&handler, "/api/readings", &q2).await.1["count"], 1);
    let (status, bad) = get(&handler, "/api/readings", &series[..2]).await;
    assert_eq!((status, bad["parameter"].as_str()), (400, Some("measure")));

    // /api/warnings: newest first, two per page, then the rest with the cursor.
    let mut paged = range.to_vec();
    paged.push(("size", "2"));
    let (status, first) = get(&handler, "/api/warnings", &paged).await;
    assert_eq!(status, 200, "{first}");
    let items = first["warnings"].as_array().expect("warnings");
    let values: Vec<_> = items
        .iter()
        .map(|w| {
            (
                w["measures"][0]["measure"].clone(),
                w["measures"][0]["value"].clone(),
            )
        })
        .collect();
    assert_eq!(
        values,
        [(json!("no2"), json!(99.0)), (json!("no2"), json!(95.0))]
    );
    assert_eq!(items[0]["measures"][0]["threshold"], 88.0);
    assert_eq!(items[0]["measures"][0]["bound"], "high");
    assert_eq!(items[0]["groupid"], "q1");
    let next = first["next"].as_str().expect("a next page").to_owned();
    paged.push(("after", &next));
    let (_, second) = get(&handler, "/api/warnings", &paged).await;
    let rest: Vec<_> = second["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| w["measures"][0]["value"].clone())
        .collect();
    assert_eq!(
        rest,
        [json!(90.0), json!(85.0)],
        "the humidity warning last"
    );
    assert!(second.get("next").is_none(), "{second}");
    let (_, q2_warnings) = get(
        &handler,
        "/api/warnings",
        &[("from", FROM), ("to", TO), ("groupid", "q2")],
    )
    .await;
    assert_eq!(q2_warnings["warnings"], json!([]));

    // /api/rules: the thresholds in force; and the page.
    let (_, rules) = get(&handler, "/api/rules", &[]).await;
    let no2_rule = rules["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["measure"] == "no2"))
        .cloned()
        .expect("no2 rule");
    assert_eq!(no2_rule["high"], 88.0);
    assert_eq!(
        get(&handler, "/", &[]).await,
        (200, json!("<html>page</html>"))
    );
}

/// A box whose clock is hours ahead, and one years behind: both show in the default range
/// with what they sent, marked clock-skewed; the one ahead cannot pin
/// "latest" in the future, and its readings chart at their arrival.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boxes_with_a_wrong_clock_show_what_they_sent_marked_skewed() {
    let peers = Peers::start().await;
    let gas = peers.app(Sensor::Gasdetector).await;
    let started = Utc::now();
    let stamp = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let ahead = started + Duration::hours(3);
    for (i, value) in ["30", "40"].iter().enumerate() {
        let body = gas_reading("ahead", value, &stamp(ahead + Duration::seconds(i as i64)));
        assert_eq!(post(&gas, "gasdetector", &body).await.0, 200);
    }
    let behind = gas_reading("behind", "50", "2021-09-03 18:14:49");
    assert_eq!(post(&gas, "gasdetector", &behind).await.0, 200);
    // A live reading of a third box, with a right clock, for contrast.
    let live = gas_reading("live", "20", &stamp(started));
    assert_eq!(post(&gas, "gasdetector", &live).await.0, 200);
    peers
        .opensearch
        .wait_count("gasdetect", json!({"match_all": {}}), 4)
        .await;
    let answered = Utc::now();

    let env = peers.env();
    let handler = QueryFunction::from_lookup(|k: &str| env.get(k).cloned(), "<html>page</html>")
        .await
        .expect("query function init");
    let (status, boxes) = get(&handler, "/api/boxes", &[]).await;
    assert_eq!(status, 200, "{boxes}");
    let list = boxes["boxes"].as_array().expect("boxes");
    let find = |id: &str| {
        list.iter()
            .find(|b| b["groupid"] == id)
            .unwrap_or_else(|| panic!("box {id} missing from the default range: {boxes}"))
    };
    let time = |v: &Value| {
        DateTime::parse_from_rfc3339(v.as_str().expect("a time"))
            .expect("RFC 3339")
            .with_timezone(&Utc)
    };
    let window = started - Duration::seconds(1)..=answered + Duration::seconds(2);

    let ahead_box = find("ahead");
    assert_eq!(ahead_box["clock_skewed"], true);
    let sensor = &ahead_box["sensors"][0];
    assert_eq!(sensor["latest"]["no2"], 40.0, "the newest reading it sent");
    assert_eq!(sensor["clock_skewed"], true);
    let skew = sensor["clock_skew_s"].as_i64().expect("clock_skew_s");
    assert!((-3 * 3600 - 5..=-3 * 3600 + 5).contains(&skew), "{skew}");
    assert!(
        window.contains(&time(&ahead_box["last_seen"])),
        "{ahead_box}"
    );
    assert!(
        window.contains(&time(&sensor["time"])),
        "not dated in the future: {sensor}"
    );

    let behind_box = find("behind");
    assert_eq!(behind_box["clock_skewed"], true);
    assert_eq!(behind_box["sensors"][0]["latest"]["no2"], 50.0);
    assert!(
        window.contains(&time(&behind_box["last_seen"])),
        "{behind_box}"
    );

    let live_box = find("live");
    assert_eq!(live_box["clock_skewed"], false);
    assert_eq!(live_box["sensors"][0]["clock_skewed"], false);

    // The ahead box's readings are in its default-range series, at their arrival (plus
    // CLOCK_AHEAD_TOLERANCE, 2 s by default: a range ending "now" holds them once that
    // much time has passed).
    let settled = answered + Duration::seconds(3);
    if let Ok(wait) = (settled - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    let series = [
        ("sensor", "gasdetector"),
        ("groupid", "ahead"),
        ("measure", "no2"),
    ];
    let (status, readings) = get(&handler, "/api/readings", &series).await;
    assert_eq!(status, 200, "{readings}");
    assert_eq!(readings["count"], 2, "{readings}");
    let buckets = readings["buckets"].as_array().expect("buckets");
    let newest = buckets.last().expect("a bucket");
    assert_eq!(newest["max"], 40.0);
    let bucket_ms = newest["t"].as_i64().expect("t");
    assert!(
        bucket_ms <= answered.timestamp_millis() + 2_000,
        "{readings}"
    );
}
