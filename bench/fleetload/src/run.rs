//! One run: one path, one fleet size, one fault (or none), on a fresh stack. Every wait
//! is on an event (a CONNACK, the PUBACKs, the document count, a marker message) with a
//! deadline; nothing sleeps and hopes.

use crate::boxes::{self, Connected, FleetCounts, Published, Schedule};
use crate::durations::{self, Durations};
use crate::observe::{self, Cpu, Latency, Search, Warnings};
use crate::options::{Fault, IngestPath, Options};
use crate::proxy::Counts;
use crate::readings::{self, Plan};
use crate::stack;
use crate::warnings::{self, Summary};
use chrono::{DurationRound, Utc};
use local_aws::event_source::Counts as MappingCounts;
use local_aws::stream_rule::RuleCounts;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Waiting for the document count stops when it has not moved for this long after the
/// last publish (a reading lost for good never arrives).
const STALL: Duration = Duration::from_secs(60);

/// Whether every published reading is stored, and once.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stored {
    /// `_count` of the index after a refresh.
    pub count: u64,
    /// Published ids a search finds.
    pub found: u64,
    /// Published ids it does not find.
    pub missing: u64,
    /// Hits beyond one per found id, plus documents of no published id.
    pub duplicates: u64,
}

impl Stored {
    pub fn exactly_once(&self, published: u64) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.count == published
    }
}

#[derive(Clone, Debug)]
pub struct RunResult {
    pub path: IngestPath,
    pub boxes: usize,
    pub groups: usize,
    pub fault: Fault,
    pub setup_s: f64,
    /// Readings the plan has (every box, every reading).
    pub readings: u64,
    pub fleet: FleetCounts,
    pub offered_per_s: f64,
    pub publish_span_s: f64,
    /// First publish to all searchable, and last publish to all searchable.
    pub e2e_s: Option<f64>,
    pub tail_s: Option<f64>,
    pub opensearch: Counts,
    pub iot: Counts,
    pub invoke: Counts,
    pub mapping: Option<MappingCounts>,
    pub rule: Option<RuleCounts>,
    /// (on-failure destination messages, rule error actions).
    pub failure_destination: (u64, u64),
    /// Publish-to-searchable of the timed readings, ms, sorted; timed readings never found.
    pub latencies_ms: Vec<f64>,
    pub timed_missing: usize,
    /// CPU ticks of the function processes since the start, per binary.
    pub cpu_ticks: BTreeMap<String, u64>,
    pub ticks_per_s: u64,
    pub processes: usize,
    pub stored: Stored,
    pub warnings: Summary,
    /// The gasdetector function's own warm durations: stream invocations on the stream
    /// path, the rule's direct ones on the direct path.
    pub durations: Option<Durations>,
    /// What the fault did, in words.
    pub fault_log: Vec<String>,
}

impl RunResult {
    pub fn cpu_ms(&self) -> f64 {
        self.cpu_ticks.values().sum::<u64>() as f64 * 1000.0 / self.ticks_per_s as f64
    }

