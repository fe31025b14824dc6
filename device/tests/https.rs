//! A box's HTTPS door with its own identity, through the local stack as deployed: the
//! registry (moto behind the front whose CA signs the box's CSR), the IoT credentials
//! provider (mutual TLS with the box certificate), the gateway checking SigV4 against the
//! credentials it issued and the role's one permission, and the functions under
//! `cargo lambda watch` binding each reading to the box's group. The box is the real
//! `sensorbox` binary; the refused requests are made with the agent's own credentials
//! client and signer, so what is refused is exactly what a box would send.

use integration_tests::{
    box_key_and_csr, certificate_from_csr, eventually, gas_reading, registry_client, ChildGuard,
    DeviceStack, ROLE_ALIAS,
};
use sensorbox::config::IamConfig;
use sensorbox::credentials::{Credentials, Fetch, Provider};
use sensorbox::signing::sign_post;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

const AGENT: &str = env!("CARGO_BIN_EXE_sensorbox");
const REGION: &str = "us-east-1";

/// A box enrolled as `fleet enroll` does it: its own key, a certificate for it from the
/// registry, a thing with its `groupid`, the certificate attached to the thing.
struct Enrolled {
    thing: String,
    group: String,
    cert: PathBuf,
    key: PathBuf,
    certificate_id: String,
}

async fn enrol(stack: &DeviceStack, dir: &Path, thing: &str, group: &str) -> Enrolled {
    let front = identity(stack).front.url();
    let (key, csr) = box_key_and_csr(thing);
    let (certificate_id, pem) = certificate_from_csr(&front, &csr).await;
    let (key_path, cert_path) = (
        dir.join(format!("{thing}.key")),
        dir.join(format!("{thing}.crt")),
    );
    std::fs::write(&key_path, key.serialize_pem()).expect("key");
    std::fs::write(&cert_path, pem).expect("certificate");
    stack.registry.register_box(thing, group).await;
    let registry = registry_client(&front);
    let arn = registry
        .describe_certificate()
        .certificate_id(&certificate_id)
        .send()
        .await
        .expect("DescribeCertificate")
        .certificate_description()
        .and_then(|d| d.certificate_arn())
        .expect("certificate ARN")
        .to_string();
    registry
        .attach_thing_principal()
        .thing_name(thing)
        .principal(arn)
        .send()
        .await
        .expect("AttachThingPrincipal");
    Enrolled {
        thing: thing.into(),
        group: group.into(),
        cert: cert_path,
        key: key_path,
        certificate_id,
    }
}

fn identity(stack: &DeviceStack) -> &integration_tests::Identity {
    stack.identity.as_ref().expect("a secured stack")
}

fn iam(stack: &DeviceStack, the_box: &Enrolled) -> IamConfig {
    let identity = identity(stack);
    let url = format!(
        "https://{}/role-aliases/{ROLE_ALIAS}/credentials",
        identity.credentials.endpoint()
    );
    IamConfig {
        credentials_url: reqwest::Url::parse(&url).expect("URL"),
        role_alias: ROLE_ALIAS.into(),
        region: REGION.into(),
        ca: identity.certs.ca(),
        cert: the_box.cert.clone(),
        key: the_box.key.clone(),
    }
}

/// Credentials from the provider for `the_box`, as the agent gets them.
async fn credentials(
    stack: &DeviceStack,
    the_box: &Enrolled,
) -> Result<Credentials, sensorbox::credentials::FetchError> {
    sensorbox::tls::install_crypto_provider();
    let provider = Provider::new(
        &iam(stack, the_box),
        &the_box.thing,
        Duration::from_secs(30),
    )
    .expect("provider");
    provider.fetch().await
}

