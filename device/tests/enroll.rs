//! `sensorbox enroll` as a person at the box runs it: the key and CSR on disk, the
//! `fleet enroll` line on stdout, and the refusal to replace a key.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const AGENT: &str = env!("CARGO_BIN_EXE_sensorbox");

fn sensorbox(config: &Path, args: &[&str]) -> Output {
    Command::new(AGENT)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("SENSORBOX_MQTT__KEY")
        .env_remove("SENSORBOX_THING_NAME")
        .env_remove("SENSORBOX_GROUPID")
        .output()
        .expect("run sensorbox")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn enroll_writes_the_key_and_csr_and_prints_the_fleet_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etc = dir.path().join("etc");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
api_url = "http://127.0.0.1:3000"
groupid = "5"
thing_name = "box-5a"
[mqtt]
endpoint = "iot.example"
ca = "{etc}/AmazonRootCA1.pem"
cert = "{etc}/device.pem.crt"
key = "{etc}/private.pem.key"
[[sensor]]
route = "temp"
source = {{ kind = "simulate" }}
"#,
            etc = etc.display()
        ),
    )
    .expect("config");

    let out = sensorbox(&config, &["enroll"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let key = etc.join("private.pem.key");
    let csr = etc.join("private.csr.pem");
    assert_eq!(mode(&etc), 0o700);
    assert_eq!(mode(&key), 0o600);
    let key_pem = std::fs::read_to_string(&key).expect("key");
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let csr_pem = std::fs::read_to_string(&csr).expect("csr");
    assert!(csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    assert!(
        stdout.contains(&format!(
            "\n  fleet enroll --csr {} --thing box-5a --group 5 --policy <SensorBoxPolicyName>\n",
            csr.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{} (the config's [mqtt] cert)",
            etc.join("device.pem.crt").display()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("PRIVATE KEY") && !text(&out.stderr).contains("PRIVATE KEY"));

    // Again: refused, the key untouched; with --force, a new key.
    let out = sensorbox(&config, &["enroll"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&key.display().to_string()) && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&key).expect("key"), key_pem);
    let out = sensorbox(&config, &["enroll", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(std::fs::read_to_string(&key).expect("key"), key_pem);
    assert_ne!(std::fs::read_to_string(&csr).expect("csr"), csr_pem);
    assert_eq!(mode(&key), 0o600);

    // --force belongs to enroll.
    let out = sensorbox(&config, &["status", "--force"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn enroll_without_an_mqtt_key_needs_the_key_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "api_url = \"http://127.0.0.1:3000\"\ngroupid = \"5\"\n\
         [[sensor]]\nroute = \"temp\"\nsource = { kind = \"simulate\" }\n",
    )
    .expect("config");

    let out = sensorbox(&config, &["enroll"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("[mqtt] key") && stderr.contains("--key"),
        "{stderr}"
    );

    let key = dir.path().join("box.key");
    let csr = dir.path().join("req.pem");
    let out = sensorbox(
        &config,
        &[
            "enroll",
            "--key",
            &key.to_string_lossy(),
            "--csr",
            &csr.to_string_lossy(),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(mode(&key), 0o600);
    assert!(csr.is_file());
    // The default thing name, and what to add to the config.
    assert!(
        stdout.contains(&format!(
            "fleet enroll --csr {} --thing sensorbox-5 --group 5 --policy <SensorBoxPolicyName>\n",
            csr.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("key = \"{}\"", key.display())),
        "{stdout}"
    );
}
