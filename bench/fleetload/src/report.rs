//! The figures of a set of runs: a Markdown report (one row per path and fleet size, the
//! targets, the fault runs) and the raw numbers as JSON. Formatting only; pure.

use crate::options::{Fault, IngestPath, Options};
use crate::run::RunResult;
use crate::warnings;
use serde_json::{json, Value};

/// Nearest-rank percentile of `sorted` (ascending); `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn per(n: f64, d: f64) -> Option<f64> {
    (d > 0.0).then(|| n / d)
}

fn fmt(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "-".into(),
    }
}

/// The derived figures of one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    pub e2e_per_s: Option<f64>,
    pub readings_per_bulk: Option<f64>,
    pub bytes_per_bulk: Option<f64>,
    pub bulks_per_1000: Option<f64>,
    pub invocations_per_1000: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub shadow_writes_per_group_minute: Option<f64>,
    pub cpu_us_per_reading: Option<f64>,
}

pub fn figures(r: &RunResult) -> Figures {
    let published = r.published() as f64;
    let bulks = r.opensearch.bulk_requests as f64;
    // The writes happen from the first publish until everything is searchable (or the
    // publishing span when it never was).
    let minutes = r.e2e_s.unwrap_or(r.publish_span_s) / 60.0;
    Figures {
        e2e_per_s: r.e2e_s.and_then(|s| per(published, s)),
        readings_per_bulk: per(r.opensearch.bulk_docs as f64, bulks),
        bytes_per_bulk: per(r.opensearch.bulk_bytes as f64, bulks),
        bulks_per_1000: per(bulks * 1000.0, published),
        invocations_per_1000: per(r.invoke.total_invocations() as f64 * 1000.0, published),
        p50_ms: percentile(&r.latencies_ms, 50.0),
        p99_ms: percentile(&r.latencies_ms, 99.0),
        shadow_writes_per_group_minute: per(
            r.iot.total_shadow_writes() as f64,
            r.groups as f64 * minutes,
        ),
        cpu_us_per_reading: per(r.cpu_ms() * 1000.0, published),
    }
}

/// One line saying what the machine is.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} CPUs, {memory} RAM, Linux {kernel}")
}

fn settings(o: &Options) -> String {
    format!(
        "boxes publish one gasdetector reading every {} s (QoS 1) for {} s, seed {}; stream: {} shards, BatchSize {}, window {} s, MaximumRetryAttempts {}, bisect on; functions in {} mode under `cargo lambda watch --concurrency {}`; 1 in {} readings timed from publish to searchable (searched every ~100 ms)",
        o.interval.as_secs_f64(),
        o.duration.as_secs_f64(),
        o.seed,
        o.shards,
        o.batch_size,
        o.window.as_secs_f64(),
        o.max_retries,
        if o.release { "release" } else { "debug" },
        o.concurrency,
        o.sample,
    )
}

fn transitions(r: &RunResult) -> String {
    let w = &r.warnings;
    format!(
        "{} / {} ({} missing, {} unexpected, {} doubled)",
        w.episodes.len(),
        w.expected.len(),
        w.missing().len(),
        w.unexpected().len(),
        w.doubled + w.episodes_twice()
    )
}

fn stored(r: &RunResult) -> String {
    let once = r.stored.exactly_once(r.published());
    format!(
        "{} / {}{}",
        r.stored.count,
        r.published(),
        if once {
            String::new()
        } else {
            format!(
                " (missing {}, duplicates {})",
                r.stored.missing, r.stored.duplicates
            )
        }
    )
}

