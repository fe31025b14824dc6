//! The `local-aws` peer: MQTT broker, IoT data-plane endpoint, the IoT registry's front
//! and the API Gateway emulator,
//! started last because its gateway opens only once every function behind it answers.

use super::options::Options;
use super::peers::Peers;
use super::ports::port_open;
use super::{HOST, ROLE_ALIAS};
use crate::tools::{root, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts `target/<profile>/local-aws` (certificates and broker state under `logs`) and
/// waits until each of its ports listens.
pub fn start(peers: &mut Peers, options: &Options, logs: &Path, moto: &str) -> Result {
    let ports = &options.ports;
    let binary = root()
        .join("target")
        .join(options.profile())
        .join("local-aws");
    let mut command = Command::new(&binary);
    command
        .args(["--mqtt-port", &ports.mqtt.to_string()])
        .args(["--mqtts-port", &ports.mqtts.to_string()])
        .arg("--certs")
        .arg(logs.join("certs"))
        .arg("--broker-dir")
        .arg(logs.join("mosquitto"))
        .args(["--iot-port", &ports.iot.to_string()])
        .args(["--gateway-port", &ports.gateway.to_string()])
        .args(["--invoke-url", &format!("http://{HOST}:{}", ports.watch)])
        .args(["--moto-url", moto])
        .args(["--registry-port", &ports.registry.to_string()])
        .args(["--credentials-port", &ports.credentials.to_string()])
        .args(["--role-alias", ROLE_ALIAS])
        .args([
            "--credentials-lifetime",
            &options.credentials_lifetime.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if options.stream {
        command
            .arg("--stream")
            .args(["--kinesis-port", &ports.kinesis.to_string()]);
    }
    peers.spawn("local-aws", &mut command)?;
    for (port, what) in [
        (ports.mqtt, "MQTT broker"),
        (ports.mqtts, "MQTT broker (TLS)"),
        (ports.iot, "IoT endpoint"),
        (ports.gateway, "gateway"),
        (ports.registry, "IoT registry"),
        (ports.credentials, "IoT credentials provider"),
    ] {
        peers.wait_until(what, Duration::from_secs(30), || port_open(port))?;
    }
    if options.stream {
        peers.wait_until("Kinesis emulator", Duration::from_secs(30), || {
            port_open(ports.kinesis)
        })?;
    }
    Ok(())
}
