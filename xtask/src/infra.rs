//! `cargo xtask infra-check`: offline checks of the infrastructure code.
//! `cargo xtask opensearch-templates <url>`: applies the index templates (and dashboards).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use crate::tools::{self, Result};

/// cfn-lint, `sam validate --lint` and `sam validate` (the SAM translator) on
/// infra/template.yaml, then the CDK app's assertion
/// tests (`npm ci` when needed, `npm test`). Everything runs offline once the tools are
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
    // `--lint` is cfn-lint only; plain `sam validate` runs the SAM translator, which is
    // what refuses e.g. Auth settings on an included (AWS::Include) DefinitionBody. It
    // needs credentials to exist, not to be real: with inline policies it calls no AWS API.
    tools::run(
        Command::new(tools::venv_bin("sam"))
            .current_dir(&root)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "AKIDSAMVALIDATE")
            .env("AWS_SECRET_ACCESS_KEY", "sam-validate-offline")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("SAM_CLI_TELEMETRY", "0")
            .env("SAM_CLI_DISABLE_UPDATE_CHECK", "1")
            .args(["validate", "-t"])
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
usage: cargo xtask opensearch-templates <url> [--dashboards] [--sigv4 <region>] [--service es|aoss]
                                              [--user <name:password>]

PUTs every infra/opensearch/index-templates/<name>.json to <url>/_index_template/<name>.
With --dashboards, also imports infra/opensearch/dashboards/*.ndjson into OpenSearch
Dashboards at <url>/_dashboards (overwriting objects with the same ids).
--sigv4 signs the requests (curl --aws-sigv4) with the credentials in AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, e.g. after
  eval \"$(aws configure export-credentials --format env)\"
--user sends HTTP basic auth instead (fine-grained access control master user).
";

/// How to reach the OpenSearch endpoint.
struct Endpoint {
    url: String,
    sigv4: Option<(String, String)>,
    user: Option<String>,
}

impl Endpoint {
    fn curl(&self, method: &str, path: &str) -> Result<Command> {
        let mut curl = Command::new("curl");
        curl.args(["--silent", "--show-error", "--fail-with-body"])
            .args(["--max-time", "60", "--retry", "3"])
            .args(["-X", method])
            .arg(format!("{}{path}", self.url));
        if let Some((region, service)) = &self.sigv4 {
            let key = env_var("AWS_ACCESS_KEY_ID")?;
            let secret = env_var("AWS_SECRET_ACCESS_KEY")?;
            curl.arg("--aws-sigv4")
                .arg(format!("aws:amz:{region}:{service}"))
                .arg("--user")
                .arg(format!("{key}:{secret}"));
            if let Ok(token) = std::env::var("AWS_SESSION_TOKEN") {
                curl.arg("-H").arg(format!("x-amz-security-token: {token}"));
            }
        } else if let Some(user) = &self.user {
            curl.arg("--user").arg(user);
        }
        Ok(curl)
    }
}

/// Runs curl; the response body must contain `expect`. Credentials never reach the log.
fn send(mut curl: Command, what: &str, expect: &str) -> Result {
    let output = curl
        .output()
        .map_err(|e| format!("cannot start curl: {e}"))?;
    let body = String::from_utf8_lossy(&output.stdout);
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    if output.status.success() && compact.contains(expect) {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {body}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Applies the index templates (and optionally the dashboards) to an OpenSearch endpoint
/// with curl: plain for a local server, SigV4-signed for an AWS domain.
pub fn apply_templates(args: &[String]) -> Result {
    let mut url = None;
    let mut region = None;
    let mut service = String::from("es");
    let mut user = None;
    let mut dashboards = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--sigv4" => region = Some(it.next().ok_or(TEMPLATES_USAGE)?.clone()),
            "--service" => service = it.next().ok_or(TEMPLATES_USAGE)?.clone(),
            "--user" => user = Some(it.next().ok_or(TEMPLATES_USAGE)?.clone()),
            "--dashboards" => dashboards = true,
            "-h" | "--help" => {
                eprint!("{TEMPLATES_USAGE}");
                return Ok(());
            }
            other if url.is_none() && !other.starts_with('-') => url = Some(other.to_string()),
            other => return Err(format!("unexpected argument `{other}`\n{TEMPLATES_USAGE}")),
        }
    }
    let url = url
        .ok_or(TEMPLATES_USAGE)?
        .trim_end_matches('/')
        .to_string();
    if service != "es" && service != "aoss" {
        return Err(format!("--service must be es or aoss, not `{service}`"));
    }
    let endpoint = Endpoint {
        url,
        sigv4: region.map(|r| (r, service)),
        user,
    };

    let opensearch = tools::root().join("infra").join("opensearch");
    for file in files_with_extension(&opensearch.join("index-templates"), "json")? {
        let name = stem(&file)?;
        let path = format!("/_index_template/{name}");
        eprintln!("PUT {}{path}", endpoint.url);
        let mut curl = endpoint.curl("PUT", &path)?;
        curl.args(["-H", "content-type: application/json"])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()));
        send(curl, &format!("PUT {path}"), "\"acknowledged\":true")?;
    }

    if dashboards {
        let scratch = tools::root().join("target").join("opensearch-setup");
        std::fs::create_dir_all(&scratch)
            .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
        for file in files_with_extension(&opensearch.join("dashboards"), "ndjson")? {
            // curl --aws-sigv4 signs a wrong payload hash for -F/--form bodies (curl
            // #13351), so the multipart body is built here and sent as plain bytes.
            let boundary = "sensor-ingest-saved-objects-8d1f4c2a";
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| format!("bad file name {}", file.display()))?;
            let content =
                std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let mut body = format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 Content-Type: application/ndjson\r\n\r\n"
            )
            .into_bytes();
            body.extend_from_slice(&content);
            body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            let body_path = scratch.join(format!("{name}.multipart"));
            std::fs::write(&body_path, &body)
                .map_err(|e| format!("cannot write {}: {e}", body_path.display()))?;

            let path = "/_dashboards/api/saved_objects/_import?overwrite=true";
            eprintln!("POST {}{path} ({name})", endpoint.url);
            let mut curl = endpoint.curl("POST", path)?;
            curl.args(["-H", "osd-xsrf: true"])
                .arg("-H")
                .arg(format!(
                    "content-type: multipart/form-data; boundary={boundary}"
                ))
                .arg("--data-binary")
                .arg(format!("@{}", body_path.display()));
            send(curl, &format!("import {name}"), "\"success\":true")?;
        }
    }
    eprintln!("OpenSearch set up at {}", endpoint.url);
    Ok(())
}

fn files_with_extension(dir: &Path, extension: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == extension))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no *.{extension} files in {}", dir.display()));
    }
    Ok(files)
}

fn stem(file: &Path) -> Result<&str> {
    file.file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("bad file name {}", file.display()))
}

fn env_var(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| format!("--sigv4 needs {name} in the environment"))
}
