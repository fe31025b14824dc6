//! `cargo xtask bench-fleet [options]`: builds `bench/fleetload` and the functions in
//! release (the functions exactly as `cargo lambda watch --release` builds them, so its
//! first invoke finds them fresh), makes sure the peers are installed, and runs the load
//! and fault runs. Its report goes to `target/fleetload/report.md` and `report.json`; the
//! stacks' own log lines (rules, mappings, functions) to `target/fleetload/stderr.log`.
//! A benchmark run by hand, never part of `cargo xtask test`.

use crate::opensearch::ensure_osmem_server;
use crate::tools::{self, root, run, Result};
use std::process::{Command, Stdio};

pub const USAGE: &str = "\
usage: cargo xtask bench-fleet [--no-build] [fleetload options]
  --no-build   use target/release/fleetload and the function binaries already built
  everything else goes to fleetload (`cargo xtask bench-fleet --help` lists it)
";

/// The functions `cargo lambda watch` serves (built together, as `cargo xtask dev` does).
const FUNCTIONS: [&str; 5] = ["gasdetector", "dust", "temp", "nodata", "query"];

pub fn run_fleet(args: &[String]) -> Result {
    let build = !args.iter().any(|a| a == "--no-build");
    let forwarded: Vec<&String> = args.iter().filter(|a| *a != "--no-build").collect();
    let help = forwarded.iter().any(|a| *a == "-h" || *a == "--help");
    let root = root();
    let release = root.join("target").join("release");
    if build || help {
        run(Command::new("cargo").current_dir(&root).args([
            "build",
            "--release",
            "-p",
            "fleetload",
        ]))?;
    }
    if help {
        print!("{USAGE}");
        run(Command::new(release.join("fleetload")).arg("--help"))?;
        return Ok(());
    }
    let debug_functions = forwarded.iter().any(|a| *a == "--debug-functions");
    if build {
        let mut functions = Command::new("cargo");
        functions.current_dir(&root).arg("build");
        if !debug_functions {
            functions.arg("--release");
        }
        for function in FUNCTIONS {
            functions.args(["--bin", function]);
        }
        run(&mut functions)?;
    }
    ensure_osmem_server()?;
    tools::ensure_mosquitto()?;
    tools::ensure_cargo_lambda()?;
    tools::ensure_python_tools(&[("moto[server]", "moto_server")])?;
    let out = root.join("target").join("fleetload");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let log_path = out.join("stderr.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let mut fleetload = Command::new(release.join("fleetload"));
    fleetload
        .current_dir(&root)
        .args(&forwarded)
        .stdin(Stdio::null())
        .stderr(log);
    eprintln!(
        "$ {} (its stack's log lines: {})",
        tools::describe(&fleetload),
        log_path.display()
    );
    let status = fleetload
        .status()
        .map_err(|e| format!("cannot start fleetload: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    eprintln!("--- last lines of {} ---", log_path.display());
    for line in &lines[lines.len().saturating_sub(40)..] {
        eprintln!("{line}");
    }
    Err(format!("fleetload failed with {status}"))
}
