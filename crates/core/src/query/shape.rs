//! From OpenSearch's answers to the read API's JSON (api/openapi.yaml: `Boxes`,
//! `Readings`, `Warnings`, `Rules`). Documents are the readings as received, so values may
//! be strings ("52.00") or numbers; anything that does not read as expected is left out
//! rather than failing the whole answer.

use crate::query::interval::Interval;
use crate::query::params::{rfc3339, Cursor, TimeRange};
use chrono::{DateTime, Utc};
use sensor_model::domain::measure::Measure;
use sensor_model::domain::sensor::Sensor;
use sensor_model::rules::{Bound, Rules};
use serde_json::{json, Map, Value};

/// A measure's value in a document: a JSON number or a numeric string.
fn number(value: &Value) -> Option<f64> {
    let n = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }?;
    n.is_finite().then_some(n)
}

fn measure_value(source: &Value, measure: Measure) -> Option<f64> {
    number(&source[measure.name()]["value"])
}

fn sensor_of(source: &Value) -> Option<Sensor> {
    Sensor::parse(source["sensor"].as_str()?)
}

/// `@timestamp` as stored, normalised to the API's spelling.
fn timestamp(source: &Value) -> Option<String> {
    let text = source["@timestamp"].as_str()?;
    let t = DateTime::parse_from_rfc3339(text).ok()?;
    Some(rfc3339(t.with_timezone(&Utc)))
}

/// `location` as `{lat, lon}` numbers, when it is one.
fn location(source: &Value) -> Value {
    let lat = source["location"]["lat"].as_f64();
    let lon = source["location"]["lon"].as_f64();
    match (lat, lon) {
        (Some(lat), Some(lon))
            if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
        {
            json!({"lat": lat, "lon": lon})
        }
        _ => Value::Null,
    }
}

/// The measures a document says tripped a rule, known ones only, in measure order.
fn warned(source: &Value, sensor: Sensor) -> Vec<Measure> {
    let names: Vec<&str> = source["warnings"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    sensor
        .measures()
        .iter()
        .copied()
        .filter(|m| names.contains(&m.name()))
        .collect()
}

fn names(measures: &[Measure]) -> Vec<&'static str> {
    measures.iter().map(|m| m.name()).collect()
}

/// `/api/boxes`: one entry per group (by group id), its sensors' newest readings.
pub fn boxes(response: &Value, range: &TimeRange) -> Value {
    let empty = Vec::new();
    let groups = response["aggregations"]["groups"]["buckets"]
        .as_array()
        .unwrap_or(&empty);
    let mut boxes = Vec::new();
    for group in groups {
        let Some(groupid) = bucket_key(&group["key"]) else {
            continue;
        };
        let mut sensors = Vec::new();
        let mut newest: Option<(String, Value)> = None;
        let mut group_warnings: Vec<&str> = Vec::new();
        let mut group_skewed = false;
        for bucket in group["sensors"]["buckets"].as_array().unwrap_or(&empty) {
            let Some(hit) = bucket["latest"]["hits"]["hits"].get(0) else {
                continue;
            };
            let source = &hit["_source"];
            let (Some(sensor), Some(newest_time)) = (sensor_of(source), timestamp(source)) else {
                continue;
            };
            // Last seen: when we last heard from it (our clock), whatever its clock says;
            // documents written before `date` was aggregated fall back to `@timestamp`.
            let last_seen = bucket["received"]["value"]
                .as_f64()
                .and_then(|ms| DateTime::<Utc>::from_timestamp_millis(ms as i64))
                .map(rfc3339)
                .unwrap_or_else(|| newest_time.clone());
            let clock_skewed = source["clock_skewed"].as_bool().unwrap_or(false);
            group_skewed |= clock_skewed;
            let mut latest = Map::new();
            for &m in sensor.measures() {
                if let Some(v) = measure_value(source, m) {
                    latest.insert(m.name().to_string(), json!(v));
                }
            }
            let warnings = warned(source, sensor);
            group_warnings.extend(names(&warnings));
            let place = location(source);
            // The group's position: from its newest reading that has one.
            let newer = newest.as_ref().is_none_or(|(t, _)| newest_time > *t);
            if !place.is_null() && newer {
                newest = Some((newest_time.clone(), place));
            }
            sensors.push(json!({
                "sensor": sensor.name(),
                "last_seen": last_seen,
                "time": newest_time,
                "received": source["date"].as_str(),
                "latest": latest,
                "warnings": names(&warnings),
                "count": bucket["doc_count"].as_u64().unwrap_or(0),
                "clock_skewed": clock_skewed,
                "clock_skew_s": source["clock_skew_s"].as_i64(),
            }));
        }
        if sensors.is_empty() {
            continue;
        }
        sensors.sort_by(|a, b| a["sensor"].as_str().cmp(&b["sensor"].as_str()));
        let last_seen = sensors
            .iter()
            .filter_map(|s| s["last_seen"].as_str())
            .max()
            .map(str::to_owned);
        group_warnings.sort_unstable();
        group_warnings.dedup();
        boxes.push(json!({
            "groupid": groupid,
            "last_seen": last_seen,
            "location": newest.map(|(_, l)| l).unwrap_or(Value::Null),
            "warnings": group_warnings,
            "clock_skewed": group_skewed,
            "sensors": sensors,
        }));
    }
    json!({
        "from": rfc3339(range.from),
        "to": rfc3339(range.to),
        "boxes": boxes,
    })
}

