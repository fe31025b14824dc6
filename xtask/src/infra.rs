//! `cargo xtask infra-check`: offline checks of the infrastructure code.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use crate::tools::{self, Result};

/// cfn-lint, `sam validate --lint`, `sam validate` (the SAM translator) and the
/// operations assertions on infra/template.yaml, then the CDK app's assertion tests
/// (`npm ci` when needed, `npm test`). Everything runs offline once the tools are
/// installed (pip and npm reach their registries only on the first run).
pub fn check(args: &[String]) -> Result {
    if let Some(arg) = args.first() {
        return Err(format!("infra-check takes no arguments (got `{arg}`)"));
    }
    let started = Instant::now();
    let root = tools::root();
    let template = Path::new("infra").join("template.yaml");

    // Linters pinned: a new cfn-lint rule must not turn CI red on its own. Bump on purpose.
    tools::ensure_python_tools(&[
        ("cfn-lint==1.58.0", "cfn-lint"),
        ("aws-sam-cli==1.170.0", "sam"),
        ("cargo-lambda", "cargo-lambda"),
    ])?;

    tools::run(
        Command::new(tools::venv_bin("cfn-lint"))
            .current_dir(&root)
            .arg(&template),
    )?;

    // SAM needs a region to transform the template; nothing here talks to AWS.
    let sam = || {
        let mut sam = Command::new(tools::venv_bin("sam"));
        sam.current_dir(&root)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_REGION", "us-east-1")
            .env("SAM_CLI_TELEMETRY", "0")
            .env("SAM_CLI_DISABLE_UPDATE_CHECK", "1");
        sam
    };
    tools::run(sam().args(["validate", "--lint", "-t"]).arg(&template))?;
    // `--lint` is cfn-lint only; plain `sam validate` runs the SAM translator, which is
    // what refuses e.g. Auth settings on an included (AWS::Include) DefinitionBody. It
    // needs credentials to exist, not to be real: with inline policies it calls no AWS API.
    tools::run(
        sam()
            .env("AWS_ACCESS_KEY_ID", "AKIDSAMVALIDATE")
            .env("AWS_SECRET_ACCESS_KEY", "sam-validate-offline")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .args(["validate", "-t"])
            .arg(&template),
    )?;

    // The SAM template's alarms, dashboard and logging settings (cfn-lint's decoder).
    tools::run(
        Command::new(tools::venv_bin("python"))
            .current_dir(&root)
            .arg(Path::new("infra").join("test_template_operations.py")),
    )?;

    let cdk = root.join("infra").join("cdk");
    if npm_install_needed(&cdk) {
        tools::run(
            Command::new("npm")
                .current_dir(&cdk)
                .args(["ci", "--no-audit", "--no-fund"]),
        )?;
    } else {
        eprintln!("infra/cdk/node_modules is up to date with package-lock.json");
    }
    // The CDK tests construct RustFunction, which runs `cargo lambda --version`.
    tools::run(
        Command::new("npm")
            .current_dir(&cdk)
            .env("PATH", tools::path_with_venv())
            .arg("test"),
    )?;

    eprintln!(
        "infra-check passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `npm ci` is needed when node_modules is missing or older than package-lock.json
/// (npm ci writes node_modules/.package-lock.json last).
fn npm_install_needed(cdk: &Path) -> bool {
    let modified = |p: PathBuf| -> Option<SystemTime> { p.metadata().ok()?.modified().ok() };
    let installed = modified(cdk.join("node_modules").join(".package-lock.json"));
    let lock = modified(cdk.join("package-lock.json"));
    match (installed, lock) {
        (Some(installed), Some(lock)) => lock > installed,
        _ => true,
    }
}