    pub fn published(&self) -> u64 {
        self.fleet.publishes
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Connects every box, each on its own connection.
async fn connect_all(
    broker: std::net::SocketAddr,
    n: usize,
    pubacks: &watch::Sender<u64>,
) -> Vec<Arc<Connected>> {
    let mut connected = Vec::with_capacity(n);
    for i in 0..n {
        let b = boxes::connect(
            broker,
            i,
            &readings::thing(i),
            pubacks.clone(),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        connected.push(Arc::new(b));
    }
    connected
}

pub async fn run(options: &Options, path: IngestPath, n: usize, fault: Fault) -> RunResult {
    println!(
        "== {} path, {n} boxes, fault {}: starting the stack",
        path.name(),
        fault.name()
    );
    let functions_log = options.out.join(format!(
        "functions-{}-{n}-{}.log",
        path.name(),
        fault.name()
    ));
    let stack = stack::start(options, path, n, functions_log).await;
    println!(
        "   stack up in {:.1} s; connecting {n} boxes",
        secs(stack.setup)
    );
    let search = Search {
        url: stack.opensearch.url.clone(),
        http: stack.opensearch.http.clone(),
    };
    let warnings_seen = Warnings::subscribe(stack.broker())
        .await
        .unwrap_or_else(|e| panic!("subscribing to pi/#: {e}"));
    let (pubacks_tx, pubacks) = watch::channel(0u64);
    let fleet = connect_all(stack.broker(), n, &pubacks_tx).await;

    // The readings, once the start second is known.
    let interval = options.interval;
    let per_box = ((secs(options.duration) / secs(interval)).floor() as usize).max(1);
    let t0 = (Utc::now() + chrono::Duration::seconds(2))
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap_or_else(|_| Utc::now());
    let plan = Plan {
        seed: options.seed,
        boxes: n,
        readings: per_box,
        interval_s: secs(interval),
        t0,
        sample: options.sample,
    };
    let mut ids: HashMap<String, (usize, usize)> = HashMap::with_capacity(plan.total());
    let mut all_ids: Vec<String> = Vec::with_capacity(plan.total());
    let mut schedules = Vec::with_capacity(n);
    for i in 0..n {
        let mut payloads = Vec::with_capacity(per_box);
        for k in 0..per_box {
            let reading = plan.generate(i, k).unwrap_or_else(|e| panic!("{e}"));
            ids.insert(reading.id.clone(), (i, k));
            all_ids.push(reading.id.clone());
            payloads.push((
                boxes::payload(path, &reading.body),
                reading.sampled.then(|| reading.id.clone()),
            ));
        }
        schedules.push(Schedule {
            topic: boxes::topic(path, &readings::thing(i), &readings::group(i)),
            payloads,
        });
    }
    let total = plan.total() as u64;
    let timed_planned = (0..n)
        .flat_map(|i| (0..per_box).map(move |k| (i, k)))
        .filter(|&(i, k)| plan.sampled(i, k))
        .count();

    // Baselines, then go.
    let cpu = Cpu::start(stack.watch_pids.clone());
    let os0 = stack.os_proxy.counts();
    let iot0 = stack.iot_proxy.counts();
    let invoke0 = stack.invoke_proxy.counts();
    let gas_mapping = stack
        .stack
        .stream
        .as_ref()
        .and_then(|s| s.mappings.iter().find(|m| m.function() == "gasdetector"));
    let mapping0 = gas_mapping.map(|m| m.counts());
    let rule0 = stack.stack.iot_rules.stream_rule().map(|r| r.counts());
    let timed: Published = Arc::new(Mutex::new(Vec::new()));
    let latency = Latency::start(search.clone(), timed.clone());
    let mut progress = observe::watch_count(search.clone(), total);
    let wait_start = (t0 - Utc::now()).to_std().unwrap_or_default();
    let start = Instant::now() + wait_start;
    println!(
        "   {n} boxes x {per_box} readings every {:.1} s from {} ({} timed 1 in {})",
        secs(interval),
        t0.format("%H:%M:%S"),
        timed_planned,
        options.sample
    );
    let mut handles = Vec::with_capacity(n);
    for (i, schedule) in schedules.into_iter().enumerate() {
        let b = fleet[i].clone();
        let offset = interval.mul_f64(i as f64 / n as f64);
        let timed = timed.clone();
        handles.push(tokio::spawn(async move {
            boxes::publish_all(&b, schedule, start, offset, interval, timed).await
        }));
    }
    let publishing = async {
        let mut first: Option<Instant> = None;
        let mut last: Option<Instant> = None;
        for handle in handles {
            if let Ok((f, l)) = handle.await {
                first = match (first, f) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                last = last.max(l);
            }
        }
        (first, last)
    };
    let fault_at = start + options.duration.mul_f64(options.fault_at);
    let injecting = inject(&stack, &cpu, fault, (start, fault_at), options.outage);
    let ((first, last), mut fault_log) = tokio::join!(publishing, injecting);
    let first = first.unwrap_or(start);
    let last = last.unwrap_or(start);
    println!(
        "   published for {:.1} s; waiting for the PUBACKs and for every reading to be searchable",
        secs(last - first)
    );
    let mut acked = pubacks.clone();
    let _ = tokio::time::timeout(Duration::from_secs(60), acked.wait_for(|n| *n >= total)).await;

    // Everything searchable, or the count stalls, or the drain deadline passes.
    let deadline = last + options.drain_timeout;
    loop {
        let p = *progress.borrow();
        if p.reached.is_some() {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            println!(
                "   drain deadline passed with {} of {total} stored",
                p.count
            );
            break;
        }
        if now > last + STALL && now.saturating_duration_since(p.last_change) > STALL {
            println!(
                "   the count stalled at {} of {total} for {} s; giving up waiting",
                p.count,
                STALL.as_secs()
            );
            break;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), progress.changed()).await;
    }
    let reached = progress.borrow().reached;

    // Quiet: no invocation running (and, on the stream path, every record put handled),
    // then a marker through the IoT endpoint's own MQTT client: the warnings published
    // before it have arrived when it does.
    let quiet_deadline = Instant::now() + Duration::from_secs(120);
    let mut in_flight = stack.invoke_proxy.in_flight();
    loop {
        let handled = match (gas_mapping, stack.stack.iot_rules.stream_rule()) {
            (Some(m), Some(r)) => {
                let c = m.counts();
                c.records_delivered + c.records_filtered >= r.counts().put
                    || c.failed_batches > mapping0.map_or(0, |m| m.failed_batches)
            }
            _ => true,
        };
        if *in_flight.borrow() == 0 && handled {
            break;
        }
        if Instant::now() > quiet_deadline {
            println!("   invocations still running after 120 s; judging what arrived");
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), in_flight.changed()).await;
    }
    let token = format!("fleetload-{}", fastrand::u64(..));
    let marker = stack
        .opensearch
        .http
        .post(format!(
            "{}/topics/pi%2Ffleetload-marker?qos=1",
            stack.stack.iot.url()
        ))
        .body(serde_json::json!({ "marker": token }).to_string())
        .send()
        .await;
    if marker.is_err()
        || !warnings_seen
            .wait_marker(&token, Duration::from_secs(30))
            .await
    {
        println!("   the marker did not come back; warnings may be incomplete");
    }

    // The verdicts.
    latency.settle(Duration::from_secs(10)).await;
    let (latencies, timed_missing) = latency.results();
    drop(latency);
    let mut latencies_ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    latencies_ms.sort_by(f64::total_cmp);
    let timed_missing = timed_missing.max(timed_planned.saturating_sub(latencies_ms.len()));
    let stored = verify(&search, &all_ids).await;
    let (cpu_ticks, processes) = cpu.used();
    let fleet_counts = boxes::totals(&fleet);
    let mapping = match (gas_mapping, mapping0) {
        (Some(m), Some(before)) => Some(mapping_since(&m.counts(), &before)),
        _ => None,
    };
    let rule = match (stack.stack.iot_rules.stream_rule(), rule0) {
        (Some(r), Some(before)) => {
            let now = r.counts();
            Some(RuleCounts {
                put: now.put - before.put,
                error_actions: now.error_actions - before.error_actions,
                ignored: now.ignored - before.ignored,
            })
        }
        _ => None,
    };
    if fault == Fault::KillConsumer {
        let roots = stack
            .watch_pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let now: Vec<u32> = observe::function_processes(&roots)
            .into_iter()
            .filter(|(_, p)| p.name == "gasdetector")
            .map(|(pid, _)| pid)
            .collect();
        fault_log.push(format!("gasdetector processes at the end: {now:?}"));
    }
    let summary = warnings::summarize(&plan, &ids, &warnings_seen.messages());
    let log = std::fs::read_to_string(&stack.functions_log).unwrap_or_default();
    let durations = durations::summarize(&durations::parse(&log), path == IngestPath::Stream);
    let result = RunResult {
        path,
        boxes: n,
        groups: plan.groups(),
        fault,
        setup_s: secs(stack.setup),
        readings: total,
        fleet: fleet_counts,
        offered_per_s: n as f64 / secs(interval),
        publish_span_s: secs(last - first),
        e2e_s: reached.map(|r| secs(r - first)),
        tail_s: reached.map(|r| secs(r.saturating_duration_since(last))),
        opensearch: stack.os_proxy.counts().since(&os0),
        iot: stack.iot_proxy.counts().since(&iot0),
        invoke: stack.invoke_proxy.counts().since(&invoke0),
        mapping,
        rule,
        failure_destination: stack.failure_destination(),
        latencies_ms,
        timed_missing,
        cpu_ticks,
        ticks_per_s: observe::ticks_per_second(),
        processes,
        stored,
        warnings: summary,
        durations,
        fault_log,
    };
    println!(
        "   done: {} stored of {} published, {} invocations, {} _bulk",
        result.stored.count,
        result.published(),
        result.invoke.total_invocations(),
        result.opensearch.bulk_requests
    );
    result
}

fn mapping_since(now: &MappingCounts, before: &MappingCounts) -> MappingCounts {
    MappingCounts {
        invocations: now.invocations - before.invocations,
        records_read: now.records_read - before.records_read,
        records_filtered: now.records_filtered - before.records_filtered,
        records_delivered: now.records_delivered - before.records_delivered,
        retries: now.retries - before.retries,
        bisects: now.bisects - before.bisects,
        unreachable: now.unreachable - before.unreachable,
        failed_batches: now.failed_batches - before.failed_batches,
        iterator_renewals: now.iterator_renewals - before.iterator_renewals,
    }
}

/// Every published id searched for (500 at a time), and the count after a refresh.
async fn verify(search: &Search, ids: &[String]) -> Stored {
    if let Err(e) = search.refresh().await {
        println!("   refresh: {e}");
    }
    let count = search
        .count()
        .await
        .unwrap_or_else(|e| panic!("final count: {e}"));
    let mut found = 0u64;
    let mut hits = 0u64;
    for chunk in ids.chunks(500) {
        let answer = search
            .found(chunk)
            .await
            .unwrap_or_else(|e| panic!("final id check: {e}"));
        found += answer.len() as u64;
        hits += answer.values().sum::<u64>();
    }
    Stored {
        count,
        found,
        missing: ids.len() as u64 - found,
        duplicates: (hits - found) + count.saturating_sub(hits),
    }
}

/// The fault, at `at`: what it did, in words.
async fn inject(
    stack: &stack::RunStack,
    cpu: &Cpu,
    fault: Fault,
    (start, at): (Instant, Instant),
    outage: Duration,
) -> Vec<String> {
    let mut log = Vec::new();
    match fault {
        Fault::None => {}
        Fault::KillConsumer => {
            tokio::time::sleep_until(at).await;
            // Mid-batch: wait for an invocation to be running (and still running 2 ms
            // later, so the function has it), then kill its process.
            let mut in_flight = stack.invoke_proxy.in_flight();
            let give_up = Instant::now() + Duration::from_secs(30);
            let mut running = false;
            while !running && Instant::now() < give_up {
                let started = tokio::time::timeout_at(give_up, in_flight.wait_for(|n| *n > 0))
                    .await
                    .is_ok();
                tokio::time::sleep(Duration::from_millis(2)).await;
                running = started && *in_flight.borrow_and_update() > 0;
            }
            cpu.sample();
            let roots = stack
                .watch_pids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let busiest = observe::function_processes(&roots)
                .into_iter()
                .filter(|(_, p)| p.name == "gasdetector")
                .max_by_key(|(_, p)| p.ticks);
            let still_running = *in_flight.borrow();
            match busiest {
                Some((pid, _)) => {
                    let pid_t = i32::try_from(pid).unwrap_or(i32::MAX);
                    let errors_before = stack.invoke_proxy.counts().invocation_errors;
                    // SAFETY: kill(2) on a process id read from /proc; no memory involved.
                    let killed = unsafe { libc::kill(pid_t, libc::SIGKILL) } == 0;
                    log.push(format!(
                        "SIGKILL to gasdetector pid {pid} {:.1} s into the run: {} ({} invocation(s) running at that moment{})",
                        secs(Instant::now().saturating_duration_since(start)),
                        if killed { "delivered" } else { "failed" },
                        still_running,
                        if running { "" } else { "; none was running within 30 s" }
                    ));
                    let took = stack.restart_watch().await;
                    // The invocations the old emulator held failed when it was stopped.
                    let failed = stack.invoke_proxy.counts().invocation_errors - errors_before;
                    log.push(format!(
                        "`cargo lambda watch` restarted in {:.1} s (it does not start a dead function again by itself); {failed} invocation(s) it held failed; the next invocation started a new gasdetector process",
                        secs(took)
                    ));
                }
                None => log.push("no gasdetector process to kill".into()),
            }
        }
        Fault::OpenSearchDown => {
            tokio::time::sleep_until(at).await;
            let before = stack.os_proxy.counts();
            stack.os_proxy.set_down(true);
            let down_at = Instant::now();
            tokio::time::sleep(outage).await;
            stack.os_proxy.set_down(false);
            let refused = stack.os_proxy.counts().refused - before.refused;
            log.push(format!(
                "OpenSearch proxy answered 503 from {:.1} s into the run for {:.1} s ({refused} requests refused), then forwarded again",
                secs(down_at.saturating_duration_since(start)),
                secs(down_at.elapsed())
            ));
        }
    }
    log
}
