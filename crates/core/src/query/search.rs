//! The search bodies of the read API, built from validated parameters only.
//!
//! What a caller chose reaches OpenSearch in exactly three forms: a group id as a `term`
//! value, instants (re-formatted by us) as `range` bounds, and a cursor's number and id as
//! `search_after` values. Field names, aggregation names and index patterns come from the
//! code (`Measure`, `Sensor`) and the configuration, never from a request; there is no
//! `query_string`, `simple_query_string` or script anywhere, which a unit test checks.

use crate::query::interval::Interval;
use crate::query::params::{rfc3339, Cursor, TimeRange};
use sensor_model::document::RECEIVED_FORMAT;
use sensor_model::domain::group_id::GroupId;
use sensor_model::domain::measure::Measure;
use sensor_model::domain::sensor::Sensor;
use serde_json::{json, Value};

/// Groups one `/api/boxes` answer lists at most; a fleet beyond this needs paging.
pub const MAX_GROUPS: usize = 1_000;

fn time_filter(range: &TimeRange) -> Value {
    json!({"range": {"@timestamp": {
        "gte": rfc3339(range.from),
        "lt": rfc3339(range.to),
        "format": "strict_date_optional_time"
    }}})
}

/// Readings received (`date`, our clock) in the range, whatever time they carry: a box
/// whose clock is off still shows in the range it was heard in. `date` has whole seconds,
/// so the range's last second is included (`lte`): a reading received in the second a
/// default range ends ("now") is not left out.
fn received_filter(range: &TimeRange) -> Value {
    json!({"range": {"date": {
        "gte": range.from.format(RECEIVED_FORMAT).to_string(),
        "lte": range.to.format(RECEIVED_FORMAT).to_string(),
        "format": "yyyy-MM-dd HH:mm:ss"
    }}})
}

/// The fields a box's latest reading is shown with.
fn latest_fields() -> Vec<String> {
    let mut fields: Vec<String> = [
        "groupid",
        "sensor",
        "@timestamp",
        "date",
        "location",
        "warnings",
        "clock_skew_s",
        "clock_skewed",
    ]
    .iter()
    .map(|f| f.to_string())
    .collect();
    fields.extend(Measure::ALL.iter().map(|m| format!("{}.value", m.name())));
    fields
}

/// `/api/boxes`: per group and sensor, the newest reading and the last receive time of
/// the readings taken (`@timestamp`) or received (`date`) in the range. `@timestamp` is
/// the effective time (never after arrival), so a clock that ran ahead cannot pin the
/// "newest"; the receive-time half keeps a box whose clock is behind in the list.
pub fn boxes(range: &TimeRange) -> Value {
    json!({
        "size": 0,
        "query": {"bool": {"filter": [{"bool": {
            "should": [time_filter(range), received_filter(range)],
            "minimum_should_match": 1
        }}]}},
        "aggs": {"groups": {
            "terms": {"field": "groupid", "size": MAX_GROUPS, "order": {"_key": "asc"}},
            "aggs": {"sensors": {
                "terms": {"field": "sensor", "size": Sensor::ALL.len()},
                "aggs": {
                    "latest": {"top_hits": {
                        "size": 1,
                        "sort": [{"@timestamp": {"order": "desc"}}, {"date": {"order": "desc"}}],
                        "_source": {"includes": latest_fields()}
                    }},
                    "received": {"max": {"field": "date"}}
                }
            }}
        }}
    })
}

/// `/api/readings`: min, avg and max of one measure per bucket.
pub fn readings(
    sensor: Sensor,
    group: &GroupId,
    measure: Measure,
    range: &TimeRange,
    interval: Interval,
) -> Value {
    let field = format!("{}.value", measure.name());
    json!({
        "size": 0,
        "track_total_hits": true,
        "query": {"bool": {"filter": [
            {"term": {"groupid": group.as_str()}},
            {"term": {"sensor": sensor.name()}},
            time_filter(range),
            {"exists": {"field": field}}
        ]}},
        "aggs": {"series": {
            "date_histogram": {
                "field": "@timestamp",
                "fixed_interval": interval.fixed_interval(),
                "min_doc_count": 1
            },
            // One `stats` per bucket rather than min, avg and max apart: one pass over the
            // values instead of three (half the time on osmem-server, BENCHMARKS.md), and
            // its `count` says how many readings carried the measure.
            "aggs": {"stats": {"stats": {"field": field}}}
        }}
    })
}

