//! Reliability under injected faults, with real HTTP in between: fault-injecting proxies
//! (`local_aws::fault`) in front of the IoT data-plane endpoint and osmem-server answer
//! 429/500/503, reset connections (before and after the upstream did the work) and answer
//! late, at a set rate, while a bounded load of readings (single and batches, some
//! tripping rules) flows through the real pipeline and adapters. A client resends on 503
//! as a box must. Afterwards: every reading is indexed exactly once, every tripped rule's
//! warning reached a real MQTT subscriber at least once, and no answer but 200 and 503
//! was ever seen.

use integration_tests::{post, Peers, Subscriber, WAIT};
use local_aws::fault::{FaultConfig, FaultProxy, FaultStats};
use sensor_aws::{IotPublisher, OpenSearchIndexer};
use sensor_core::pipeline::Pipeline;
use sensor_core::ports::{MemoryAlarmStore, MemoryRegistry};
use sensor_core::retry::RetryPolicy;
use sensor_lambda::{App, IngestSettings};
use sensor_model::Sensor;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const READINGS: usize = 200;
/// Readings 0..SINGLES are posted one by one, the rest in batches of BATCH.
const SINGLES: usize = 160;
const BATCH: usize = 10;
const FAULT_RATE: f64 = 0.3;
/// Answers this late exceed the pipeline's attempt timeout below.
const SLOW: Duration = Duration::from_millis(1500);
const CLIENTS: usize = 8;
/// A box resends a rejected request at most this many times here.
const MAX_RESENDS: usize = 20;

fn seed() -> u64 {
    std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_260_926)
}

/// Reading `i`: its own time, one of 7 groups; every 5th trips no2, every 11th trips co.
fn reading(i: usize) -> Value {
    let time = format!(
        "2021-09-03 {:02}:{:02}:{:02}",
        10 + i / 3600,
        (i / 60) % 60,
        i % 60
    );
    let no2 = if trips_no2(i) { "95.00" } else { "52.00" };
    let co = if trips_co(i) { "60.5" } else { "26.20" };
    json!({"groupid": format!("g{}", i % 7), "gps": "37.61, 126.99",
        "no2": {"sensorid": "0006", "sensortype": "9", "value": no2, "createdtime": time},
        "co": {"sensorid": "0005", "sensortype": "8", "value": co, "createdtime": time}})
}

fn trips_no2(i: usize) -> bool {
    i.is_multiple_of(5)
}

fn trips_co(i: usize) -> bool {
    i.is_multiple_of(11)
}

fn expected_trips() -> usize {
    (0..READINGS)
        .map(|i| usize::from(trips_no2(i)) + usize::from(trips_co(i)))
        .sum()
}

#[derive(Default)]
struct ClientLog {
    /// Final replies, one per request.
    replies: Vec<Value>,
    /// 503 answers seen (each followed by a resend).
    unavailable: usize,
    /// Any other status: must stay empty.
    unexpected: Vec<String>,
}

/// `ALARM_MODE=every`: this test counts one warning per tripped rule per reading, which
/// is that mode's promise (transitions under faults: `tests/tests/alarms.rs`).
async fn app_behind(
    iot: &FaultProxy,
    opensearch: &FaultProxy,
    peers: &Peers,
) -> App<IotPublisher, OpenSearchIndexer, MemoryAlarmStore, MemoryRegistry> {
    let mut env = peers.env();
    env.insert("ALARM_MODE".into(), "every".into());
    env.insert("AWS_ENDPOINT_URL_IOT_DATA_PLANE".into(), iot.url());
    env.insert("OPENSEARCH_URL".into(), opensearch.url());
    let config = IngestSettings::from_lookup(Sensor::Gasdetector, |k| env.get(k).cloned())
        .unwrap_or_else(|e| panic!("configuration: {e}"));
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_iotdataplane::config::Credentials::new(
            "AKIDFAULTS",
            "fault-secret",
            None,
            None,
            "test",
        ))
        .load()
        .await;
    let publisher = IotPublisher::new(&sdk, config.iot_endpoint.as_str());
    let indexer = OpenSearchIndexer::new(&config.opensearch, &sdk).expect("OpenSearch client");
    // The production policy with a 1 s attempt timeout (5 s in production) and 3
    // attempts, so slow answers cost little time and some readings do run out of
    // attempts and get a 503.
    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        attempt_timeout: Duration::from_secs(1),
    };
    App::from_pipeline(
        Pipeline::new(&config.pipeline, publisher, indexer).with_retry_policy(policy),
    )
}

