//! `cargo xtask stats`: sums the CloudWatch EMF lines the functions printed under
//! `cargo xtask dev` (captured in target/dev/functions.log), so the numbers an operator
//! sees in CloudWatch can be seen locally: per function and sensor, the same metric names,
//! sums for counts, p50/p99/max for latencies.

use crate::tools::{self, root, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const USAGE: &str = "\
usage: cargo xtask stats [--file PATH] [--every SECS]
  --file PATH    the functions' captured stdout (default target/dev/functions.log)
  --every SECS   print the totals again every SECS seconds until Ctrl-C
";

/// Where `cargo xtask dev` writes the functions' stdout.
pub fn functions_log() -> PathBuf {
    root().join("target").join("dev").join("functions.log")
}

pub fn run(args: &[String]) -> Result {
    let mut file = functions_log();
    let mut every: Option<u64> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || tools::flag_value(&mut it, arg, USAGE);
        match arg.as_str() {
            "--file" => file = PathBuf::from(value()?),
            "--every" => {
                let text = value()?;
                let secs = text
                    .parse::<u64>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or(format!("--every {text:?}: expected whole seconds > 0"))?;
                every = Some(secs);
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    loop {
        let text = std::fs::read_to_string(&file).map_err(|e| {
            format!(
                "{}: {e} (it is written while `cargo xtask dev` runs)",
                file.display()
            )
        })?;
        print!("{}", Totals::of(&text).report());
        match every {
            None => return Ok(()),
            Some(secs) => std::thread::sleep(Duration::from_secs(secs)),
        }
    }
}

/// Copies the functions' stdout (from `cargo lambda watch`) into `log`, and every line
/// that is not an EMF line to our stdout: the terminal keeps the logs, the file keeps
/// everything for `cargo xtask stats`. Runs on its own thread until the pipe closes.
pub fn tee_functions_output(from: impl std::io::Read + Send + 'static, log: &Path) -> Result {
    // One file per `cargo xtask dev` session: the totals start at zero, as a fresh stack's.
    let mut file =
        std::fs::File::create(log).map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(from);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let _ = file.write_all(line.as_bytes());
                    if !is_emf(&line) {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(line.as_bytes());
                        let _ = out.flush();
                    }
                }
            }
        }
    });
    Ok(())
}

/// An EMF line: a JSON object with an `_aws` member.
pub fn is_emf(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with('{')
        && line.contains("\"_aws\"")
        && serde_json::from_str::<Value>(line).is_ok_and(|v| v.get("_aws").is_some())
}

/// Sums per dimension set (e.g. `function=gasdetector sensor=gasdetector target=iot`).
#[derive(Debug, Default, PartialEq)]
pub struct Totals {
    /// dimension set -> metric -> values in arrival order
    groups: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    /// The unit of each metric name, from the EMF declarations.
    units: BTreeMap<String, String>,
    lines: usize,
}