/// `/api/warnings`: readings that tripped a rule, newest first; `size + 1` hits are asked
/// for, so the answer knows whether another page exists without a second count.
pub fn warnings(
    range: &TimeRange,
    group: Option<&GroupId>,
    size: u32,
    after: Option<&Cursor>,
) -> Value {
    let mut filter = vec![time_filter(range), json!({"exists": {"field": "warnings"}})];
    if let Some(group) = group {
        filter.push(json!({"term": {"groupid": group.as_str()}}));
    }
    let mut body = json!({
        "size": size + 1,
        "query": {"bool": {"filter": filter}},
        // `_id` breaks ties between readings of the same instant, so pages neither skip
        // nor repeat one.
        "sort": [{"@timestamp": {"order": "desc"}}, {"_id": {"order": "desc"}}],
        "_source": {"includes": latest_fields()}
    });
    if let Some(cursor) = after {
        body["search_after"] = json!([cursor.millis, cursor.id]);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn range() -> TimeRange {
        TimeRange {
            from: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
            to: Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
        }
    }

    /// Every string in `value` that is not a key, with its JSON path.
    fn strings(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
        match value {
            Value::String(s) => out.push((path.to_string(), s.clone())),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    strings(item, &format!("{path}[{i}]"), out);
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    strings(v, &format!("{path}.{k}"), out);
                }
            }
            _ => {}
        }
    }

    fn keys(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Array(items) => items.iter().for_each(|i| keys(i, out)),
            Value::Object(map) => {
                for (k, v) in map {
                    out.push(k.clone());
                    keys(v, out);
                }
            }
            _ => {}
        }
    }

    const FORBIDDEN: [&str; 6] = [
        "query_string",
        "simple_query_string",
        "script",
        "script_score",
        "regexp",
        "wildcard",
    ];

    /// A user-chosen string may appear only as a term or range value or in search_after.
    fn assert_user_string_only_in_values(body: &Value, user: &str) {
        let mut found = Vec::new();
        strings(body, "", &mut found);
        for (path, s) in found.iter().filter(|(_, s)| s.contains(user)) {
            let allowed = path.starts_with(".query.bool.filter[")
                && (path.contains("].term.") || path.contains("].range."))
                || path.starts_with(".search_after[");
            assert!(allowed, "user string {s:?} at {path}");
        }
        let mut names = Vec::new();
        keys(body, &mut names);
        for name in names {
            assert!(!name.contains(user), "user string in key {name}");
            assert!(!FORBIDDEN.contains(&name.as_str()), "{name} in {body}");
        }
    }

    #[test]
    fn readings_query_filters_by_term_and_range_and_buckets_the_measure() {
        let group = GroupId::parse("grp-7").unwrap();
        let interval = Interval::parse("30m", range().span()).unwrap();
        let body = readings(
            Sensor::Gasdetector,
            &group,
            Measure::No2,
            &range(),
            interval,
        );
        let filter = &body["query"]["bool"]["filter"];
        assert_eq!(filter[0], json!({"term": {"groupid": "grp-7"}}));
        assert_eq!(filter[1], json!({"term": {"sensor": "gasdetector"}}));
        assert_eq!(
            filter[2]["range"]["@timestamp"]["gte"],
            "2026-11-01T00:00:00.000Z"
        );
        assert_eq!(
            filter[2]["range"]["@timestamp"]["lt"],
            "2026-12-01T00:00:00.000Z"
        );
        let histogram = &body["aggs"]["series"]["date_histogram"];
        assert_eq!(histogram["fixed_interval"], "1800s");
        assert_eq!(histogram["field"], "@timestamp");
        assert_eq!(
            body["aggs"]["series"]["aggs"]["stats"]["stats"]["field"],
            "no2.value"
        );
        assert_user_string_only_in_values(&body, "grp-7");
    }

    #[test]
    fn warnings_query_pages_with_search_after() {
        let group = GroupId::parse("g_1").unwrap();
        let cursor = Cursor::parse("1796083200000:g_1-doc").unwrap();
        let body = warnings(&range(), Some(&group), 50, Some(&cursor));
        assert_eq!(body["size"], 51);
        assert_eq!(
            body["search_after"],
            json!([1_796_083_200_000i64, "g_1-doc"])
        );
        assert_eq!(body["sort"][0]["@timestamp"]["order"], "desc");
        assert_eq!(body["sort"][1]["_id"]["order"], "desc");
        assert_user_string_only_in_values(&body, "g_1");
        let first = warnings(&range(), None, 10, None);
        assert!(first.get("search_after").is_none());
        assert_eq!(
            first["query"]["bool"]["filter"].as_array().unwrap().len(),
            2
        );
    }

    #[test]
    fn boxes_query_takes_the_newest_reading_per_group_and_sensor() {
        let body = boxes(&range());
        let groups = &body["aggs"]["groups"];
        assert_eq!(groups["terms"]["field"], "groupid");
        let latest = &groups["aggs"]["sensors"]["aggs"]["latest"]["top_hits"];
        assert_eq!(latest["size"], 1);
        assert_eq!(latest["sort"][0]["@timestamp"]["order"], "desc");
        let includes = latest["_source"]["includes"].as_array().unwrap();
        assert!(includes.contains(&json!("no2.value")));
        assert!(includes.contains(&json!("clock_skewed")));
        let received = &groups["aggs"]["sensors"]["aggs"]["received"]["max"];
        assert_eq!(received["field"], "date");
        // In the range by effective time or by receive time.
        let either = &body["query"]["bool"]["filter"][0]["bool"];
        assert_eq!(either["minimum_should_match"], 1);
        assert_eq!(
            either["should"][0]["range"]["@timestamp"]["gte"],
            "2026-11-01T00:00:00.000Z"
        );
        assert_eq!(
            either["should"][1]["range"]["date"]["gte"],
            "2026-11-01 00:00:00"
        );
        assert_eq!(
            either["should"][1]["range"]["date"]["lte"],
            "2026-12-01 00:00:00"
        );
        assert_user_string_only_in_values(&body, "\"");
    }
}
