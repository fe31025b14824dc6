//! The markdown report: the machine, the cold-start table with the targets checked, the
//! warm-path table.

use crate::cli::Options;
use crate::cold::Sample;
use crate::stats::{median, ms, percentile, sorted};
use crate::warm::WarmResult;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!(
        "{model}, {cpus} CPUs, {:.0} GiB RAM, Linux {}",
        mem_kib as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

struct Row {
    name: String,
    init: Duration,
    init_p90: Duration,
    /// First response with the document written into osmem-server.
    first: Duration,
    first_p90: Duration,
    /// First response with the `_bulk` stub: the function's own cost.
    first_stub: Duration,
    first_stub_p90: Duration,
    rss_mib: f64,
}

/// Targets that are measured for comparison, not checked against the targets: `hello`
/// (the floor), `hello-io` (the floor plus the same two HTTP requests), `python` (the
/// original system).
const BASELINES: [&str; 3] = ["hello", "hello-io", "python"];

pub fn cold_report(
    o: &Options,
    real: &HashMap<&str, Vec<Sample>>,
    stubbed: &HashMap<&str, Vec<Sample>>,
    out: &mut String,
) {
    let rows: Vec<Row> = o
        .targets
        .iter()
        .filter_map(|t| {
            let (real, stubbed) = (real.get(t.name.as_str())?, stubbed.get(t.name.as_str())?);
            let init = sorted(real.iter().chain(stubbed), |s| s.init);
            let first = sorted(real, |s| s.first_response);
            let first_stub = sorted(stubbed, |s| s.first_response);
            let mut rss: Vec<u64> = real.iter().map(|s| s.rss_kib).collect();
            rss.sort_unstable();
            Some(Row {
                name: t.name.clone(),
                init_p90: percentile(&init, 90.0),
                first_p90: percentile(&first, 90.0),
                first_stub_p90: percentile(&first_stub, 90.0),
                init: median(init),
                first: median(first),
                first_stub: median(first_stub),
                rss_mib: rss.get(rss.len() / 2).copied().unwrap_or(0) as f64 / 1024.0,
            })
        })
        .collect();
    let hello = rows.iter().find(|r| r.name == "hello");
    let hello_io = rows.iter().find(|r| r.name == "hello-io");
    let python = rows.iter().find(|r| r.name == "python");

    let _ = writeln!(
        out,
        "### Cold start: process start to first `/next` (init) and to the first response\n"
    );
    let _ = writeln!(out, "Machine: {}.  ", machine());
    for note in &o.notes {
        let _ = writeln!(out, "{note}.  ");
    }
    let _ = writeln!(
        out,
        "{runs} cold starts per function and pass (after one discarded warm-up start per pass), round-robin; \
         medians, p90 in brackets. One invoke per start: the target's API Gateway REST event (warning-tripping unless the name says otherwise) whose \
         `groupid` no earlier start used (so each start stores a new document), one IoT publish to a local stub and one \
         `_bulk`. Two passes: **osmem** indexes into osmem-server (a real write: the server's time is in the \
         first response), **stub** into an in-process `_bulk` stub that answers at once (the function's own \
         cost, like the IoT stub). Init is the median over both passes ({both} starts). Peak RSS = `VmHWM` after \
         the response (osmem pass).\n",
        runs = o.runs,
        both = 2 * o.runs,
    );
    let _ = writeln!(
        out,
        "| function | init ms | first response ms, osmem | first response ms, stub | init / hello | first resp. / hello, osmem | first resp. / hello, stub | first resp. / hello-io, stub | Python first resp. / this, osmem | peak RSS MiB |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let ratio = |a: Duration, b: Option<Duration>| match b {
        Some(b) if !b.is_zero() => format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64()),
        _ => "-".into(),
    };
    for r in &rows {
        let _ = writeln!(
            out,
            "| {} | {:.2} [{:.2}] | {:.2} [{:.2}] | {:.2} [{:.2}] | {} | {} | {} | {} | {} | {:.1} |",
            r.name,
            ms(r.init),
            ms(r.init_p90),
            ms(r.first),
            ms(r.first_p90),
            ms(r.first_stub),
            ms(r.first_stub_p90),
            ratio(r.init, hello.map(|h| h.init)),
            ratio(r.first, hello.map(|h| h.first)),
            ratio(r.first_stub, hello.map(|h| h.first_stub)),
            ratio(r.first_stub, hello_io.map(|h| h.first_stub)),
            python
                .map(|p| ratio(p.first, Some(r.first)))
                .unwrap_or_else(|| "-".into()),
            r.rss_mib
        );
    }
    let _ = writeln!(out, "\nTargets (functions other than the baselines):\n");
    for r in rows
        .iter()
        .filter(|r| !BASELINES.contains(&r.name.as_str()))
    {
        let mut checks = Vec::new();
        if let Some(h) = hello {
            let within = |a: Duration, b: Duration| a.as_secs_f64() <= 2.0 * b.as_secs_f64();
            checks.push(("init <= 2x hello", within(r.init, h.init)));
            checks.push((
                "first response <= 2x hello, osmem",
                within(r.first, h.first),
            ));
            checks.push((
                "first response <= 2x hello, stub",
                within(r.first_stub, h.first_stub),
            ));
        }
        if let Some(p) = python {
            checks.push((
                "first response >= 30x faster than Python, osmem",
                p.first.as_secs_f64() >= 30.0 * r.first.as_secs_f64(),
            ));
        }
        checks.push(("peak RSS < 12 MB", r.rss_mib * 1024.0 * 1024.0 < 12e6));
        let text: Vec<String> = checks
            .iter()
            .map(|(what, ok)| format!("{what}: {}", if *ok { "PASS" } else { "FAIL" }))
            .collect();
        let _ = writeln!(out, "- {}: {}", r.name, text.join("; "));
    }
}

pub fn warm_report(o: &Options, rows: &[(String, WarmResult)], out: &mut String) {
    let _ = writeln!(
        out,
        "\n### Warm path through the harness's local gateway\n\n\
         HTTP POST -> API Gateway REST (v1) proxy event -> Runtime API -> one warm process -> proxy response. \
         {} timed requests per function after 50 warm-up requests, {} client connection(s), each request a new \
         reading that trips the no2 rule (one IoT publish, one new document).\n",
        o.warm, o.concurrency
    );
    let _ = writeln!(
        out,
        "| function | requests | 200s | throughput req/s | p50 ms | p99 ms | max ms | peak RSS MiB |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, r) in rows {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} |",
            r.requests,
            r.ok,
            r.requests as f64 / r.elapsed.as_secs_f64(),
            ms(percentile(&r.latencies, 50.0)),
            ms(percentile(&r.latencies, 99.0)),
            ms(r.latencies.last().copied().unwrap_or_default()),
            r.rss_mib
        );
    }
}
