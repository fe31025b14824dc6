//! `cargo xtask infra-check`: offline checks of the infrastructure code.
//! `cargo xtask opensearch-templates <url>`: applies infra/opensearch/index-templates/*.json.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use crate::tools::{self, Result};

/// cfn-lint and `sam validate --lint` on infra/template.yaml, then the CDK app's assertion
/// tests (`npm ci` when needed, `npm test`). Everything runs offline once the tools are
/// installed (pip and npm reach their registries only on the first run).
pub fn check(args: &[String]) -> Result {
    if let Some(arg) = args.first() {
        return Err(format!("infra-check takes no arguments (got `{arg}`)"));
    }
    let started = Instant::now();
    let root = tools::root();
    let template = Path::new("infra").join("template.yaml");

    tools::ensure_python_tools(&[
        ("cfn-lint", "cfn-lint"),
        ("aws-sam-cli", "sam"),
        ("cargo-lambda", "cargo-lambda"),
    ])?;

    tools::run(
        Command::new(tools::venv_bin("cfn-lint"))
            .current_dir(&root)
            .arg(&template),
    )?;

    // SAM needs a region to transform the template; nothing here talks to AWS.
    tools::run(
        Command::new(tools::venv_bin("sam"))
            .current_dir(&root)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_REGION", "us-east-1")
            .env("SAM_CLI_TELEMETRY", "0")
            .env("SAM_CLI_DISABLE_UPDATE_CHECK", "1")
            .args(["validate", "--lint", "-t"])
            .arg(&template),
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

const TEMPLATES_USAGE: &str = "\
usage: cargo xtask opensearch-templates <url> [--sigv4 <region>] [--service es|aoss]

PUTs every infra/opensearch/index-templates/<name>.json to <url>/_index_template/<name>.
With --sigv4 the requests are signed (curl --aws-sigv4) with the credentials in
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, e.g. after
  eval \"$(aws configure export-credentials --format env)\"
";

/// Applies the index templates to an OpenSearch endpoint with curl (plain for a local
/// server, SigV4-signed for an AWS domain).
pub fn apply_templates(args: &[String]) -> Result {
    let mut url = None;
    let mut region = None;
    let mut service = String::from("es");
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--sigv4" => region = Some(it.next().ok_or(TEMPLATES_USAGE)?.clone()),
            "--service" => service = it.next().ok_or(TEMPLATES_USAGE)?.clone(),
            "-h" | "--help" => {
                eprint!("{TEMPLATES_USAGE}");
                return Ok(());
            }
            other if url.is_none() && !other.starts_with('-') => url = Some(other.to_string()),
            other => return Err(format!("unexpected argument `{other}`\n{TEMPLATES_USAGE}")),
        }
    }
    let url = url.ok_or(TEMPLATES_USAGE)?;
    let url = url.trim_end_matches('/');
    if service != "es" && service != "aoss" {
        return Err(format!("--service must be es or aoss, not `{service}`"));
    }

    let dir = tools::root()
        .join("infra")
        .join("opensearch")
        .join("index-templates");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no index templates in {}", dir.display()));
    }

    for file in &files {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("bad file name {}", file.display()))?;
        let mut curl = Command::new("curl");
        curl.args(["--silent", "--show-error", "--fail-with-body"])
            .args(["--max-time", "30", "--retry", "3"])
            .args(["-X", "PUT"])
            .args(["-H", "content-type: application/json"])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .arg(format!("{url}/_index_template/{name}"));
        if let Some(region) = &region {
            let key = env_var("AWS_ACCESS_KEY_ID")?;
            let secret = env_var("AWS_SECRET_ACCESS_KEY")?;
            curl.arg("--aws-sigv4")
                .arg(format!("aws:amz:{region}:{service}"))
                .arg("--user")
                .arg(format!("{key}:{secret}"));
            if let Ok(token) = std::env::var("AWS_SESSION_TOKEN") {
                curl.arg("-H").arg(format!("x-amz-security-token: {token}"));
            }
        }
        eprintln!("PUT {url}/_index_template/{name}");
        let output = curl
            .output()
            .map_err(|e| format!("cannot start curl: {e}"))?;
        let body = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || !body.contains("\"acknowledged\":true") {
            return Err(format!(
                "PUT _index_template/{name} failed ({}): {body}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    eprintln!("applied {} index templates to {url}", files.len());
    Ok(())
}

fn env_var(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| format!("--sigv4 needs {name} in the environment"))
}
