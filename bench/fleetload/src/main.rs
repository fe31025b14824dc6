//! `fleetload` (`cargo xtask bench-fleet [options]`): simulated boxes over MQTT against the
//! local stack, one ingest path at a time (the MQTT data rule invoking the function per
//! message, or Basic Ingest -> stream rule -> Kinesis -> event source mapping batches),
//! counted at the downstreams; optionally with a fault mid-run (the consumer killed, or
//! OpenSearch down). Writes `report.md` and `report.json` (default `target/fleetload`).
//! A benchmark run by hand, never a timed test.
//!
//! Modules: [`options`] (the command line), [`readings`] (the fleet's readings and the
//! alarm schedule, pure), [`proxy`] (the counting proxies), [`stack`] (one path's stack),
//! [`boxes`] (the MQTT boxes), [`observe`] (document count, latency, warnings, CPU),
//! [`durations`] (the function's own warm durations from its log, pure),
//! [`warnings`] (the warnings judged, pure), [`run`] (one run), [`report`] (Markdown and
//! JSON, pure).

mod boxes;
mod durations;
mod observe;
mod options;
mod proxy;
mod readings;
mod report;
mod run;
mod stack;
mod warnings;

use options::{Command, Fault};
use std::process::ExitCode;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match options::parse(&args) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print!("{}", options::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("fleetload: {message}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&options.out) {
        eprintln!("fleetload: cannot create {}: {e}", options.out.display());
        return ExitCode::FAILURE;
    }
    raise_open_files();
    let started = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let command = std::iter::once("fleetload".to_owned())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let clock = std::time::Instant::now();
    let mut runs = Vec::new();
    // A fault run is judged against the fault-free run of the same seed, path and size.
    let mut faults = Vec::new();
    if options.fault == Fault::None || options.baseline {
        faults.push(Fault::None);
    }
    if options.fault != Fault::None {
        faults.push(options.fault);
    }
    for &boxes in &options.boxes {
        for &path in &options.paths {
            for &fault in &faults {
                let result = run::run(&options, path, boxes, fault).await;
                runs.push(result);
                // Written after every run, so an interrupted set keeps what it measured.
                if let Err(e) = write(&options, &command, &started, &runs) {
                    eprintln!("fleetload: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let markdown = report::markdown(&options, &command, &started, &runs);
    println!("\n{markdown}");
    println!(
        "fleetload: {} run(s) in {:.0} s; {} and {}",
        runs.len(),
        clock.elapsed().as_secs_f64(),
        options.out.join("report.md").display(),
        options.out.join("report.json").display()
    );
    ExitCode::SUCCESS
}

/// The local data rule invokes the function once per message, each invocation its own
/// connection through the invoke proxy in this process (two descriptors), so a saturated
/// direct path holds thousands: raise the open-files limit as far as allowed.
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let wanted = limit.rlim_max.max(65_536);
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: wanted,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn write(
    options: &options::Options,
    command: &str,
    started: &str,
    runs: &[run::RunResult],
) -> Result<(), String> {
    let markdown = report::markdown(options, command, started, runs);
    let md = options.out.join("report.md");
    std::fs::write(&md, &markdown).map_err(|e| format!("cannot write {}: {e}", md.display()))?;
    let json = serde_json::json!({
        "command": command,
        "started": started,
        "machine": report::machine(),
        "runs": runs.iter().map(report::json_run).collect::<Vec<_>>(),
    });
    let path = options.out.join("report.json");
    let text = serde_json::to_string_pretty(&json).map_err(|e| format!("report.json: {e}"))?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