/// A terms bucket key as a string (a numeric group id may come back as a number).
fn bucket_key(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What `/api/readings` was asked, echoed with the series.
pub struct SeriesRequest<'a> {
    pub sensor: Sensor,
    pub groupid: &'a str,
    pub measure: Measure,
    pub range: TimeRange,
    pub interval: Interval,
}

/// `/api/readings`: buckets in time order, `t` in epoch milliseconds (what charts plot).
pub fn readings(response: &Value, request: &SeriesRequest<'_>) -> Value {
    let empty = Vec::new();
    let buckets: Vec<Value> = response["aggregations"]["series"]["buckets"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|b| {
            let t = b["key"]
                .as_i64()
                .or_else(|| b["key"].as_f64().map(|f| f as i64))?;
            let stats = &b["stats"];
            let count = stats["count"].as_u64().filter(|c| *c > 0)?;
            let stat = |name: &str| stats[name].as_f64().filter(|v| v.is_finite());
            Some(json!({
                "t": t,
                "count": count,
                "min": stat("min")?,
                "avg": stat("avg")?,
                "max": stat("max")?,
            }))
        })
        .collect();
    let count: u64 = buckets.iter().filter_map(|b| b["count"].as_u64()).sum();
    json!({
        "sensor": request.sensor.name(),
        "groupid": request.groupid,
        "measure": request.measure.name(),
        "from": rfc3339(request.range.from),
        "to": rfc3339(request.range.to),
        "interval": request.interval.label(),
        "interval_ms": request.interval.seconds() * 1000,
        "count": count,
        "buckets": buckets,
    })
}

/// `/api/warnings`: at most `size` items and, when the search found one more, the cursor
/// of the last item shown.
pub fn warnings(response: &Value, rules: &Rules, size: u32) -> Value {
    let empty = Vec::new();
    let hits = response["hits"]["hits"].as_array().unwrap_or(&empty);
    let mut items = Vec::new();
    let mut last_cursor = None;
    for hit in hits.iter().take(size as usize) {
        let source = &hit["_source"];
        let (Some(id), Some(sensor), Some(time)) =
            (hit["_id"].as_str(), sensor_of(source), timestamp(source))
        else {
            continue;
        };
        // The sort values the next page continues after; a hit without them ends paging.
        last_cursor = match (hit["sort"][0].as_i64(), hit["sort"][1].as_str()) {
            (Some(millis), Some(sort_id)) => Cursor::parse(&format!("{millis}:{sort_id}")).ok(),
            _ => None,
        };
        let measures: Vec<Value> = warned(source, sensor)
            .into_iter()
            .map(|m| {
                let value = measure_value(source, m);
                let trip = value.and_then(|v| rules.check(m, v));
                json!({
                    "measure": m.name(),
                    "value": value,
                    "bound": trip.map(|t| t.bound.name()),
                    "threshold": trip.map(|t| t.threshold),
                })
            })
            .collect();
        items.push(json!({
            "id": id,
            "sensor": sensor.name(),
            "groupid": bucket_key(&source["groupid"]),
            "time": time,
            "received": source["date"].as_str(),
            "location": location(source),
            "measures": measures,
        }));
    }
    let more = hits.len() > size as usize;
    json!({
        "warnings": items,
        "next": if more { last_cursor.map(|c| c.render()) } else { None },
    })
}

