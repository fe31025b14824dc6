//! `cargo xtask bench-cold`: builds the release bootstraps, the hello-world baselines and
//! the harness (`bench/coldstart`), installs the Python baseline's dependencies and
//! osmem-server into `target/venv`, runs the harness and writes `target/bench/cold.md`.
//! Benchmarks are run by hand, never as timed tests in CI.

use crate::opensearch::ensure_osmem_server;
use crate::tools::{self, root, run, venv_bin, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const USAGE: &str = "\
usage: cargo xtask bench-cold [--runs N] [--warm N] [--concurrency C] [--zip] [--update] [--no-build]
                             [--previous REV] [--json-logs]
  --runs N        cold starts per function (default 15)
  --warm N        warm requests per function through the harness gateway (default 2000, 0 = skip)
  --concurrency C client connections for the warm test (default 1)
  --zip           also `cargo lambda build --release --output-format zip` and report zip sizes
  --update        copy the report into BENCHMARKS.md (between the bench-cold markers)
  --no-build      use the binaries already in target/release
  --previous REV  also build gasdetector at git revision REV (e.g. reorg) into
                  target/bench/previous and measure it as `gasdetector-previous`, cold and warm
  --json-logs     run every function with AWS_LAMBDA_LOG_FORMAT=JSON, as the stacks deploy them
";

const FUNCTIONS: [(&str, &str); 3] = [
    ("gasdetector", "events/gasdetector/warn-no2-apigw-rest.json"),
    ("dust", "events/dust/warn-pm10-apigw-rest.json"),
    ("temp", "events/temp/warn-temperature-apigw-rest.json"),
];

const BEGIN: &str = "<!-- bench-cold:begin -->";
const END: &str = "<!-- bench-cold:end -->";

pub fn cold(args: &[String]) -> Result {
    let mut runs = "15".to_string();
    let mut warm = "2000".to_string();
    let mut concurrency = "1".to_string();
    let (mut zip, mut update, mut build) = (false, false, true);
    let mut previous: Option<String> = None;
    let mut json_logs = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || tools::flag_value(&mut it, arg, USAGE);
        match arg.as_str() {
            "--runs" => runs = value()?,
            "--warm" => warm = value()?,
            "--concurrency" => concurrency = value()?,
            "--zip" => zip = true,
            "--update" => update = true,
            "--no-build" => build = false,
            "--previous" => previous = Some(value()?),
            "--json-logs" => json_logs = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let root = root();
    let osmem = ensure_osmem_server()?;
    ensure_python_baseline()?;
    if build {
        // Three builds, so Cargo's feature unification does not mix the harness's (or the
        // functions') dependency features into the binaries being compared.
        let mut functions = Command::new("cargo");
        functions.current_dir(&root).args(["build", "--release"]);
        for (name, _) in FUNCTIONS {
            functions.args(["-p", name]);
        }
        run(&mut functions)?;
        for alone in ["hello", "hello-io", "coldstart"] {
            run(Command::new("cargo").current_dir(&root).args([
                "build",
                "--release",
                "-p",
                alone,
            ]))?;
        }
    }
    let previous_binary = match &previous {
        Some(rev) => Some(build_previous(&root, rev)?),
        None => None,
    };
    let release = root.join("target").join("release");
    let python = venv_bin("python");
    let mut harness = Command::new(release.join("coldstart"));
    harness.current_dir(&root).args([
        "--runs",
        &runs,
        "--warm",
        &warm,
        "--concurrency",
        &concurrency,
        "--osmem",
    ]);
    harness.arg(&osmem);
    let event = FUNCTIONS[0].1;
    for baseline in ["hello", "hello-io"] {
        harness.arg("--fn").arg(format!(
            "{baseline}|{event}|{}",
            release.join(baseline).display()
        ));
    }
    for (name, event) in FUNCTIONS {
        harness
            .arg("--fn")
            .arg(format!("{name}|{event}|{}", release.join(name).display()));
    }
    // The same binary on a reading that trips no rule: one `_bulk`, no IoT publish, so
    // the difference to the row above is what the SDK's first publish costs.
    harness.arg("--fn").arg(format!(
        "gasdetector-no-warning|events/gasdetector/apigw-rest.json|{}",
        release.join("gasdetector").display()
    ));
    // The same binary with ALARM_MODE=every (no alarm state, a publish per breaching
    // reading) beside the default (one shadow read when cold, one versioned write per
    // request): the alarm state's cost, side by side.
    harness.arg("--fn").arg(format!(
        "gasdetector-every|{event}|ALARM_MODE=every {}",
        release.join("gasdetector").display()
    ));
    // The same binary on a box's own route (`/things/{thing}/gasdetector`, as IAM lets it
    // through): one registry lookup (`DescribeThing`, from the harness's stub) on the cold
    // start, then the per-instance cache; the difference to `gasdetector` is the binding.
    harness.arg("--fn").arg(format!(
        "gasdetector-thing|events/things/gasdetector-apigw-rest.json|{}",
        release.join("gasdetector").display()
    ));
    let mut warm = vec!["gasdetector", "gasdetector-thing", "gasdetector-every"];
    if let (Some(binary), Some(rev)) = (&previous_binary, &previous) {
        harness
            .arg("--fn")
            .arg(format!("gasdetector-previous|{event}|{}", binary.display()));
        warm.push("gasdetector-previous");
        harness.arg("--note").arg(format!(
            "`gasdetector-previous`: the same function built from `{rev}`"
        ));
    }
    warm.push("python");
    for name in warm {
        harness.arg("--warm-fn").arg(name);
    }
    if json_logs {
        harness.args(["--env", "AWS_LAMBDA_LOG_FORMAT=JSON"]);
        harness
            .arg("--note")
            .arg("Every function ran with AWS_LAMBDA_LOG_FORMAT=JSON (as deployed)");
    }
    harness.arg("--fn").arg(format!(
        "python|{event}|{} {}",
        python.display(),
        root.join("bench/python/bootstrap.py").display()
    ));
    let out = root.join("target").join("bench").join("cold.md");
    harness.arg("--out").arg(&out);
    harness.arg("--note").arg(format!(
        "Built with {}; release profile from Cargo.toml; baseline {} with boto3 {} and requests {} (bench/python)",
        version(Command::new("rustc").arg("--version")),
        version(Command::new(&python).arg("--version")),
        version(Command::new(&python).args(["-c", "import boto3; print(boto3.__version__)"])),
        version(Command::new(&python).args(["-c", "import requests; print(requests.__version__)"])),
    ));
    harness.arg("--note").arg(format!(
        "Command: `{}`",
        ["cargo xtask bench-cold".to_string(), args.join(" ")]
            .join(" ")
            .trim_end()
    ));
    run(&mut harness)?;

    let mut report =
        std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    if zip {
        report.push_str(&zip_sizes(&root)?);
        std::fs::write(&out, &report).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    if update {
        update_benchmarks(&root.join("BENCHMARKS.md"), &report)?;
    }
    eprintln!("report: {}", out.display());
    Ok(())
}

/// Builds the gasdetector bootstrap of git revision `rev` in target/bench/previous/src (its
/// own workspace and target dir, seeded with our release dependencies so only the crates
/// that differ recompile) and returns the binary.
fn build_previous(root: &Path, rev: &str) -> Result<PathBuf> {
    let dir = root.join("target").join("bench").join("previous");
    let src = dir.join("src");
    if src.exists() {
        std::fs::remove_dir_all(&src).map_err(|e| format!("{}: {e}", src.display()))?;
    }
    std::fs::create_dir_all(&src).map_err(|e| format!("{}: {e}", src.display()))?;
    let tar = dir.join("source.tar");
    run(Command::new("git")
        .current_dir(root)
        .args(["archive", "--format=tar", "-o"])
        .arg(&tar)
        .arg(rev))?;
    run(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&src))?;
    let target = dir.join("target");
    let release = root.join("target").join("release");
    if !target.join("release").exists() && release.exists() {
        std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        run(Command::new("cp").arg("-a").arg(&release).arg(&target))?;
    }
    run(Command::new("cargo")
        .current_dir(&src)
        .args(["build", "--release", "-p", "gasdetector", "--target-dir"])
        .arg(&target))?;
    Ok(target.join("release").join("gasdetector"))
}

fn version(command: &mut Command) -> String {
    command
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text).trim().to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `cargo lambda build --release --output-format zip` for the three functions, and the
/// size of each `target/lambda/<fn>/bootstrap.zip`.
fn zip_sizes(root: &Path) -> Result<String> {
    let cargo_lambda = tools::ensure_cargo_lambda()?;
    let mut build = Command::new(cargo_lambda);
    build
        .current_dir(root)
        .env("PATH", tools::path_with_venv())
        .args(["lambda", "build", "--release", "--output-format", "zip"]);
    for (name, _) in FUNCTIONS {
        build.args(["-p", name]);
    }
    run(&mut build)?;
    let mut text = String::from(
        "\n### Deployment zips (`cargo lambda build --release --output-format zip`)\n\n\
         | function | bootstrap.zip bytes | MB | target < 4 MB |\n|---|---:|---:|---|\n",
    );
    for (name, _) in FUNCTIONS {
        let zip = root
            .join("target")
            .join("lambda")
            .join(name)
            .join("bootstrap.zip");
        let bytes = std::fs::metadata(&zip)
            .map(|m| m.len())
            .map_err(|e| format!("{}: {e}", zip.display()))?;
        text.push_str(&format!(
            "| {name} | {bytes} | {:.2} | {} |\n",
            bytes as f64 / 1e6,
            if bytes < 4_000_000 { "PASS" } else { "FAIL" }
        ));
    }
    Ok(text)
}

fn update_benchmarks(path: &Path, report: &str) -> Result {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        return Err(format!("{}: no {BEGIN} ... {END} markers", path.display()));
    };
    let updated = format!(
        "{}{BEGIN}\n{}\n{}",
        &text[..begin],
        report.trim_end(),
        &text[end..]
    );
    std::fs::write(path, updated).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("updated {}", path.display());
    Ok(())
}

/// boto3 and requests for the Python baseline.
fn ensure_python_baseline() -> Result {
    let python = venv_bin("python");
    let have = |python: &Path| {
        Command::new(python)
            .args(["-c", "import boto3, requests"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if python.exists() && have(&python) {
        return Ok(());
    }
    tools::ensure_python_tools(&[])?;
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "-r"])
        .arg(root().join("bench/python/requirements.txt")))
}
