//! The `local-aws` binary: prints what it bound, and a taken port is a clear error.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_local-aws");

/// Starts the binary with `args`, returns what it printed before `ready`, and stops it.
fn lines_until_ready(args: &[&str]) -> Vec<String> {
    let mut child = Command::new(BIN)
        .args(args)
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
    lines
}

/// The address of the line starting with `prefix`, which must not be port 0.
fn bound(lines: &[String], prefix: &str, scheme: &str) -> String {
    let line = lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} line in {lines:?}"));
    let url = line.split_whitespace().nth(1).unwrap();
    let addr = url.strip_prefix(scheme).unwrap();
    assert!(!addr.ends_with(":0"), "{line}");
    addr.to_owned()
}

#[test]
fn prints_the_bound_addresses_then_serves() {
    let lines = lines_until_ready(&["--mqtt-port", "0", "--iot-port", "0", "--gateway-port", "0"]);
    for (prefix, scheme) in [
        ("mqtt", "mqtt://"),
        ("iot-data", "http://"),
        ("gateway", "http://"),
    ] {
        bound(&lines, prefix, scheme);
    }
    assert!(!lines.iter().any(|l| l.starts_with("kinesis")), "{lines:?}");
}

#[test]
fn the_stream_path_starts_only_with_stream_and_prints_its_endpoint() {
    // Nothing listens at the invoke URL: the mappings wait (the stream is empty anyway).
    let nowhere = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let invoke = format!("http://{nowhere}");
    let lines = lines_until_ready(&[
        "--mqtt-port",
        "0",
        "--iot-port",
        "0",
        "--gateway-port",
        "0",
        "--invoke-url",
        &invoke,
        "--stream",
        "--kinesis-port",
        "0",
        "--stream-name",
        "readings-test",
        "--stream-shards",
        "3",
        "--stream-rule",
        "test_rule",
        "--stream-batch-size",
        "10",
        "--stream-window-ms",
        "0",
        "--stream-max-retries",
        "-1",
    ]);
    let kinesis = bound(&lines, "kinesis", "http://");
    let line = lines.iter().find(|l| l.starts_with("kinesis")).unwrap();
    assert!(line.contains("stream readings-test"), "{line}");
    assert!(!kinesis.is_empty());
    let rule = lines
        .iter()
        .find(|l| l.starts_with("stream   rule"))
        .unwrap_or_else(|| panic!("no rule line in {lines:?}"));
    assert!(
        rule.contains("$aws/rules/test_rule/devices/+/data/+/+")
            && rule.contains("gasdetector, dust, temp")
            && rule.contains("retries unlimited"),
        "{rule}"
    );
    assert!(
        lines.iter().any(|l| l.contains("failures -> the log")),
        "{lines:?}"
    );
}

#[test]
fn bad_stream_values_are_usage_errors() {
    for (args, named) in [
        (&["--stream", "--stream-shards", "0"][..], "--stream-shards"),
        (
            &["--stream", "--stream-batch-size", "10001"][..],
            "--stream-batch-size",
        ),
        (
            &["--stream", "--stream-window-ms", "300001"][..],
            "--stream-window-ms",
        ),
        (
            &["--stream", "--stream-max-retries", "-2"][..],
            "--stream-max-retries",
        ),
        (&["--stream", "--stream-rule", "a-b"][..], "--stream-rule"),
        (&["--stream", "--stream-name", "a/b"][..], "--stream-name"),
        (
            &["--stream", "--kinesis-port", "70000"][..],
            "--kinesis-port",
        ),
        (&["--stream-name", "x"][..], "needs --stream"),
    ] {
        let output = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{args:?}: {stderr}");
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
