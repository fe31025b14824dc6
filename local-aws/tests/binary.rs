//! The `local-aws` binary: prints what it bound, and a taken port is a clear error.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_local-aws");

#[test]
fn prints_the_bound_addresses_then_serves() {
    let mut child = Command::new(BIN)
        .args(["--mqtt-port", "0", "--iot-port", "0", "--gateway-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("no `ready` line");
        if line == "ready" {
            break;
        }
        lines.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    for (prefix, scheme) in [
        ("mqtt", "mqtt://"),
        ("iot-data", "http://"),
        ("gateway", "http://"),
    ] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line in {lines:?}"));
        let url = line.split_whitespace().nth(1).unwrap();
        let addr = url.strip_prefix(scheme).unwrap();
        assert!(!addr.ends_with(":0"), "{line}");
    }
}

#[test]
fn a_taken_port_is_named() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let output = Command::new(BIN)
        .args(["--mqtt-port", "0", "--iot-port", &port.to_string()])
        .args(["--gateway-port", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("IoT endpoint cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(TcpStream::connect(taken.local_addr().unwrap()).is_ok());
}

#[test]
fn bad_flags_are_usage_errors() {
    let output = Command::new(BIN)
        .args(["--mqtt-port", "x"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--mqtt-port"));
}
