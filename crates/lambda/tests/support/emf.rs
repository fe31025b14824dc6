//! A checker for CloudWatch Embedded Metric Format lines, from the specification
//! (docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html):
//! a root object with `_aws` {`Timestamp` (epoch ms), `CloudWatchMetrics`: [{`Namespace`,
//! `Dimensions`: [[names]], `Metrics`: [{`Name`, `Unit`?}]}]}; every dimension name and
//! metric name is a root member (dimension values strings, metric values numbers or arrays
//! of at most 100 numbers); at most 30 dimensions per set and 100 metrics per directive.
#![allow(dead_code)]

use serde_json::Value;

const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Parses and checks one EMF line; panics naming the rule it breaks.
pub fn validate(line: &str) -> Value {
    let root: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("EMF line is not JSON ({e}): {line}"));
    let object = root.as_object().expect("EMF root is an object");
    let aws = object["_aws"].as_object().expect("_aws is an object");
    let timestamp = aws["Timestamp"]
        .as_u64()
        .expect("_aws.Timestamp is epoch ms");
    assert!(
        timestamp > 1_600_000_000_000 && timestamp < 4_000_000_000_000,
        "Timestamp {timestamp} is epoch milliseconds"
    );
    let directives = aws["CloudWatchMetrics"]
        .as_array()
        .expect("_aws.CloudWatchMetrics is an array");
    assert!(!directives.is_empty(), "at least one metric directive");
    for directive in directives {
        let namespace = directive["Namespace"]
            .as_str()
            .expect("Namespace is a string");
        assert!(
            (1..=255).contains(&namespace.len()) && !namespace.starts_with("AWS/"),
            "Namespace {namespace:?}"
        );
        let sets = directive["Dimensions"]
            .as_array()
            .expect("Dimensions is an array of arrays");
        for set in sets {
            let set = set.as_array().expect("a dimension set is an array");
            assert!(set.len() <= 30, "at most 30 dimensions per set");
            for name in set {
                let name = name.as_str().expect("dimension names are strings");
                let value = object
                    .get(name)
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("dimension {name} has a string value at the root"));
                assert!(
                    (1..=1024).contains(&value.len()),
                    "dimension value {value:?}"
                );
            }
        }
        let metrics = directive["Metrics"]
            .as_array()
            .expect("Metrics is an array");
        assert!(
            (1..=100).contains(&metrics.len()),
            "1 to 100 metrics per directive"
        );
        for metric in metrics {
            let name = metric["Name"].as_str().expect("metric Name is a string");
            assert!((1..=255).contains(&name.len()), "metric name {name:?}");
            if let Some(unit) = metric.get("Unit") {
                let unit = unit.as_str().expect("Unit is a string");
                assert!(UNITS.contains(&unit), "unit {unit:?} is an EMF unit");
            }
            match object.get(name) {
                Some(Value::Number(_)) => {}
                Some(Value::Array(values)) => {
                    assert!(values.len() <= 100 && values.iter().all(Value::is_number))
                }
                other => panic!("metric {name} has a numeric value at the root, got {other:?}"),
            }
        }
    }
    root
}
