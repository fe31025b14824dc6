//! `fleet` against a real registry: moto server's IoT control plane behind local-aws's
//! front (the local CA signs CSRs, as AWS's CA does), driven through the binary as an
//! operator runs it. Each command's effect is read back with the `aws-sdk-iot` client;
//! each bad input must leave the registry as it was.

use integration_tests::{registry_client, Moto};
use local_aws::{Certs, RegistryFront};
use rcgen::PublicKeyData;
use std::path::Path;
use std::process::{Command, Output};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");
const POLICY: &str = "SensorBoxPolicy";

struct Registry {
    moto: Moto,
    front: RegistryFront,
    certs: Certs,
}

async fn start(dir: &Path) -> Registry {
    let moto = Moto::start().await;
    let certs = Certs::ensure(&dir.join("certs")).expect("local CA");
    let front = RegistryFront::start(
        "127.0.0.1:0".parse().expect("addr"),
        moto.url.clone(),
        certs.clone(),
    )
    .await
    .expect("registry front");
    registry_client(&front.url())
        .create_policy()
        .policy_name(POLICY)
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*"}]}"#)
        .send()
        .await
        .expect("create the box policy");
    Registry { moto, front, certs }
}

impl Registry {
    fn fleet(&self, args: &[&str]) -> Output {
        Command::new(FLEET)
            .args(args)
            .env("AWS_ENDPOINT_URL_IOT", self.front.url())
            .env("AWS_ENDPOINT_URL_IOT_DATA_PLANE", &self.moto.url)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "AKIDFLEETTEST")
            .env("AWS_SECRET_ACCESS_KEY", "fleet-test-secret")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("run fleet")
    }

    /// Runs fleet, expecting failure with `says` in its message.
    fn refused(&self, args: &[&str], says: &str) {
        let output = self.fleet(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }

    /// The certificates attached to `thing`.
    async fn principals(&self, thing: &str) -> Vec<String> {
        registry_client(&self.front.url())
            .list_thing_principals()
            .thing_name(thing)
            .send()
            .await
            .expect("principals")
            .principals()
            .to_vec()
    }

    /// Every thing with its groupid, and every certificate with its status.
    async fn snapshot(&self) -> (Vec<(String, Option<String>)>, Vec<(String, String)>) {
        let client = registry_client(&self.front.url());
        let things = client.list_things().send().await.expect("list things");
        let mut things: Vec<_> = things
            .things()
            .iter()
            .map(|t| {
                let group = t.attributes().and_then(|a| a.get("groupid")).cloned();
                (t.thing_name().unwrap_or_default().to_string(), group)
            })
            .collect();
        things.sort();
        let certificates = client.list_certificates().send().await.expect("list certs");
        let mut certificates: Vec<_> = certificates
            .certificates()
            .iter()
            .map(|c| {
                (
                    c.certificate_id().unwrap_or_default().to_string(),
                    c.status()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect();
        certificates.sort();
        (things, certificates)
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A box's key and CSR, as `sensorbox enroll` writes them.
fn box_csr(dir: &Path, thing: &str) -> (rcgen::KeyPair, std::path::PathBuf) {
    let (key, csr) = integration_tests::box_key_and_csr(thing);
    let path = dir.join(format!("{thing}.csr.pem"));
    std::fs::write(&path, csr).expect("write csr");
    (key, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_move_list_revoke_and_bad_input_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = start(dir.path()).await;
    let (key, csr) = box_csr(dir.path(), "pi-1");
    let csr = csr.to_string_lossy().into_owned();
    let cert_out = dir.path().join("pi-1.cert.pem");
    let cert_out = cert_out.to_string_lossy().into_owned();
    let key_file = dir.path().join("pi-1.key");
    std::fs::write(&key_file, key.serialize_pem()).expect("key file");
    let key_file = key_file.to_string_lossy().into_owned();

    // Bad input: refused with a message that says what is wrong, and nothing changes.
    let empty = registry.snapshot().await;
    let enroll = |csr: &str, group: &str| -> Vec<String> {
        [
            "enroll",
            "--csr",
            csr,
            "--thing",
            "pi-1",
            "--group",
            group,
            "--policy",
            POLICY,
            "--cert-out",
            &cert_out,
        ]
        .map(String::from)
        .to_vec()
    };
    registry.refused(&strs(&enroll(&key_file, "site-7")), "private key");
    registry.refused(&strs(&enroll(&csr, "site/7")), "groupid \"site/7\"");
    registry.refused(&["move", "pi-1", "site-8"], "no box \"pi-1\"");
    registry.refused(&["revoke", "pi-1"], "no box \"pi-1\"");
    assert_eq!(
        registry.snapshot().await,
        empty,
        "bad input changed the registry"
    );

    // Enrol: the thing with its group, one ACTIVE certificate for the box's own key,
    // signed by the CA the broker trusts, attached to the thing.
    let output = registry.fleet(&strs(&enroll(&csr, "site-7")));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("thing_name = \"pi-1\"") && stdout.contains("groupid = \"site-7\""),
        "{stdout}"
    );
    let (things, certificates) = registry.snapshot().await;
    assert_eq!(things, [("pi-1".to_string(), Some("site-7".to_string()))]);
    assert_eq!(certificates.len(), 1);
    assert_eq!(certificates[0].1, "ACTIVE");
    let pem = std::fs::read(&cert_out).expect("certificate written");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
    let certificate = pem.parse_x509().expect("X.509");
    assert_eq!(
        certificate.public_key().raw,
        key.subject_public_key_info().as_slice(),
        "the certificate is for the box's own key"
    );
    let ca = std::fs::read(registry.certs.ca()).expect("CA");
    let (_, ca) = x509_parser::pem::parse_x509_pem(&ca).expect("CA PEM");
    let ca = ca.parse_x509().expect("CA X.509");
    assert_eq!(certificate.issuer(), ca.subject());
    certificate
        .verify_signature(Some(ca.public_key()))
        .expect("signed by the local CA");
    assert_eq!(registry.principals("pi-1").await.len(), 1);

    // Enrolling it again is refused and changes nothing.
    let before = registry.snapshot().await;
    std::fs::remove_file(&cert_out).expect("remove cert");
    registry.refused(&strs(&enroll(&csr, "site-7")), "already enrolled");
    assert_eq!(registry.snapshot().await, before);

    // Move, then list.
    assert!(registry.fleet(&["move", "pi-1", "site-8"]).status.success());
    assert_eq!(
        registry.snapshot().await.0,
        [("pi-1".to_string(), Some("site-8".to_string()))]
    );
    let list = registry.fleet(&["list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let line = listed
        .lines()
        .find(|l| l.starts_with("pi-1 "))
        .unwrap_or_default();
    assert!(
        line.contains("site-8") && line.contains("ACTIVE"),
        "{listed}"
    );

    // Revoke: REVOKED and detached; a second revoke is refused.
    let output = registry.fleet(&["revoke", "pi-1"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (_, certificates) = registry.snapshot().await;
    assert_eq!(certificates[0].1, "REVOKED");
    assert!(registry.principals("pi-1").await.is_empty(), "detached");
    let thing = registry_client(&registry.front.url())
        .describe_thing()
        .thing_name("pi-1")
        .send()
        .await
        .expect("DescribeThing");
    let revoked = thing.attributes().and_then(|a| a.get("revoked"));
    assert!(
        revoked.is_some_and(|when| when.starts_with("20")),
        "{revoked:?}"
    );
    registry.refused(&["revoke", "pi-1"], "already revoked");
}