fn report(name: &str, stats: &FaultStats) -> String {
    format!(
        "{name}: {} requests, {} forwarded, {} faults injected {:?}",
        stats.requests,
        stats.forwarded,
        stats.injected_total(),
        stats.injected
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_lost_nothing_duplicated_under_injected_faults() {
    let started = Instant::now();
    let peers = Peers::start().await;
    let any = "127.0.0.1:0".parse().expect("address");
    let seed = seed();
    let iot_proxy = FaultProxy::start(
        any,
        &peers.iot.url(),
        FaultConfig::standard(FAULT_RATE, seed, SLOW),
    )
    .await
    .expect("IoT fault proxy");
    let os_proxy = FaultProxy::start(
        any,
        &peers.opensearch.url,
        FaultConfig::standard(FAULT_RATE, seed.wrapping_add(1), SLOW),
    )
    .await
    .expect("OpenSearch fault proxy");
    let mut subscriber = Subscriber::connect(peers.broker.local_addr(), "pi/#").await;
    let app = Arc::new(app_behind(&iot_proxy, &os_proxy, &peers).await);

    // The requests: 160 single readings and 4 batches of 10.
    let mut requests: VecDeque<String> = (0..SINGLES).map(|i| reading(i).to_string()).collect();
    for start in (SINGLES..READINGS).step_by(BATCH) {
        let batch: Vec<Value> = (start..start + BATCH).map(reading).collect();
        requests.push_back(Value::Array(batch).to_string());
    }
    let request_count = requests.len();
    let queue = Arc::new(Mutex::new(requests));
    let log = Arc::new(Mutex::new(ClientLog::default()));
    let load_started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (app, queue, log) = (app.clone(), queue.clone(), log.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let Some(body) = queue.lock().unwrap().pop_front() else {
                    return;
                };
                let mut resends = 0;
                loop {
                    let (status, reply) = post(&app, "gasdetector", &body).await;
                    match status {
                        200 => {
                            log.lock().unwrap().replies.push(reply);
                            break;
                        }
                        503 if resends < MAX_RESENDS => {
                            log.lock().unwrap().unavailable += 1;
                            resends += 1;
                            // A box waits Retry-After (5 s) seconds; scaled down here.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        other => {
                            log.lock()
                                .unwrap()
                                .unexpected
                                .push(format!("{other} after {resends} resends: {reply}"));
                            break;
                        }
                    }
                }
            }
        }));
    }
    for client in clients {
        tokio::time::timeout(Duration::from_secs(120), client)
            .await
            .expect("the load finishes")
            .expect("client task");
    }
    let load_time = load_started.elapsed();
    let log = std::mem::take(&mut *log.lock().unwrap());
    assert!(
        log.unexpected.is_empty(),
        "only 200 and 503: {:?}",
        log.unexpected
    );
    assert_eq!(
        log.replies.len(),
        request_count,
        "every request answered 200 in the end"
    );

    // Ids and warnings as the function reported them.
    let mut ids: Vec<String> = Vec::new();
    let mut trips: HashSet<(String, String)> = HashSet::new();
    let mut record = |reply: &Value| {
        let id = reply["id"].as_str().expect("id").to_string();
        for w in reply["warnings"].as_array().expect("warnings") {
            assert_eq!(w["id"], id.as_str());
            trips.insert((
                id.clone(),
                w["measure"].as_str().expect("measure").to_string(),
            ));
        }
        ids.push(id);
    };
    for reply in &log.replies {
        match reply["items"].as_array() {
            Some(items) => {
                for item in items {
                    let status = item["status"].as_str().unwrap_or("");
                    assert!(["stored", "already_stored"].contains(&status), "{item}");
                    record(item);
                }
            }
            None => record(reply),
        }
    }
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), READINGS, "one id per reading");
    assert_eq!(
        trips.len(),
        expected_trips(),
        "the replies report every tripped rule"
    );

    // Exactly once in OpenSearch (read directly, not through the proxy).
    let all = json!({"match_all": {}});
    let total = peers
        .opensearch
        .wait_count("gasdetect", all.clone(), READINGS as u64)
        .await;
    let id_list: Vec<&String> = distinct.iter().copied().collect();
    let by_id = peers
        .opensearch
        .count("gasdetect", json!({"ids": {"values": id_list}}))
        .await;
    assert_eq!(total, READINGS as u64, "no extra documents");
    assert_eq!(by_id, READINGS as u64, "every reading's id is indexed");

    // At least once on MQTT: every tripped rule's warning reaches the subscriber.
    let mut missing = trips.clone();
    let mut received = 0usize;
    let mut per_trip: BTreeMap<(String, String), usize> = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while !missing.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} warnings never arrived, e.g. {:?}",
            missing.len(),
            missing.iter().next()
        );
        let (topic, message, _) = subscriber.next().await;
        let (Some(id), Some(measure)) = (message["id"].as_str(), message["measure"].as_str())
        else {
            continue;
        };
        assert!(topic.starts_with("pi/g"), "{topic}");
        received += 1;
        let key = (id.to_string(), measure.to_string());
        *per_trip.entry(key.clone()).or_default() += 1;
        missing.remove(&key);
    }
    let duplicates = per_trip.values().filter(|n| **n > 1).count();

    let iot = iot_proxy.stats();
    let os = os_proxy.stats();
    println!(
        "faults: seed {seed}, rate {FAULT_RATE}, {READINGS} readings in {request_count} requests, \
         {CLIENTS} clients\n  {}\n  {}\n  client: {} x 503 then resent (all stored after resending), \
         load {:.1?}, whole test {:.1?}\n  indexed {total} documents, {by_id} by id; \
         warnings: {} tripped rules, {received} messages received ({duplicates} rules warned more than once)",
        report("IoT proxy", &iot),
        report("OpenSearch proxy", &os),
        log.unavailable,
        load_time,
        started.elapsed(),
        trips.len(),
    );
    assert!(
        iot.injected_total() > 0 && os.injected_total() > 0,
        "faults were injected"
    );
    if log.unavailable == 0 {
        println!("  note: no request ran out of attempts this run (503 path not exercised)");
    }
}
