//! The IoT registry for the local stack: moto server's IoT control plane (things, their
//! `groupid` attributes, certificates), which the ingest functions ask with `aws-sdk-iot`
//! (`DescribeThing`) which group a box may write. The simulated box is registered in it.

use super::peers::{log_file, Peers};
use super::HOST;
use crate::http;
use crate::tools::{self, venv_bin, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// moto with its server extra in the project virtualenv (the spec the tests install too).
pub const MOTO: &str = "moto[server]";

/// Starts moto on a free port (log in `logs/registry.log`), waits until it answers and
/// returns its URL. The functions and `fleet` reach it through local-aws's registry front
/// on `--registry-port`, which signs CSRs with the local CA.
pub fn start(peers: &mut Peers, logs: &Path) -> Result<String> {
    tools::ensure_python_tools(&[(MOTO, "moto_server")])?;
    let port = std::net::TcpListener::bind((HOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port for moto: {e}"))?;
    let log = logs.join("registry.log");
    let mut command = Command::new(venv_bin("moto_server"));
    command
        .args(["-H", HOST, "-p", &port.to_string()])
        .current_dir(logs)
        .stdin(Stdio::null())
        .stdout(log_file(&log)?)
        .stderr(log_file(&log)?);
    peers.spawn("IoT registry (moto_server)", &mut command)?;
    let addr = format!("{HOST}:{port}");
    peers.wait_until("IoT registry", Duration::from_secs(60), || {
        http::request(&addr, "GET", "/moto-api/", "").is_some_and(|(status, _)| status == 200)
    })?;
    Ok(format!("http://{addr}"))
}

/// The IoT policy boxes' certificates get (`fleet enroll --policy`). The local stack does
/// not evaluate it (moto keeps policies, it does not enforce them); the broker's mutual TLS
/// and the functions' registry check are what hold a box to its own thing and group.
pub const BOX_POLICY: &str = "SensorBoxPolicy";

/// Creates [`BOX_POLICY`] in the registry at `port` unless it exists.
pub fn ensure_box_policy(port: u16) -> Result {
    let addr = format!("{HOST}:{port}");
    let path = format!("/policies/{BOX_POLICY}");
    if http::request(&addr, "GET", &path, "").is_some_and(|(status, _)| status == 200) {
        return Ok(());
    }
    let document = r#"{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"iot:Connect\",\"Resource\":\"*\"}]}"#;
    let reply = http::request(
        &addr,
        "POST",
        &path,
        &format!(r#"{{"policyDocument": "{document}"}}"#),
    )
    .ok_or_else(|| format!("IoT registry at {addr} did not answer CreatePolicy"))?;
    http::expect(
        reply,
        &format!("creating the policy {BOX_POLICY}"),
        BOX_POLICY,
    )
}
