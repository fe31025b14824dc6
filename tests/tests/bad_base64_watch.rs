//! The real function binary (built and served by `cargo lambda watch`, running
//! `shared::runtime::run`) given API Gateway envelopes whose base64 body is garbage:
//! a 400 naming `body`, not a function error, and the next good event is stored.

#[path = "../../shared/tests/support/mod.rs"]
mod support;

use integration_tests::{
    ensure_python_package, eventually, free_port, root, venv_bin, venv_dir, ChildGuard, Peers,
};
use serde_json::Value;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{apigw_rest_event, http_api_event, SEED};

/// Building the functions under watch can take a while on 2 cores when the cache is cold.
const BUILD: Duration = Duration::from_secs(600);

fn path_with_venv() -> String {
    let mut path = venv_dir().join("bin").to_string_lossy().into_owned();
    if let Ok(existing) = std::env::var("PATH") {
        path.push(':');
        path.push_str(&existing);
    }
    path
}

async fn invoke(http: &reqwest::Client, port: u16, event: String) -> (Option<String>, Value) {
    let response = http
        .post(format!(
            "http://127.0.0.1:{port}/2015-03-31/functions/gasdetector/invocations"
        ))
        .header("content-type", "application/json")
        .body(event)
        .timeout(BUILD)
        .send()
        .await
        .expect("invoke");
    let error = response
        .headers()
        .get("x-amz-function-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.expect("body");
    (
        error,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_base64_through_cargo_lambda_watch_is_a_400() {
    let cargo_lambda = ensure_python_package("cargo-lambda", || {
        let bin = venv_bin("cargo-lambda");
        bin.exists().then_some(bin)
    });
    let peers = Peers::start().await;
    let env = peers.env();
    let port = free_port();
    let mut watch = ChildGuard::spawn(
        "cargo lambda watch",
        Command::new(&cargo_lambda)
            .current_dir(root())
            .env("PATH", path_with_venv())
            .envs(&env)
            .args(["lambda", "watch", "--ignore-changes", "-A", "127.0.0.1"])
            .args(["-P", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    );
    eventually("cargo lambda watch to listen", BUILD, || {
        watch.assert_running();
        let up = TcpStream::connect(("127.0.0.1", port)).is_ok();
        async move { up.then_some(()) }
    })
    .await;
    let http = reqwest::Client::new();

    for event in [
        apigw_rest_event("POST", "/gasdetector", "!!! not base64 !!!", true),
        http_api_event("POST", "/gasdetector", "Zm9v=", true),
    ] {
        let (error, reply) = invoke(&http, port, event).await;
        assert_eq!(error, None, "not a function error: {reply}");
        assert_eq!(reply["statusCode"], 400, "{reply}");
        let body: Value =
            serde_json::from_str(reply["body"].as_str().expect("body")).expect("JSON body");
        assert_eq!(body["field"], "body", "{body}");
        let message = body["message"].as_str().unwrap_or("");
        assert!(message.contains("base64"), "the guard answered: {body}");
    }
    let (error, reply) = invoke(
        &http,
        port,
        apigw_rest_event("POST", "/gasdetector", SEED, false),
    )
    .await;
    assert_eq!(error, None, "{reply}");
    assert_eq!(reply["statusCode"], 200, "still serving: {reply}");
    peers
        .opensearch
        .wait_count("gasdetect", serde_json::json!({"match_all": {}}), 1)
        .await;
}