/// The Markdown report of `runs` (fault-free rows first, then the fault runs).
pub fn markdown(options: &Options, command: &str, started: &str, runs: &[RunResult]) -> String {
    let mut out = String::new();
    out.push_str("## fleetload: the direct and the stream path, side by side\n\n");
    out.push_str(&format!("Machine: {}.  \n", machine()));
    out.push_str(&format!("Command: `{command}`, started {started}.  \n"));
    out.push_str(&format!("Settings: {}.\n\n", settings(options)));
    let plain: Vec<&RunResult> = runs.iter().filter(|r| r.fault == Fault::None).collect();
    if !plain.is_empty() {
        out.push_str("| path | boxes | offered readings/s | stored / published | end-to-end readings/s | last publish to all searchable, s | readings per `_bulk` | bytes per `_bulk` | `_bulk` per 1,000 readings | invocations per 1,000 readings | p50 ms | p99 ms | shadow writes per group per minute (peak per s) | function CPU µs per reading | transitions seen / expected | box resends |\n");
        out.push_str(
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
        );
        for r in &plain {
            let f = figures(r);
            out.push_str(&format!(
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} |\n",
                r.path.name(),
                r.boxes,
                r.offered_per_s,
                stored(r),
                fmt(f.e2e_per_s, 0),
                fmt(r.tail_s, 1),
                fmt(f.readings_per_bulk, 1),
                fmt(f.bytes_per_bulk, 0),
                fmt(f.bulks_per_1000, 1),
                fmt(f.invocations_per_1000, 1),
                fmt(f.p50_ms, 0),
                fmt(f.p99_ms, 0),
                fmt(f.shadow_writes_per_group_minute, 1),
                r.iot.peak_shadow_writes_per_second(),
                fmt(f.cpu_us_per_reading, 0),
                transitions(r),
                r.fleet.resends,
            ));
        }
        out.push('\n');
        out.push_str(&targets(&plain));
    }
    let faulty: Vec<&RunResult> = runs.iter().filter(|r| r.fault != Fault::None).collect();
    if !faulty.is_empty() {
        out.push_str(&faults(runs, &faulty));
    }
    out.push_str(&details(runs));
    out
}

/// The targets per fleet size where both paths ran.
fn targets(plain: &[&RunResult]) -> String {
    let mut out = String::from("Targets (stream against direct, same fleet size, this run):\n\n");
    let mut any = false;
    let mut sizes: Vec<usize> = plain.iter().map(|r| r.boxes).collect();
    sizes.dedup();
    for boxes in sizes {
        let of = |path| {
            plain
                .iter()
                .find(|r| r.boxes == boxes && r.path == path)
                .map(|r| figures(r))
        };
        let (Some(direct), Some(stream)) = (of(IngestPath::Direct), of(IngestPath::Stream)) else {
            continue;
        };
        any = true;
        let ratio = |d: Option<f64>, s: Option<f64>| match (d, s) {
            (Some(d), Some(s)) if s > 0.0 => Some(d / s),
            _ => None,
        };
        let verdict = |ok: Option<bool>| match ok {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "not measured",
        };
        let inv = ratio(direct.invocations_per_1000, stream.invocations_per_1000);
        let bulk = ratio(direct.bulks_per_1000, stream.bulks_per_1000);
        let cpu = ratio(stream.cpu_us_per_reading, direct.cpu_us_per_reading);
        out.push_str(&format!(
            "- {boxes} boxes: invocations per reading {}x fewer (>= 50x: {}); `_bulk` per reading {}x fewer (>= 50x: {}); function CPU per reading {} of the direct path's (<= 0.20: {})\n",
            fmt(inv, 0),
            verdict(inv.map(|r| r >= 50.0)),
            fmt(bulk, 0),
            verdict(bulk.map(|r| r >= 50.0)),
            fmt(cpu, 3),
            verdict(cpu.map(|r| r <= 0.2)),
        ));
    }
    if !any {
        out.push_str("- (only one path ran: no ratios)\n");
    }
    out.push('\n');
    out
}