/// `/api/rules`: every measure with its sensor and the levels in force (null: none).
pub fn rules(rules: &Rules) -> Value {
    let list: Vec<Value> = Sensor::ALL
        .iter()
        .flat_map(|s| s.measures().iter().map(move |m| (*s, *m)))
        .map(|(sensor, measure)| {
            let rule = rules.rule(measure);
            json!({
                "sensor": sensor.name(),
                "measure": measure.name(),
                "high": rule.high(),
                "low": rule.low(),
                "clear_high": rule.high().and(rule.clear_level(Bound::High)),
                "clear_low": rule.low().and(rule.clear_level(Bound::Low)),
            })
        })
        .collect();
    json!({ "rules": list })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn range() -> TimeRange {
        TimeRange {
            from: Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
            to: Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap(),
        }
    }

    fn hit(id: &str, source: Value, sort: Value) -> Value {
        json!({"_id": id, "_source": source, "sort": sort})
    }

    #[test]
    fn boxes_take_latest_values_position_and_warnings_per_group() {
        let gas = json!({"groupid": "2", "sensor": "gasdetector", "@timestamp": "2026-12-01T10:00:00Z",
            "date": "2026-12-01 10:00:01", "location": {"lat": 37.6, "lon": 127.0},
            "clock_skew_s": -10800, "clock_skewed": true,
            "warnings": ["no2"], "no2": {"value": "95.00"}, "co": {"value": 26.2}, "h2": {"value": "x"}});
        let temp = json!({"groupid": "2", "sensor": "temp", "@timestamp": "2026-12-01T11:00:00+09:00",
            "warnings": [], "temperature": {"value": "21.5"}});
        let response = json!({"aggregations": {"groups": {"buckets": [
            {"key": "2", "sensors": {"buckets": [
                {"key": "temp", "doc_count": 3, "latest": {"hits": {"hits": [hit("t", temp, json!([]))]}}},
                {"key": "gasdetector", "doc_count": 5, "latest": {"hits": {"hits": [hit("g", gas, json!([]))]}},
                 "received": {"value": 1_796_119_201_000.0_f64, "value_as_string": "2026-12-01 10:00:01"}}
            ]}},
            {"key": 7, "sensors": {"buckets": [{"key": "dust", "latest": {"hits": {"hits": []}}}]}}
        ]}}});
        let answer = boxes(&response, &range());
        let list = answer["boxes"].as_array().unwrap();
        assert_eq!(list.len(), 1, "a group with no readable hit is left out");
        let group = &list[0];
        assert_eq!(group["groupid"], "2");
        // Last seen is the newest receive time (the `received` aggregation), else the
        // newest reading's time.
        assert_eq!(group["last_seen"], "2026-12-01T10:00:01.000Z");
        assert_eq!(group["clock_skewed"], true);
        assert_eq!(group["location"], json!({"lat": 37.6, "lon": 127.0}));
        assert_eq!(group["warnings"], json!(["no2"]));
        let gas = &group["sensors"][0];
        assert_eq!(gas["sensor"], "gasdetector");
        assert_eq!(gas["latest"], json!({"co": 26.2, "no2": 95.0}));
        assert_eq!(gas["count"], 5);
        assert_eq!(gas["last_seen"], "2026-12-01T10:00:01.000Z");
        assert_eq!(gas["time"], "2026-12-01T10:00:00.000Z");
        assert_eq!(
            (&gas["clock_skewed"], &gas["clock_skew_s"]),
            (&json!(true), &json!(-10800))
        );
        let temp = &group["sensors"][1];
        assert_eq!(temp["last_seen"], "2026-12-01T02:00:00.000Z");
        assert_eq!(
            (&temp["clock_skewed"], &temp["clock_skew_s"]),
            (&json!(false), &Value::Null)
        );
        assert_eq!(answer["from"], "2026-12-01T00:00:00.000Z");
    }

    #[test]
    fn readings_keep_complete_buckets_in_order() {
        let response = json!({"aggregations": {"series": {"buckets": [
            {"key": 1_796_083_200_000i64, "doc_count": 2, "stats": {"count": 2, "min": 1.0, "avg": 1.5, "max": 2.0, "sum": 3.0}},
            {"key": 1_796_085_000_000i64, "doc_count": 0, "stats": {"count": 0, "min": null, "avg": null, "max": null, "sum": 0.0}},
            {"key": 1_796_086_800_000i64, "doc_count": 1, "stats": {"count": 1, "min": 4.0, "avg": 4.0, "max": 4.0, "sum": 4.0}}
        ]}}});
        let request = SeriesRequest {
            sensor: Sensor::Gasdetector,
            groupid: "2",
            measure: Measure::No2,
            range: range(),
            interval: Interval::parse("30m", range().span()).unwrap(),
        };
        let answer = readings(&response, &request);
        assert_eq!(answer["count"], 3);
        assert_eq!(answer["interval"], "30m");
        assert_eq!(answer["interval_ms"], 1_800_000);
        let buckets = answer["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 2);
        assert_eq!(
            buckets[0],
            json!({"t": 1_796_083_200_000i64, "count": 2, "min": 1.0, "avg": 1.5, "max": 2.0})
        );
        assert_eq!(readings(&json!({}), &request)["buckets"], json!([]));
    }

    #[test]
    fn warnings_carry_values_thresholds_and_the_next_cursor() {
        let source = |t: &str| {
            json!({"groupid": "2", "sensor": "gasdetector", "@timestamp": t,
                "warnings": ["no2", "bogus"], "no2": {"value": "95.00"}})
        };
        let response = json!({"hits": {"hits": [
            hit("b", source("2026-12-01T10:00:00Z"), json!([1_796_119_200_000i64, "b"])),
            hit("a", source("2026-12-01T09:00:00Z"), json!([1_796_115_600_000i64, "a"])),
        ]}});
        let rules = Rules::default();
        let page = warnings(&response, &rules, 1);
        assert_eq!(page["warnings"].as_array().unwrap().len(), 1);
        assert_eq!(page["next"], "1796119200000:b");
        let item = &page["warnings"][0];
        assert_eq!(item["id"], "b");
        assert_eq!(
            item["measures"],
            json!([{"measure": "no2", "value": 95.0, "bound": "high", "threshold": 88.0}])
        );
        let last = warnings(&response, &rules, 2);
        assert_eq!(last["next"], Value::Null);
        assert_eq!(last["warnings"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn rules_list_every_measure() {
        let r = rules(&Rules::with_overrides(r#"{"no2": {"high": 70, "clear": 60}}"#).unwrap());
        let list = r["rules"].as_array().unwrap();
        assert_eq!(list.len(), 9);
        let no2 = list.iter().find(|r| r["measure"] == "no2").unwrap();
        assert_eq!(no2["sensor"], "gasdetector");
        assert_eq!(
            (no2["high"].as_f64(), no2["clear_high"].as_f64()),
            (Some(70.0), Some(60.0))
        );
        assert_eq!(no2["low"], Value::Null);
        let pm1 = list.iter().find(|r| r["measure"] == "pm1").unwrap();
        assert_eq!(pm1["high"], Value::Null);
        let humidity = list.iter().find(|r| r["measure"] == "humidity").unwrap();
        assert_eq!(humidity["low"], 20.0);
    }
}