/// POST `sent` to `/things/<thing>/gasdetector`, signed for `signed` at `at` with
/// `credentials` (None: unsigned). The status and the JSON answer.
async fn post(
    stack: &DeviceStack,
    thing: &str,
    credentials: Option<&Credentials>,
    signed: &str,
    sent: &str,
    at: SystemTime,
) -> (u16, Value) {
    let url = reqwest::Url::parse(&format!(
        "{}/things/{thing}/gasdetector",
        stack.gateway.url()
    ))
    .expect("URL");
    let mut request = reqwest::Client::new()
        .post(url.clone())
        .header("content-type", "application/json")
        .body(sent.to_owned());
    if let Some(credentials) = credentials {
        let headers = sign_post(
            &url,
            "application/json",
            signed.as_bytes(),
            credentials,
            REGION,
            at,
        )
        .expect("sign");
        for (name, value) in headers {
            request = request.header(name, value);
        }
    }
    let response = request.send().await.expect("gateway answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// POST `reading`, signed with `credentials` now.
async fn post_now(
    stack: &DeviceStack,
    thing: &str,
    credentials: &Credentials,
    reading: &str,
) -> (u16, Value) {
    post(
        stack,
        thing,
        Some(credentials),
        reading,
        reading,
        SystemTime::now(),
    )
    .await
}

/// Asserts a 403 whose `key` (`message`, or IAM's `Message`) says `text`.
fn assert_refused((status, body): &(u16, Value), key: &str, text: &str) {
    assert_eq!(*status, 403, "{body}");
    let said = body[key].as_str().unwrap_or_default();
    assert!(said.contains(text), "{body}");
}

async fn count(stack: &DeviceStack, group: &str) -> u64 {
    stack
        .opensearch
        .count("gasdetect", json!({"term": {"groupid": group}}))
        .await
}

/// The agent with `[iam]`: one simulated gas sensor every second.
fn start_agent(stack: &DeviceStack, dir: &Path, the_box: &Enrolled) -> (ChildGuard, PathBuf) {
    let identity = identity(stack);
    let config = dir.join(format!("{}.toml", the_box.thing));
    let log = dir.join(format!("{}.log", the_box.thing));
    let text = format!(
        r#"api_url = "{api}"
groupid = "{group}"
thing_name = "{thing}"
clock = "system"
request_timeout_s = 120
[queue]
path = "{queue}"
[iam]
credentials_endpoint = "{endpoint}"
role_alias = "{ROLE_ALIAS}"
region = "{REGION}"
ca = "{ca}"
cert = "{cert}"
key = "{key}"
[[sensor]]
route = "gasdetector"
interval_s = 1
source = {{ kind = "simulate", seed = 3 }}
"#,
        api = stack.gateway.url(),
        group = the_box.group,
        thing = the_box.thing,
        queue = dir.join(format!("{}.db", the_box.thing)).display(),
        endpoint = identity.credentials.endpoint(),
        ca = identity.certs.ca().display(),
        cert = the_box.cert.display(),
        key = the_box.key.display(),
    );
    std::fs::write(&config, text).expect("config");
    let agent = ChildGuard::spawn(
        "sensorbox",
        Command::new(AGENT)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log")),
    );
    (agent, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_posts_as_itself_only_and_a_revoked_box_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    // As deployed: the shared-key routes refused.
    let stack = DeviceStack::start_secured(
        &dir.path().join("certs"),
        Duration::from_secs(3600),
        &[("LEGACY_KEY_ROUTES", "false")],
    )
    .await;
    let run = fastrand::u32(..);
    let (group_a, group_b) = (format!("ha-{run}"), format!("hb-{run}"));
    let box_a = enrol(&stack, dir.path(), &format!("pi-a-{run}"), &group_a).await;
    let box_b = enrol(&stack, dir.path(), &format!("pi-b-{run}"), &group_b).await;

    // The agent itself: credentials from the provider, signed posts, stored for its group.
    let (mut agent, log) = start_agent(&stack, dir.path(), &box_a);
    eventually("box A's readings indexed", Duration::from_secs(90), || {
        agent.assert_running();
        let stored = count(&stack, &group_a);
        async move { Some(stored.await).filter(|n| *n >= 2) }
    })
    .await;
    drop(agent);
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    let fetches = log
        .lines()
        .filter(|l| l.contains("credentials fetched"))
        .count();
    assert_eq!(fetches, 1, "one credentials call for the lifetime:\n{log}");

    // The same box's credentials, for everything a stolen box might try.
    let a = credentials(&stack, &box_a)
        .await
        .expect("box A's credentials");
    let now = SystemTime::now();
    let for_b = gas_reading(&group_b, "95", "2026-12-04 10:00:00");
    let for_a = gas_reading(&group_a, "95", "2026-12-04 10:00:00");
    // Another box's route: IAM refuses (the role reaches only its own thing's routes).
    let answer = post(&stack, &box_b.thing, Some(&a), &for_b, &for_b, now).await;
    assert_refused(
        &answer,
        "Message",
        "is not authorized to perform: execute-api:Invoke",
    );
    // Its own route, another group: the function refuses (the registry binds A to A).
    let (status, body) = post(&stack, &box_a.thing, Some(&a), &for_b, &for_b, now).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        (body["error"].as_str(), body["field"].as_str()),
        (Some("forbidden"), Some("groupid")),
        "{body}"
    );
    // Unsigned, tampered, signed too long ago.
    let answer = post(&stack, &box_a.thing, None, &for_a, &for_a, now).await;
    assert_refused(&answer, "message", "Missing Authentication Token");
    let answer = post(&stack, &box_a.thing, Some(&a), &for_a, &for_b, now).await;
    assert_refused(
        &answer,
        "message",
        "The request signature we calculated does not match",
    );
    let old = now - Duration::from_secs(600);
    let answer = post(&stack, &box_a.thing, Some(&a), &for_a, &for_a, old).await;
    assert_refused(&answer, "message", "Signature expired: ");
    // The legacy shared-key route is off, as deployed by default.
    let legacy = reqwest::Client::new()
        .post(format!("{}/gasdetector", stack.gateway.url()))
        .header("content-type", "application/json")
        .body(for_b.clone())
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(legacy.status().as_u16(), 403);
    // A signed reading for its own group goes through, so once it is searchable everything
    // above has been decided: nothing was stored for group B.
    let (status, body) = post_now(&stack, &box_a.thing, &a, &for_a).await;
    assert_eq!(status, 200, "{body}");
    let before = count(&stack, &group_a).await;
    assert!(before >= 3, "{before}");
    assert_eq!(
        count(&stack, &group_b).await,
        0,
        "nothing stored for group B"
    );

    // Revoked, as `fleet revoke` does it: the certificate REVOKED (on the CA's list) and
    // the thing marked.
    let front = identity(&stack).front.url();
    integration_tests::revoke_certificate(&front, &box_a.certificate_id).await;
    registry_client(&front)
        .update_thing()
        .thing_name(&box_a.thing)
        .attribute_payload(
            aws_sdk_iot::types::AttributePayload::builder()
                .attributes("revoked", "2026-12-04T17:00:00Z")
                .merge(true)
                .build(),
        )
        .send()
        .await
        .expect("UpdateThing revoked");
    // No new credentials...
    let refused = credentials(&stack, &box_a).await;
    assert!(refused.is_err(), "a revoked certificate got credentials");
    // ...and the ones it got before are refused within the registry cache TTL (1 s here).
    let answer = eventually(
        "box A refused with its old credentials",
        Duration::from_secs(30),
        || {
            let posted = post_now(&stack, &box_a.thing, &a, &for_a);
            async move { Some(posted.await).filter(|(status, _)| *status == 403) }
        },
    )
    .await;
    assert_refused(&answer, "message", "was revoked");
    // Every other box keeps working.
    let b = credentials(&stack, &box_b)
        .await
        .expect("box B's credentials");
    let (status, body) = post_now(&stack, &box_b.thing, &b, &for_b).await;
    assert_eq!(status, 200, "{body}");
}
