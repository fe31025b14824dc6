//! schemathesis (a fuzzer we did not write) driven by api/openapi.yaml against the local
//! stack: the local gateway (requiring an API key, as the deployed API does) in front of
//! the three ingest functions and the query function (page and read API) under
//! `cargo lambda watch`, the real broker, IoT endpoint and
//! osmem-server. Its checks (plus two of ours in tests/schemathesis/hooks.py) must all
//! pass, and afterwards nothing it sent may have left a document or an MQTT message it
//! should not: every document in OpenSearch and every warning on MQTT carries the id of a
//! reading some answer reported as stored, and every reading reported stored is there.
//! Bounded: `--max-examples` per operation (SCHEMATHESIS_MAX_EXAMPLES, default 50) and a
//! fixed seed (SCHEMATHESIS_SEED) so a failure reproduces.

use integration_tests::{
    ensure_python_package, eventually, root, start_watch, venv_bin, Peers, Subscriber, WATCH_BUILD,
};
use local_aws::{Gateway, GatewayConfig};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Keep in step with xtask/src/tools.rs (SCHEMATHESIS), which installs it for CI.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
const API_KEY: &str = "contract-test-key";
const INDICES: [&str; 3] = ["gasdetect", "dust", "temp"];

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_and_bad_requests_change_nothing() {
    let schemathesis = ensure_python_package(SCHEMATHESIS, || {
        let bin = venv_bin("schemathesis");
        bin.exists().then_some(bin)
    });
    let peers = Peers::start().await;
    let mut warnings = Subscriber::connect(peers.broker.local_addr(), "pi/#").await;
    let (mut watch, watch_port) = start_watch(&peers.env(), &[]).await;
    let gateway = Gateway::start(
        "127.0.0.1:0".parse().expect("address"),
        GatewayConfig {
            api_key: Some(API_KEY.into()),
            timeout: Duration::from_secs(120),
            ..GatewayConfig::sensors(format!("http://127.0.0.1:{watch_port}"))
        },
    )
    .await
    .expect("gateway");
    let http = reqwest::Client::new();
    // Every function built and answering (a GET changes nothing: 405; the query function
    // answers its rules) before the run.
    for (route, expected) in [
        ("/gasdetector", 405),
        ("/dust", 405),
        ("/temp", 405),
        ("/api/rules", 200),
    ] {
        eventually(&format!("{route} to answer"), WATCH_BUILD, || {
            watch.assert_running();
            let request = http
                .get(format!("{}{route}", gateway.url()))
                .header("x-api-key", API_KEY)
                .send();
            async move {
                request
                    .await
                    .ok()
                    .filter(|r| r.status() == expected)
                    .map(|_| ())
            }
        })
        .await;
    }

    let work = std::env::temp_dir().join(format!("it-schemathesis-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("work directory");
    let record = work.join("answers.jsonl");
    let seed = env_or("SCHEMATHESIS_SEED", "20261201");
    let max_examples = env_or("SCHEMATHESIS_MAX_EXAMPLES", "50");
    let started = Instant::now();
    let output = Command::new(&schemathesis)
        .current_dir(&work)
        .env(
            "SCHEMATHESIS_HOOKS",
            root().join("tests/schemathesis/hooks.py"),
        )
        .env("CONTRACT_DOCUMENT", root().join("api/openapi.yaml"))
        .env("CONTRACT_RECORD", &record)
        .arg("run")
        .arg(format!("{}/openapi.json", gateway.url()))
        .args(["--checks", "all"])
        // Replaced by the hooks' stricter checks (see hooks.py for why).
        .args([
            "--exclude-checks",
            "not_a_server_error,negative_data_rejection,positive_data_acceptance,missing_required_header",
        ])
        .args(["--max-examples", &max_examples, "--seed", &seed])
        .args(["--header", &format!("x-api-key: {API_KEY}")])
        .args(["--generation-database", "none", "--no-color"])
        .args(["--request-timeout", "60"])
        .stdin(Stdio::null())
        .output()
        .expect("cannot run schemathesis");
    let took = started.elapsed();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems (seed {seed}):\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // What the answers said: per (method, status) a count, and every stored id.
    let text = std::fs::read_to_string(&record).expect("the hooks recorded the answers");
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut stored: HashSet<String> = HashSet::new();
    for line in text.lines() {
        let answer: Value = serde_json::from_str(line).expect("record lines are JSON");
        let key = format!(
            "{} {}",
            answer["method"].as_str().unwrap_or("?"),
            answer["status"]
        );
        *statuses.entry(key).or_default() += 1;
        for id in answer["stored"].as_array().into_iter().flatten() {
            stored.insert(id.as_str().expect("ids are strings").to_owned());
        }
    }
    let requests: usize = statuses.values().sum();
    assert!(requests > 0, "schemathesis sent nothing");

    // OpenSearch holds exactly the readings answered as stored.
    let mut documents: HashSet<String> = HashSet::new();
    for index in INDICES {
        let _ = peers
            .opensearch
            .post(&format!("/{index}/_refresh"), &json!({}))
            .await;
        let (status, reply) = peers
            .opensearch
            .post(
                &format!("/{index}/_search"),
                &json!({"size": 10000, "_source": false, "query": {"match_all": {}}}),
            )
            .await;
        if status == 404 {
            continue;
        }
        assert_eq!(status, 200, "_search on {index}: {reply}");
        let hits = reply["hits"]["hits"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(hits.len() < 10000, "more documents than one search returns");
        for hit in hits {
            documents.insert(hit["_id"].as_str().expect("_id").to_owned());
        }
    }
    let unexpected: Vec<_> = documents.difference(&stored).collect();
    assert!(
        unexpected.is_empty(),
        "documents no answer reported as stored: {unexpected:?}"
    );
    let lost: Vec<_> = stored.difference(&documents).collect();
    assert!(
        lost.is_empty(),
        "answered stored but not in OpenSearch: {lost:?}"
    );

    // Every warning on MQTT belongs to a stored reading (a marker proves all arrived).
    peers.publish_marker("pi/schemathesis-marker").await;
    let mut warned = 0;
    loop {
        let (topic, message, _) = warnings.next().await;
        if message == json!({"marker": true}) {
            break;
        }
        let id = message["id"].as_str().unwrap_or_default();
        assert!(
            stored.contains(id),
            "warning on {topic} for no stored reading: {message}"
        );
        warned += 1;
    }

    eprintln!(
        "schemathesis (seed {seed}, max {max_examples} examples per operation) sent {requests} \
         requests in {:.0} s: {statuses:?}; {} readings stored, {} documents, {warned} warnings, \
         nothing else",
        took.as_secs_f64(),
        stored.len(),
        documents.len(),
    );
    let _ = std::fs::remove_dir_all(&work);
}
