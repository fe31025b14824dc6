//! The functions under `cargo lambda watch`: their environment (pointed at the local
//! peers), the watch process, and a first request to each so the first real one is warm.

use super::options::Options;
use super::peers::Peers;
use super::ports::port_open;
use super::{FUNCTIONS, HOST, QUERY};
use crate::http::{self, Reply};
use crate::tools::{self, root, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Environment variables passed through to the functions when the user sets them.
const PASS_THROUGH: &[&str] = &[
    "RULES",
    "TOPIC_TEMPLATE",
    "ACK_MESSAGES",
    "INDEX",
    "DEVICE_TIMEZONE",
    "OPENSEARCH_SERVICE",
    "RUST_LOG",
    "AWS_LAMBDA_LOG_FORMAT",
    "AWS_LAMBDA_LOG_LEVEL",
    "METRICS_NAMESPACE",
    "QUERY_INDICES",
    "CORS_ORIGIN",
];

/// The functions' environment: the local IoT endpoint and OpenSearch, fake credentials,
/// and the user's settings from [`PASS_THROUGH`].
fn env(options: &Options, opensearch_url: &str) -> Vec<(String, String)> {
    let ports = &options.ports;
    let mut env: Vec<(String, String)> = vec![
        (
            "AWS_ENDPOINT_URL_IOT_DATA_PLANE".into(),
            format!("http://{HOST}:{}", ports.iot),
        ),
        ("OPENSEARCH_URL".into(), opensearch_url.to_owned()),
        (
            "OPENSEARCH_AUTH".into(),
            std::env::var("OPENSEARCH_AUTH").unwrap_or_else(|_| "none".into()),
        ),
        // The IoT registry (moto's control plane): which group each box may write.
        (
            "AWS_ENDPOINT_URL_IOT".into(),
            format!("http://{HOST}:{}", ports.registry),
        ),
        // The shared-key routes stay open locally, as the API key is optional here, so
        // the README's curl lines work; deployed stacks (and --as-deployed) refuse them.
        (
            "LEGACY_KEY_ROUTES".into(),
            (!options.as_deployed).to_string(),
        ),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "AKIDLOCALAWS".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "local-aws-secret".into()),
    ];
    for name in PASS_THROUGH {
        if let Ok(value) = std::env::var(name) {
            env.push(((*name).to_owned(), value));
        }
    }
    env
}

fn write_env_file(path: &Path, env: &[(String, String)]) -> Result {
    let mut text = String::new();
    for (key, value) in env {
        if value.contains('\n') {
            return Err(format!("{key} must not contain a newline"));
        }
        text.push_str(&format!("{key}={value}\n"));
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Starts `cargo lambda watch` (its stdout teed into `target/dev/functions.log` for
/// `cargo xtask stats`) and waits until it listens.
pub fn start_watch(
    peers: &mut Peers,
    cargo_lambda: &Path,
    options: &Options,
    opensearch_url: &str,
    logs: &Path,
) -> Result {
    let ports = &options.ports;
    let env = env(options, opensearch_url);
    let env_file = logs.join("functions.env");
    write_env_file(&env_file, &env)?;
    let mut command = Command::new(cargo_lambda);
    command
        .current_dir(root())
        .env("PATH", tools::path_with_venv())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        // The functions must not pick up the user's real AWS session.
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .args([
            "lambda",
            "watch",
            "-A",
            HOST,
            "-P",
            &ports.watch.to_string(),
        ])
        .arg("--env-file")
        .arg(&env_file)
        .stdin(Stdio::null())
        // The functions' stdout (logs and EMF metrics) goes through us: see stats.rs.
        .stdout(Stdio::piped());
    if options.release {
        command.arg("--release");
    }
    peers.spawn("cargo lambda watch", &mut command)?;
    if let Some(stdout) = peers.take_stdout() {
        crate::stats::tee_functions_output(stdout, &crate::stats::functions_log())?;
    }
    peers.wait_until("cargo lambda watch", Duration::from_secs(300), || {
        port_open(ports.watch)
    })
}

/// Starts each function now (a request that changes nothing: GET answers 405, or the
/// rules for query), so the first request after "ready" runs a warm function instead
/// of waiting for a build.
pub fn warm_up_all(peers: &mut Peers, watch_port: u16) -> Result {
    let warm_ups = FUNCTIONS
        .iter()
        .map(|f| (*f, format!("/{f}"), 405))
        .chain([(QUERY, "/api/rules".to_string(), 200)]);
    for (function, path, expected) in warm_ups {
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(warm_up(watch_port, function, &path, expected));
        });
        let mut outcome = None;
        peers.wait_until(function, Duration::from_secs(600), || {
            if let Ok(result) = done_rx.try_recv() {
                outcome = Some(result);
            }
            outcome.is_some()
        })?;
        if let Some(Err(e)) = outcome {
            return Err(e);
        }
    }
    Ok(())
}

/// Invokes `function` through watch's invoke API with a GET event and checks that the
/// function itself answered (`expected`). The first invoke makes watch start the function
/// (and build it if the pre-build missed), so the wait is generous.
fn warm_up(watch_port: u16, function: &str, route: &str, expected: u16) -> Result {
    let event = format!(
        r#"{{"resource":"{route}","path":"{route}","httpMethod":"GET","headers":{{}},"multiValueHeaders":{{}},"queryStringParameters":null,"multiValueQueryStringParameters":null,"pathParameters":null,"stageVariables":null,"requestContext":{{"accountId":"123456789012","apiId":"local","resourceId":"local","stage":"local","requestId":"warm-up","resourcePath":"{route}","httpMethod":"GET","path":"/local{route}","protocol":"HTTP/1.1","identity":{{"sourceIp":"127.0.0.1"}}}},"body":null,"isBase64Encoded":false}}"#
    );
    let (status, reply) = invoke(watch_port, function, &event, Duration::from_secs(600))
        .ok_or_else(|| {
            format!("no answer from {function} under cargo lambda watch (logs above)")
        })?;
    let answered = reply.contains(&format!("\"statusCode\":{expected}"))
        || reply.contains(&format!("\"statusCode\": {expected}"));
    if status != 200 || !answered {
        return Err(format!(
            "{function} did not answer the warm-up request as expected (HTTP {status}): {reply}"
        ));
    }
    Ok(())
}

/// Invokes `function` with `event` through watch's Lambda invoke API.
pub fn invoke(watch_port: u16, function: &str, event: &str, timeout: Duration) -> Option<Reply> {
    let addr = format!("{HOST}:{watch_port}");
    let path = format!("/2015-03-31/functions/{function}/invocations");
    http::request_with_timeout(&addr, "POST", &path, event, timeout)
}