impl Totals {
    pub fn of(text: &str) -> Totals {
        let mut totals = Totals::default();
        for line in text.lines().filter(|l| is_emf(l)) {
            if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                totals.add(&v);
            }
        }
        totals
    }

    fn add(&mut self, emf: &Value) {
        let Some(directives) = emf["_aws"]["CloudWatchMetrics"].as_array() else {
            return;
        };
        self.lines += 1;
        for directive in directives {
            let sets = directive["Dimensions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for set in sets {
                let key = set
                    .as_array()
                    .map(|names| {
                        names
                            .iter()
                            .filter_map(Value::as_str)
                            .map(|n| format!("{n}={}", emf[n].as_str().unwrap_or("?")))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                let group = self.groups.entry(key).or_default();
                for metric in directive["Metrics"].as_array().into_iter().flatten() {
                    let Some(name) = metric["Name"].as_str() else {
                        continue;
                    };
                    if let Some(unit) = metric["Unit"].as_str() {
                        self.units.insert(name.to_string(), unit.to_string());
                    }
                    let values = group.entry(name.to_string()).or_default();
                    match &emf[name] {
                        Value::Number(n) => values.extend(n.as_f64()),
                        Value::Array(items) => {
                            values.extend(items.iter().filter_map(Value::as_f64))
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Sum of a metric in a group.
    #[cfg(test)]
    fn sum(&self, group: &str, metric: &str) -> f64 {
        self.groups
            .get(group)
            .and_then(|g| g.get(metric))
            .map_or(0.0, |v| v.iter().sum())
    }

    pub fn report(&self) -> String {
        let mut out = format!(
            "{} EMF lines in the functions' output (the same metrics CloudWatch would show)\n",
            self.lines
        );
        for (group, metrics) in &self.groups {
            out.push_str(&format!("\n{group}\n"));
            for (name, values) in metrics {
                let unit = self.units.get(name).map(String::as_str).unwrap_or("None");
                if unit == "Count" || unit == "None" {
                    let sum: f64 = values.iter().sum();
                    out.push_str(&format!("  {name:<22} {sum:>10}\n"));
                } else {
                    let mut sorted = values.clone();
                    sorted.sort_by(f64::total_cmp);
                    // Nearest rank, as CloudWatch's percentiles on raw values.
                    let at = |q: f64| {
                        let rank = (q * sorted.len() as f64).ceil() as usize;
                        sorted.get(rank.saturating_sub(1)).copied().unwrap_or(0.0)
                    };
                    out.push_str(&format!(
                        "  {name:<22} n={} p50={:.2} p99={:.2} max={:.2} {unit}\n",
                        sorted.len(),
                        at(0.5),
                        at(0.99),
                        sorted.last().copied().unwrap_or(0.0),
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as the functions print them (sensor_lambda::observability::emf), among log lines.
    const OUTPUT: &str = r#"INFO request{requestId="a"}: reading stored id=x
{"ColdStart":1.0,"IndexLatency":2.5,"ReadingsStored":1.0,"Requests":1.0,"_aws":{"CloudWatchMetrics":[{"Dimensions":[["function","sensor"]],"Metrics":[{"Name":"Requests","Unit":"Count"},{"Name":"ReadingsStored","Unit":"Count"},{"Name":"ColdStart","Unit":"Count"},{"Name":"IndexLatency","Unit":"Milliseconds"}],"Namespace":"SensorIngest"}],"Timestamp":1796160021582},"function":"gasdetector","requestId":"a","sensor":"gasdetector"}
{"ColdStart":0.0,"IndexLatency":7.5,"ReadingsStored":2.0,"Requests":1.0,"_aws":{"CloudWatchMetrics":[{"Dimensions":[["function","sensor"]],"Metrics":[{"Name":"Requests","Unit":"Count"},{"Name":"ReadingsStored","Unit":"Count"},{"Name":"ColdStart","Unit":"Count"},{"Name":"IndexLatency","Unit":"Milliseconds"}],"Namespace":"SensorIngest"}],"Timestamp":1796160021583},"function":"gasdetector","requestId":"b","sensor":"gasdetector"}
{"DownstreamFailures":0.0,"DownstreamRetries":3.0,"_aws":{"CloudWatchMetrics":[{"Dimensions":[["function","sensor","target"]],"Metrics":[{"Name":"DownstreamRetries","Unit":"Count"},{"Name":"DownstreamFailures","Unit":"Count"}],"Namespace":"SensorIngest"}],"Timestamp":1796160021583},"function":"gasdetector","requestId":"b","sensor":"gasdetector","target":"opensearch"}
{"level":"INFO","message":"request done","requestId":"b"}
"#;

    #[test]
    fn sums_counts_and_summarises_latencies_per_dimension_set() {
        let totals = Totals::of(OUTPUT);
        assert_eq!(totals.lines, 3);
        let gas = "function=gasdetector sensor=gasdetector";
        assert_eq!(totals.sum(gas, "Requests"), 2.0);
        assert_eq!(totals.sum(gas, "ReadingsStored"), 3.0);
        assert_eq!(totals.sum(gas, "ColdStart"), 1.0);
        assert_eq!(
            totals.sum(&format!("{gas} target=opensearch"), "DownstreamRetries"),
            3.0
        );
        let report = totals.report();
        assert!(report.contains("IndexLatency"), "{report}");
        assert!(
            report.contains("p50=2.50") || report.contains("p50=7.50"),
            "{report}"
        );
        assert!(report.contains("max=7.50"), "{report}");
    }

    #[test]
    fn only_json_objects_with_an_aws_block_are_emf() {
        assert!(!is_emf("INFO _aws"));
        assert!(!is_emf(r#"{"message": "mentions \"_aws\" in text"}"#));
        assert!(!is_emf(r#"{"_aws": "#));
        assert!(is_emf(r#"  {"_aws": {}}"#));
        assert_eq!(Totals::of("no metrics here\n").lines, 0);
    }
}
