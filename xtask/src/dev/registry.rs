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

/// Starts moto on `port` (log in `logs/registry.log`) and waits until it answers.
pub fn start(peers: &mut Peers, port: u16, logs: &Path) -> Result<String> {
    tools::ensure_python_tools(&[(MOTO, "moto_server")])?;
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

/// Registers box `thing` in `group` (`CreateThing` with the `groupid` attribute; moto
/// answers an existing thing with the same attributes as created).
pub fn register_box(port: u16, thing: &str, group: &str) -> Result {
    let addr = format!("{HOST}:{port}");
    let body = format!(r#"{{"attributePayload": {{"attributes": {{"groupid": "{group}"}}}}}}"#);
    let reply = http::request(&addr, "POST", &format!("/things/{thing}"), &body)
        .ok_or_else(|| format!("IoT registry at {addr} did not answer CreateThing"))?;
    http::expect(reply, &format!("registering box {thing}"), thing)
}
