//! `cargo xtask dev --box`: a sensorbox on simulated sources against the local gateway,
//! with its own config, queue, key and certificate under target/dev/box, enrolled as an
//! operator enrols a real box: `sensorbox enroll` writes its key and CSR, `fleet enroll`
//! registers the thing in its group and gets the certificate (signed by the local CA).

use super::options::Options;
use super::peers::Peers;
use super::registry::{ensure_box_policy, BOX_POLICY};
use super::{BOX_GROUP, BOX_THING, FUNCTIONS, HOST, ROLE_ALIAS};
use crate::tools::{root, Result};
use std::path::Path;
use std::process::{Command, Stdio};

/// A box with the three routes on simulated sources, its queue under target/dev/box, its
/// MQTT connection on the TLS port with the device certificate local-aws issued. Its log
/// (one line per send, one per warning) goes to the terminal.
pub fn start(peers: &mut Peers, options: &Options, logs: &Path) -> Result {
    let ports = &options.ports;
    let profile = options.profile();
    let dir = logs.join("box");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let config = dir.join("config.toml");
    let certs = logs.join("certs");
    let cert = dir.join(format!("{BOX_THING}.cert.pem"));
    let key = dir.join(format!("{BOX_THING}.key.pem"));
    let mut text = format!(
        "api_url = \"http://{HOST}:{gateway}\"\ngroupid = \"{BOX_GROUP}\"\n\
         gps = \"37.61002501514269, 126.99636868892937\"\nthing_name = \"{BOX_THING}\"\n\
         clock = \"system\"\n[queue]\npath = \"{queue}\"\n\
         [mqtt]\nendpoint = \"localhost\"\nport = {mqtts}\nkeep_alive_s = 30\n\
         ca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\
         [iam]\ncredentials_endpoint = \"localhost:{credentials}\"\nrole_alias = \"{ROLE_ALIAS}\"\n\
         region = \"us-east-1\"\n",
        gateway = ports.gateway,
        credentials = ports.credentials,
        mqtts = ports.mqtts,
        queue = dir.join("queue.db").display(),
        ca = certs.join("ca.pem").display(),
        cert = cert.display(),
        key = key.display(),
    );
    if options.stream {
        // Readings go as batches to the Basic Ingest topic; the stream rule puts them into
        // Kinesis (the [iam] section stays for `sensorbox status`, unused for sending).
        text = format!("transport = \"stream\"\n{text}");
    }
    for (seed, route) in FUNCTIONS.iter().enumerate() {
        text.push_str(&format!(
            "[[sensor]]\nroute = \"{route}\"\ninterval_s = 5\nsource = {{ kind = \"simulate\", seed = {seed} }}\n"
        ));
    }
    std::fs::write(&config, text).map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let agent = root().join("target").join(profile).join("sensorbox");
    enroll(&agent, &config, &cert, ports.registry, profile)?;
    let mut command = Command::new(agent);
    command
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "sensorbox=info")
        .stdin(Stdio::null());
    peers.spawn("sensorbox (simulated box)", &mut command)?;
    println!(
        "simulated box: group {BOX_GROUP}, gasdetector/dust/temp every 5 s, config {}\n  \
         queue:   target/{profile}/sensorbox --config {} queue\n  \
         status:  target/{profile}/sensorbox --config {} status\n  \
         shadow:  curl -s http://{HOST}:{iot}/things/{BOX_THING}/shadow\n",
        config.display(),
        config.display(),
        config.display(),
        iot = ports.iot,
    );
    Ok(())
}

/// The box's key and CSR from `sensorbox enroll`, its thing and certificate from `fleet
/// enroll` against the local registry (fresh on every run: moto keeps it in memory).
fn enroll(agent: &Path, config: &Path, cert: &Path, registry: u16, profile: &str) -> Result {
    ensure_box_policy(registry)?;
    let _ = std::fs::remove_file(cert);
    let csr = config.with_file_name(format!("{BOX_THING}.csr.pem"));
    let enrolled = Command::new(agent)
        .arg("--config")
        .arg(config)
        .args(["enroll", "--force", "--csr"])
        .arg(&csr)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run sensorbox enroll: {e}"))?;
    if !enrolled.status.success() {
        return Err(format!(
            "sensorbox enroll: {}",
            String::from_utf8_lossy(&enrolled.stderr)
        ));
    }
    let fleet = root().join("target").join(profile).join("fleet");
    let registered = Command::new(&fleet)
        .args(["--endpoint", &format!("http://{HOST}:{registry}")])
        .arg("enroll")
        .arg("--csr")
        .arg(&csr)
        .args([
            "--thing", BOX_THING, "--group", BOX_GROUP, "--policy", BOX_POLICY,
        ])
        .arg("--cert-out")
        .arg(cert)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "AKIDLOCALAWS")
        .env("AWS_SECRET_ACCESS_KEY", "local-aws-secret")
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", fleet.display()))?;
    if !registered.status.success() {
        return Err(format!(
            "fleet enroll: {}",
            String::from_utf8_lossy(&registered.stderr)
        ));
    }
    println!(
        "simulated box enrolled: sensorbox enroll (key and CSR), then
           fleet --endpoint http://{HOST}:{registry} enroll --csr {} --thing {BOX_THING} --group {BOX_GROUP} --policy {BOX_POLICY}",
        csr.display()
    );
    Ok(())
}