fn faults(all: &[RunResult], faulty: &[&RunResult]) -> String {
    let mut out = String::from("Fault runs (each against the fault-free run of the same seed, path and size, when one ran):\n\n");
    out.push_str("| fault | path | boxes | stored exactly once | transitions lost / extra vs fault-free (episodes) | (doc id, measure) lost / extra vs fault-free | warnings doubled | box resends | failure destination: on-failure / rule errors | mapping retries / bisects | function errors seen by the invoker |\n");
    out.push_str("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in faulty {
        let baseline = all
            .iter()
            .find(|b| b.fault == Fault::None && b.path == r.path && b.boxes == r.boxes);
        let c = baseline.map(|b| warnings::compare(&b.warnings, &r.warnings));
        let once = r.stored.exactly_once(r.published());
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |\n",
            r.fault.name(),
            r.path.name(),
            r.boxes,
            format_args!("{} ({})", if once { "yes" } else { "**no**" }, stored(r)),
            c.as_ref().map_or("-".into(), |c| format!(
                "{} / {}",
                c.lost_episodes, c.extra_episodes
            )),
            c.as_ref().map_or("-".into(), |c| format!(
                "{} / {}",
                c.lost_exact, c.extra_exact
            )),
            r.warnings.doubled + r.warnings.episodes_twice(),
            r.fleet.resends,
            r.failure_destination.0,
            r.failure_destination.1,
            r.mapping
                .map_or("-".into(), |m| format!("{} / {}", m.retries, m.bisects)),
            r.invoke.invocation_errors,
        ));
    }
    out.push('\n');
    for r in faulty {
        for line in &r.fault_log {
            out.push_str(&format!(
                "- {} {} {}: {line}\n",
                r.fault.name(),
                r.path.name(),
                r.boxes
            ));
        }
    }
    out.push('\n');
    out
}

/// " 3 transition(s) not announced, in cycle(s) 0, 3 ...;" or nothing.
fn missing_cycles(r: &RunResult) -> String {
    let missing = r.warnings.missing();
    if missing.is_empty() {
        return String::new();
    }
    let mut cycles: Vec<u64> = missing.iter().map(|e| e.cycle).collect();
    cycles.sort_unstable();
    cycles.dedup();
    let cycles: Vec<String> = cycles.iter().map(u64::to_string).collect();
    format!(
        " {} transition(s) not announced, in cycle(s) {} of their group's schedule (10 readings a cycle);",
        missing.len(),
        cycles.join(", ")
    )
}

fn details(runs: &[RunResult]) -> String {
    let mut out = String::from("Per run (raw counts; report.json has all of them):\n\n");
    for r in runs {
        let cpu: Vec<String> = r
            .cpu_ticks
            .iter()
            .map(|(name, t)| format!("{name} {:.2} s", *t as f64 / r.ticks_per_s as f64))
            .collect();
        out.push_str(&format!(
            "- {} {} boxes, fault {}: setup {:.0} s;{} {} readings published ({} PUBLISH packets, {} PUBACKs, {} connection errors); {} invocations ({} errors); {} `_bulk` ({} documents, at most {} in one, {} bytes, {} refused while down); {} shadow writes ({} conflicts), {} shadow reads, {} warnings published; {} timed readings ({} never found); function CPU {} over {} process(es); {}{}{}\n",
            r.path.name(),
            r.boxes,
            r.fault.name(),
            r.setup_s,
            missing_cycles(r),
            r.published(),
            r.fleet.on_wire,
            r.fleet.pubacks,
            r.fleet.errors,
            r.invoke.total_invocations(),
            r.invoke.invocation_errors,
            r.opensearch.bulk_requests,
            r.opensearch.bulk_docs,
            r.opensearch.bulk_docs_max,
            r.opensearch.bulk_bytes,
            r.opensearch.refused,
            r.iot.total_shadow_writes(),
            r.iot.shadow_conflicts,
            r.iot.shadow_reads,
            r.iot.publishes,
            r.latencies_ms.len() + r.timed_missing,
            r.timed_missing,
            if cpu.is_empty() { "-".into() } else { cpu.join(", ") },
            r.processes,
            duration_words(r),
            r.mapping.map_or(String::new(), |m| format!(
                "; mapping: {} invocations, {} records delivered, {} retries, {} bisects, {} unreachable, {} batches given up",
                m.invocations, m.records_delivered, m.retries, m.bisects, m.unreachable, m.failed_batches
            )),
            r.rule.map_or(String::new(), |c| format!(
                "; stream rule: {} records put, {} error actions",
                c.put, c.error_actions
            )),
        ));
    }
    out
}

