//! Project automation (`cargo xtask <command>`), the rust-analyzer way: one binary,
//! plain std, no shell scripts.

mod bench;
mod bench_fleet;
mod build_lambda;
mod cargo_tools;
mod deny;
mod dev;
mod fuzz;
mod http;
mod infra;
mod opensearch;
mod opensearch_templates;
mod stats;
mod test;
mod tools;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  dev            bring up the whole system locally (broker, IoT endpoint, OpenSearch, functions, gateway)
  test           run every check: fmt, clippy -D warnings, unit, integration and infra tests
  infra-check    offline checks of infra/: cfn-lint, sam validate --lint, CDK assertions
  opensearch-templates <url> [--sigv4 <region>] [--ism] [--rollups] [--large-fleet] ...
                 PUT the index templates (and ISM policies, rollup jobs) of infra/opensearch
  build-lambda   cargo lambda build --release of the functions (three ingest, nodata)
  deny           cargo deny check bans licenses sources (+ advisories when the network is reachable)
  fuzz [secs]    run the parser/validation fuzz target (default 60 s) and minimize its corpus
  bench-cold     cold-start, memory and warm-path benchmarks against baselines (target/bench/cold.md)
  bench-fleet    simulated boxes over MQTT through the direct and the stream path, with faults (target/fleetload/report.md)
  stats [--every SECS]   sum the EMF metrics the functions printed under `cargo xtask dev`
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match command.as_str() {
        "dev" => dev::run(rest),
        "test" => test::run(rest),
        "infra-check" => infra::check(rest),
        "opensearch-templates" => opensearch_templates::run(rest),
        "build-lambda" => build_lambda::run_build(rest),
        "deny" => deny::check(rest),
        "fuzz" => fuzz::run_fuzz(rest),
        "bench-cold" => bench::cold(rest),
        "bench-fleet" => bench_fleet::run_fleet(rest),
        "stats" => stats::run(rest),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}
