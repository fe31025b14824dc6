//! `cargo xtask dev --box`: a sensorbox on simulated sources against the local gateway,
//! with its own config, queue and device certificate under target/dev/box.

use super::options::Options;
use super::peers::Peers;
use super::{BOX_GROUP, BOX_THING, FUNCTIONS, HOST};
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
    let mut text = format!(
        "api_url = \"http://{HOST}:{gateway}\"\ngroupid = \"{BOX_GROUP}\"\n\
         gps = \"37.61002501514269, 126.99636868892937\"\nthing_name = \"{BOX_THING}\"\n\
         clock = \"system\"\n[queue]\npath = \"{queue}\"\n\
         [mqtt]\nendpoint = \"localhost\"\nport = {mqtts}\nkeep_alive_s = 30\n\
         ca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n",
        gateway = ports.gateway,
        mqtts = ports.mqtts,
        queue = dir.join("queue.db").display(),
        ca = certs.join("ca.pem").display(),
        cert = certs.join(format!("{BOX_THING}.pem")).display(),
        key = certs.join(format!("{BOX_THING}.key")).display(),
    );
    for (seed, route) in FUNCTIONS.iter().enumerate() {
        text.push_str(&format!(
            "[[sensor]]\nroute = \"{route}\"\ninterval_s = 5\nsource = {{ kind = \"simulate\", seed = {seed} }}\n"
        ));
    }
    std::fs::write(&config, text).map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let agent = root().join("target").join(profile).join("sensorbox");
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