/// The function's own warm durations in words.
fn duration_words(r: &RunResult) -> String {
    let Some(d) = r.durations else {
        return "function durations: none logged".into();
    };
    let fit = d.fit.map_or(String::new(), |(fixed, per)| {
        format!(", fit {fixed:.1} ms + {per:.3} ms per reading")
    });
    format!(
        "function durations ({} warm invocations, own `request done`): p50 {:.1} ms, mean {:.1} ms, {:.1} readings each, {:.3} ms per reading{fit}",
        d.invocations, d.p50_ms, d.mean_ms, d.readings_per_invocation, d.ms_per_reading
    )
}

/// The raw numbers of one run.
pub fn json_run(r: &RunResult) -> Value {
    let f = figures(r);
    let w = &r.warnings;
    json!({
        "path": r.path.name(),
        "boxes": r.boxes,
        "groups": r.groups,
        "fault": r.fault.name(),
        "fault_log": r.fault_log,
        "setup_s": r.setup_s,
        "readings_planned": r.readings,
        "boxes_counts": {
            "publishes": r.fleet.publishes,
            "publish_packets": r.fleet.on_wire,
            "pubacks": r.fleet.pubacks,
            "resends": r.fleet.resends,
            "connection_errors": r.fleet.errors,
            "publish_errors": r.fleet.publish_errors,
        },
        "offered_per_s": r.offered_per_s,
        "publish_span_s": r.publish_span_s,
        "first_publish_to_all_searchable_s": r.e2e_s,
        "last_publish_to_all_searchable_s": r.tail_s,
        "figures": {
            "end_to_end_readings_per_s": f.e2e_per_s,
            "readings_per_bulk": f.readings_per_bulk,
            "bytes_per_bulk": f.bytes_per_bulk,
            "bulks_per_1000_readings": f.bulks_per_1000,
            "invocations_per_1000_readings": f.invocations_per_1000,
            "p50_publish_to_searchable_ms": f.p50_ms,
            "p99_publish_to_searchable_ms": f.p99_ms,
            "shadow_writes_per_group_per_minute": f.shadow_writes_per_group_minute,
            "peak_shadow_writes_per_group_per_second": r.iot.peak_shadow_writes_per_second(),
            "function_cpu_us_per_reading": f.cpu_us_per_reading,
        },
        "opensearch": {
            "requests": r.opensearch.requests,
            "bulk_requests": r.opensearch.bulk_requests,
            "bulk_docs": r.opensearch.bulk_docs,
            "bulk_docs_max": r.opensearch.bulk_docs_max,
            "bulk_bytes": r.opensearch.bulk_bytes,
            "refused_while_down": r.opensearch.refused,
        },
        "iot": {
            "shadow_writes": r.iot.total_shadow_writes(),
            "shadow_conflicts": r.iot.shadow_conflicts,
            "shadow_reads": r.iot.shadow_reads,
            "publishes": r.iot.publishes,
            "shadow_writes_per_thing": r.iot.shadow_writes,
        },
        "invocations": r.invoke.invocations,
        "invocation_errors": r.invoke.invocation_errors,
        "mapping": r.mapping.map(|m| json!({
            "invocations": m.invocations,
            "records_read": m.records_read,
            "records_delivered": m.records_delivered,
            "retries": m.retries,
            "bisects": m.bisects,
            "unreachable": m.unreachable,
            "failed_batches": m.failed_batches,
        })),
        "stream_rule": r.rule.map(|c| json!({"put": c.put, "error_actions": c.error_actions, "ignored": c.ignored})),
        "failure_destination": {"on_failure": r.failure_destination.0, "rule_error_actions": r.failure_destination.1},
        "latency_ms": {
            "timed": r.latencies_ms.len(),
            "never_found": r.timed_missing,
            "p50": f.p50_ms,
            "p90": percentile(&r.latencies_ms, 90.0),
            "p99": f.p99_ms,
            "max": r.latencies_ms.last(),
        },
        "cpu": {
            "ticks_per_s": r.ticks_per_s,
            "ticks": r.cpu_ticks,
            "ms": r.cpu_ms(),
            "processes_seen": r.processes,
        },
        "function_durations": r.durations.map(|d| json!({
            "warm_invocations": d.invocations,
            "p50_ms": d.p50_ms,
            "mean_ms": d.mean_ms,
            "readings_per_invocation": d.readings_per_invocation,
            "ms_per_reading": d.ms_per_reading,
            "fit_fixed_ms": d.fit.map(|f| f.0),
            "fit_ms_per_reading": d.fit.map(|f| f.1),
        })),
        "stored": {
            "count": r.stored.count,
            "found": r.stored.found,
            "missing": r.stored.missing,
            "duplicates": r.stored.duplicates,
            "exactly_once": r.stored.exactly_once(r.published()),
        },
        "warnings": {
            "messages": w.messages,
            "alarms": w.alarms,
            "clears": w.clears,
            "other": w.other,
            "doubled": w.doubled,
            "episodes_expected": w.expected.len(),
            "episodes_seen": w.episodes.len(),
            "episodes_missing": w.missing().len(),
            "episodes_unexpected": w.unexpected().len(),
            "episodes_announced_twice": w.episodes_twice(),
            // (group, state, cycle): the group's cycle k covers its readings
            // [k * 10 - phase, (k + 1) * 10 - phase).
            "missing": w.missing().iter().map(|e| json!([e.group, e.state, e.cycle])).collect::<Vec<_>>(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boxes::FleetCounts;
    use crate::proxy::Counts;
    use crate::run::Stored;
    use crate::warnings::Summary;

    fn run(path: IngestPath, invocations: u64, bulks: u64, cpu_ticks: u64) -> RunResult {
        let mut invoke = Counts::default();
        invoke.invocations.insert("gasdetector".into(), invocations);
        let opensearch = Counts {
            bulk_requests: bulks,
            bulk_docs: 10_000,
            bulk_bytes: 7_000_000,
            ..Counts::default()
        };
        RunResult {
            path,
            boxes: 200,
            groups: 20,
            fault: Fault::None,
            setup_s: 5.0,
            readings: 10_000,
            fleet: FleetCounts {
                publishes: 10_000,
                on_wire: 10_000,
                pubacks: 10_000,
                ..FleetCounts::default()
            },
            offered_per_s: 200.0,
            publish_span_s: 50.0,
            e2e_s: Some(50.0),
            tail_s: Some(0.5),
            opensearch,
            iot: Counts::default(),
            invoke,
            mapping: None,
            rule: None,
            failure_destination: (0, 0),
            latencies_ms: vec![10.0, 20.0, 30.0],
            timed_missing: 0,
            cpu_ticks: [("gasdetector".to_owned(), cpu_ticks)].into(),
            ticks_per_s: 100,
            processes: 1,
            stored: Stored {
                count: 10_000,
                found: 10_000,
                ..Stored::default()
            },
            warnings: Summary::default(),
            durations: None,
            fault_log: Vec::new(),
        }
    }

    #[test]
    fn the_table_has_a_row_per_run_and_judges_the_targets() {
        let runs = vec![
            run(IngestPath::Direct, 10_000, 10_000, 1000),
            run(IngestPath::Stream, 100, 100, 100),
        ];
        let figures = figures(&runs[0]);
        assert_eq!(figures.e2e_per_s, Some(200.0));
        assert_eq!(figures.invocations_per_1000, Some(1000.0));
        assert_eq!(figures.cpu_us_per_reading, Some(1000.0));
        let text = markdown(&Options::default(), "fleetload", "now", &runs);
        assert!(
            text.contains("| direct | 200 | 200 | 10000 / 10000 | 200 |"),
            "{text}"
        );
        assert!(text.contains("| stream | 200 |"), "{text}");
        assert!(
            text.contains("invocations per reading 100x fewer (>= 50x: PASS)"),
            "{text}"
        );
        assert!(
            text.contains("0.100 of the direct path's (<= 0.20: PASS)"),
            "{text}"
        );
        let json = json_run(&runs[1]);
        assert_eq!(json["figures"]["readings_per_bulk"], 100.0);
        assert_eq!(json["stored"]["exactly_once"], true);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1.0, 2.0], 0.0), Some(1.0));
    }

    #[test]
    fn missing_figures_print_as_a_dash() {
        assert_eq!(fmt(None, 1), "-");
        assert_eq!(fmt(Some(f64::NAN), 1), "-");
        assert_eq!(fmt(Some(2.345), 1), "2.3");
        assert_eq!(per(1.0, 0.0), None);
    }
}
