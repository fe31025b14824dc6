//! The stream path against real peers: the embedded Kinesis emulator through the real
//! `aws-sdk-kinesis` client, the Basic Ingest rule over Mosquitto, and the event source
//! mapping invoking an in-process fake function that speaks the Lambda invoke API. Every
//! test waits on what it checks (an invocation, a count, a queued message), never on time.

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use local_aws::event_source::{Counts, Source};
use local_aws::{
    Broker, Destination, EventSourceMapping, IotRules, IotRulesConfig, Kinesis, KinesisConfig,
    MappingConfig, StreamRule, StreamRuleConfig,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);
const STREAM: &str = "test-readings";

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A port nothing listens on (probed free just before).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind(any_port())
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn emulator(shards: u32, iterator_ttl: Duration) -> Kinesis {
    Kinesis::start(KinesisConfig {
        addr: any_port(),
        stream: STREAM.into(),
        shards,
        iterator_ttl,
    })
    .await
    .unwrap()
}

fn reading(key: &str, n: usize) -> Vec<u8> {
    json!({"sensor": "gasdetector", "key": key, "n": n})
        .to_string()
        .into_bytes()
}

/// Puts `records` (partition key, data) in one PutRecords call; their sequence numbers.
async fn put_all(kinesis: &Kinesis, records: &[(&str, Vec<u8>)]) -> Vec<String> {
    let entries = records
        .iter()
        .map(|(key, data)| {
            PutRecordsRequestEntry::builder()
                .partition_key(*key)
                .data(Blob::new(data.clone()))
                .build()
                .unwrap()
        })
        .collect::<Vec<_>>();
    let put = kinesis
        .client()
        .put_records()
        .stream_name(STREAM)
        .set_records(Some(entries))
        .send()
        .await
        .unwrap();
    assert_eq!(put.failed_record_count(), Some(0));
    put.records()
        .iter()
        .map(|r| r.sequence_number().unwrap().to_owned())
        .collect()
}

async fn put_one(kinesis: &Kinesis, key: &str, data: Vec<u8>) -> String {
    let put = kinesis
        .client()
        .put_record()
        .stream_name(STREAM)
        .partition_key(key)
        .data(Blob::new(data))
        .send()
        .await
        .unwrap();
    put.sequence_number().to_owned()
}

/// Every record in the stream: (partition key, data), shard by shard.
async fn read_stream(kinesis: &Kinesis) -> Vec<(String, Vec<u8>)> {
    let client = kinesis.client();
    let shards = client
        .list_shards()
        .stream_name(STREAM)
        .send()
        .await
        .unwrap();
    let mut all = Vec::new();
    for shard in shards.shards() {
        let iterator = client
            .get_shard_iterator()
            .stream_name(STREAM)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap();
        let records = client
            .get_records()
            .shard_iterator(iterator.shard_iterator().unwrap())
            .send()
            .await
            .unwrap();
        for record in records.records() {
            all.push((
                record.partition_key().unwrap_or_default().to_owned(),
                record.data().as_ref().to_vec(),
            ));
        }
    }
    all
}

/// What the fake function answers to one invocation.
#[derive(Clone)]
enum Reply {
    Json(Value),
    /// An unhandled error: `X-Amz-Function-Error: Unhandled`.
    FunctionError,
    /// The function host dies mid-invocation: the connection drops without an answer.
    Reset,
    /// The answer after a pause.
    Slow(Duration, Value),
}

type Script = Arc<dyn Fn(usize, &KinesisEvent) -> Reply + Send + Sync>;

/// One invocation the fake function received.
#[derive(Debug)]
struct Call {
    function: String,
    shard: String,
    /// (sequence number, partition key, data) in event order.
    records: Vec<(String, String, Value)>,
}

impl Call {
    fn ns(&self) -> Vec<u64> {
        self.records
            .iter()
            .map(|(_, _, data)| data["n"].as_u64().unwrap_or(u64::MAX))
            .collect()
    }

    fn sequence_numbers(&self) -> Vec<String> {
        self.records.iter().map(|(s, _, _)| s.clone()).collect()
    }
}

/// A function host speaking the Lambda invoke API, recording the Kinesis events it gets
/// (parsed with `aws_lambda_events`) and answering what the test's script says.
struct FakeFunction {
    url: String,
    calls: mpsc::UnboundedReceiver<Call>,
    /// Set if two batches of one shard were ever in flight at once.
    overlapped: Arc<AtomicBool>,
    _task: tokio::task::JoinHandle<()>,
}

impl FakeFunction {
    async fn start(addr: SocketAddr, script: Script) -> FakeFunction {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, calls) = mpsc::unbounded_channel();
        let overlapped = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let flag = overlapped.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (tx, script, in_flight, count, flag) = (
                    tx.clone(),
                    script.clone(),
                    in_flight.clone(),
                    count.clone(),
                    flag.clone(),
                );
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let shared = Shared {
                            tx: tx.clone(),
                            script: script.clone(),
                            in_flight: in_flight.clone(),
                            count: count.clone(),
                            overlapped: flag.clone(),
                        };
                        shared.handle(request)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeFunction {
            url,
            calls,
            overlapped,
            _task: task,
        }
    }

    async fn next(&mut self) -> Call {
        tokio::time::timeout(WAIT, self.calls.recv())
            .await
            .expect("no invocation within the deadline")
            .expect("the fake function stopped")
    }

    /// Invocations until `records` records have been received in total.
    async fn until_records(&mut self, records: usize) -> Vec<Call> {
        let mut calls = Vec::new();
        let mut seen = 0;
        while seen < records {
            let call = self.next().await;
            seen += call.records.len();
            calls.push(call);
        }
        calls
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What one connection of the fake function shares with the others.
struct Shared {
    tx: mpsc::UnboundedSender<Call>,
    script: Script,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    count: Arc<AtomicUsize>,
    overlapped: Arc<AtomicBool>,
}

impl Shared {
    async fn handle(self, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, BoxError> {
        let function = request
            .uri()
            .path()
            .trim_start_matches("/2015-03-31/functions/")
            .trim_end_matches("/invocations")
            .to_owned();
        let body = request.into_body().collect().await?.to_bytes();
        let event: KinesisEvent = serde_json::from_slice(&body).expect("a Kinesis event");
        let raw: Value = serde_json::from_slice(&body)?;
        let call = call_of(&function, &event, &raw);
        let shard = call.shard.clone();
        {
            let mut in_flight = self.in_flight.lock().unwrap();
            let n = in_flight.entry(shard.clone()).or_default();
            *n += 1;
            if *n > 1 {
                self.overlapped.store(true, Ordering::SeqCst);
            }
        }
        let index = self.count.fetch_add(1, Ordering::SeqCst);
        let _ = self.tx.send(call);
        let reply = (self.script)(index, &event);
        // Long enough for an overlapping batch of the shard to show.
        tokio::time::sleep(Duration::from_millis(10)).await;
        if let Reply::Slow(pause, _) = &reply {
            tokio::time::sleep(*pause).await;
        }
        if let Some(n) = self.in_flight.lock().unwrap().get_mut(&shard) {
            *n -= 1;
        }
        let response = Response::builder().status(200);
        match reply {
            Reply::Json(value) | Reply::Slow(_, value) => {
                Ok(response.body(Full::new(Bytes::from(value.to_string())))?)
            }
            Reply::FunctionError => {
                Ok(response
                    .header("x-amz-function-error", "Unhandled")
                    .body(Full::new(Bytes::from(
                        r#"{"errorType":"Poison","errorMessage":"boom"}"#,
                    )))?)
            }
            // hyper drops the connection without an answer.
            Reply::Reset => Err("the function host died".into()),
        }
    }
}

fn call_of(function: &str, event: &KinesisEvent, raw: &Value) -> Call {
    let records = event
        .records
        .iter()
        .map(|r| {
            // `Base64Data` holds the decoded bytes.
            let data = &r.kinesis.data.0;
            let data = serde_json::from_slice(data)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into()));
            (
                r.kinesis.sequence_number.clone(),
                r.kinesis.partition_key.clone(),
                data,
            )
        })
        .collect();
    let shard = raw["Records"][0]["eventID"]
        .as_str()
        .and_then(|id| id.split(':').next())
        .unwrap_or_default()
        .to_owned();
    Call {
        function: function.to_owned(),
        shard,
        records,
    }
}

fn answer(value: Value) -> Script {
    Arc::new(move |_, _| Reply::Json(value.clone()))
}

/// The stacks' mapping with test timings: 50 ms polls, 20 to 200 ms between retries.
fn mapping(function: &str) -> MappingConfig {
    let mut config = MappingConfig::new(function);
    config.window = Duration::ZERO;
    config.poll_interval = Duration::from_millis(50);
    config.backoff = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    config.invoke_timeout = Duration::from_secs(10);
    config
}

async fn start_mapping(
    kinesis: &Kinesis,
    invoke_base: &str,
    config: MappingConfig,
    failures: &Destination,
) -> EventSourceMapping {
    let source = Source {
        stream: kinesis.stream().to_owned(),
        stream_arn: kinesis.stream_arn().to_owned(),
        invoke_base: invoke_base.to_owned(),
    };
    EventSourceMapping::start(kinesis.client(), source, config, failures.clone())
        .await
        .unwrap()
}

async fn counts_until(mapping: &EventSourceMapping, done: impl Fn(&Counts) -> bool) -> Counts {
    match mapping.wait_until(done, WAIT).await {
        Some(counts) => counts,
        None => panic!("counts never got there: {:?}", mapping.counts()),
    }
}

#[tokio::test]
async fn the_emulator_takes_and_gives_back_records_through_the_sdk() {
    let kinesis = emulator(2, Duration::from_secs(300)).await;
    assert!(kinesis.stream_arn().ends_with(&format!(":stream/{STREAM}")));
    let summary = kinesis
        .client()
        .describe_stream_summary()
        .stream_name(STREAM)
        .send()
        .await
        .unwrap();
    assert_eq!(
        summary
            .stream_description_summary()
            .unwrap()
            .open_shard_count(),
        2
    );
    put_one(&kinesis, "7", b"hello".to_vec()).await;
    assert_eq!(
        read_stream(&kinesis).await,
        vec![("7".into(), b"hello".to_vec())]
    );
}

#[tokio::test]
async fn a_shard_is_throttled_beyond_1000_records_a_second() {
    let kinesis = emulator(1, Duration::from_secs(300)).await;
    // PutRecords takes at most 500 records a call: a few calls at once, one shard.
    let entries = || {
        (0..500)
            .map(|i| {
                PutRecordsRequestEntry::builder()
                    .partition_key("1")
                    .data(Blob::new(format!("r{i}")))
                    .build()
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    let mut throttled = 0;
    for _ in 0..6 {
        let put = kinesis
            .client()
            .put_records()
            .stream_name(STREAM)
            .set_records(Some(entries()))
            .send()
            .await
            .unwrap();
        throttled += put
            .records()
            .iter()
            .filter(|r| r.error_code() == Some("ProvisionedThroughputExceededException"))
            .count();
        if throttled > 0 {
            break;
        }
    }
    assert!(throttled > 0, "no record was throttled");
    // A single PutRecord in the same second is refused the same way.
    let refused = kinesis
        .client()
        .put_record()
        .stream_name(STREAM)
        .partition_key("1")
        .data(Blob::new("one more"))
        .send()
        .await;
    if let Err(e) = refused {
        assert!(
            e.as_service_error()
                .is_some_and(|e| e.is_provisioned_throughput_exceeded_exception()),
            "{e:?}"
        );
    }
}

#[tokio::test]
async fn batches_are_cut_at_the_batch_size_in_order() {
    let kinesis = emulator(1, Duration::from_secs(300)).await;
    let records: Vec<(&str, Vec<u8>)> = (0..5).map(|n| ("1", reading("1", n))).collect();
    let sequence_numbers = put_all(&kinesis, &records).await;
    let mut function =
        FakeFunction::start(any_port(), answer(json!({"batchItemFailures": []}))).await;
    let mut config = mapping("gasdetector");
    config.batch_size = 2;
    let failures = Destination::memory();
    let mapping = start_mapping(&kinesis, &function.url, config, &failures).await;

    let calls = function.until_records(5).await;
    let sizes: Vec<usize> = calls.iter().map(|c| c.records.len()).collect();
    assert_eq!(sizes, vec![2, 2, 1]);
    let ns: Vec<u64> = calls.iter().flat_map(Call::ns).collect();
    assert_eq!(ns, vec![0, 1, 2, 3, 4]);
    let seen: Vec<String> = calls.iter().flat_map(Call::sequence_numbers).collect();
    assert_eq!(seen, sequence_numbers);
    assert!(calls.iter().all(|c| c.function == "gasdetector"));
    let counts = counts_until(&mapping, |c| c.records_delivered == 5).await;
    assert_eq!((counts.invocations, counts.retries), (3, 0));
}

#[tokio::test]
async fn the_event_is_lambdas_kinesis_event() {
    let kinesis = emulator(1, Duration::from_secs(300)).await;
    let sequence_number = put_one(&kinesis, "42", reading("42", 0)).await;
    let (tx, mut raw_events) = mpsc::unbounded_channel::<Value>();
    // A plain server here: the raw JSON, field by field.
    let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let _server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let body = request.into_body().collect().await?.to_bytes();
                        let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from("null"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let failures = Destination::memory();
    let _mapping = start_mapping(&kinesis, &url, mapping("gasdetector"), &failures).await;
    let event = tokio::time::timeout(WAIT, raw_events.recv())
        .await
        .unwrap()
        .unwrap();
    let record = &event["Records"][0];
    let shard = record["eventID"]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    assert!(shard.starts_with("shardId-"), "{record}");
    assert_eq!(record["eventID"], format!("{shard}:{sequence_number}"));
    assert_eq!(record["eventSource"], "aws:kinesis");
    assert_eq!(record["eventVersion"], "1.0");
    assert_eq!(record["eventName"], "aws:kinesis:record");
    assert_eq!(record["awsRegion"], "us-east-1");
    assert_eq!(record["eventSourceARN"], kinesis.stream_arn());
    assert!(record["invokeIdentityArn"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:iam::"));
    let kinesis_part = &record["kinesis"];
    assert_eq!(kinesis_part["kinesisSchemaVersion"], "1.0");
    assert_eq!(kinesis_part["partitionKey"], "42");
    assert_eq!(kinesis_part["sequenceNumber"], sequence_number);
    let arrival = kinesis_part["approximateArrivalTimestamp"]
        .as_f64()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - arrival).abs() < 60.0, "{arrival} vs {now}");
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD
        .decode(kinesis_part["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(data, reading("42", 0));
    // And Rust functions parse it with aws_lambda_events.
    let parsed: KinesisEvent = serde_json::from_value(event.clone()).unwrap();
    assert_eq!(parsed.records[0].kinesis.sequence_number, sequence_number);
}

#[tokio::test]
async fn the_window_gathers_records_read_apart() {
    let kinesis = emulator(1, Duration::from_secs(300)).await;
    let mut function = FakeFunction::start(any_port(), answer(json!({}))).await;
    let mut config = mapping("gasdetector");
    config.batch_size = 100;
    config.window = Duration::from_millis(1500);
    let failures = Destination::memory();
    let mapping = start_mapping(&kinesis, &function.url, config, &failures).await;

    put_one(&kinesis, "1", reading("1", 0)).await;
    counts_until(&mapping, |c| c.records_read == 1).await;
    put_one(&kinesis, "1", reading("1", 1)).await;
    put_one(&kinesis, "1", reading("1", 2)).await;
    let call = function.next().await;
    assert_eq!(call.ns(), vec![0, 1, 2], "one batch for the window");
    let counts = counts_until(&mapping, |c| c.records_delivered == 3).await;
    assert_eq!(counts.invocations, 1);
}

#[tokio::test]
async fn only_the_functions_sensor_is_delivered() {
    let kinesis = emulator(1, Duration::from_secs(300)).await;
    let dust = json!({"sensor": "dust", "n": 1}).to_string().into_bytes();
    put_all(
        &kinesis,
        &[
            ("1", reading("1", 0)),
            ("1", dust),
            ("1", b"not json".to_vec()),
            ("1", reading("1", 3)),
        ],
    )
    .await;
    let mut function = FakeFunction::start(any_port(), answer(Value::Null)).await;
    let mut config = mapping("gasdetector");
    config.batch_size = 10;
    config.window = Duration::from_millis(300);
    let failures = Destination::memory();
    let mapping = start_mapping(&kinesis, &function.url, config, &failures).await;
    let call = function.next().await;
    assert_eq!(call.ns(), vec![0, 3]);
    let counts = counts_until(&mapping, |c| c.records_delivered == 2).await;
    assert_eq!((counts.records_read, counts.records_filtered), (4, 2));
    assert_eq!(counts.invocations, 1);
}

#[tokio::test]
async fn each_shard_keeps_its_order_with_one_batch_in_flight() {
    let kinesis = emulator(2, Duration::from_secs(300)).await;
    let keys = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let total = 48;
    for n in 0..total {
        let key = keys[n % keys.len()];
        put_one(&kinesis, key, reading(key, n)).await;
    }
    let mut function = FakeFunction::start(any_port(), answer(json!({}))).await;
    let mut config = mapping("gasdetector");
    config.batch_size = 3;
    let failures = Destination::memory();
    let mapping = start_mapping(&kinesis, &function.url, config, &failures).await;

    let calls = function.until_records(total).await;
    let shards: std::collections::BTreeSet<&str> = calls.iter().map(|c| c.shard.as_str()).collect();
    assert_eq!(shards.len(), 2, "both shards used: {shards:?}");
    let mut last_n: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_sequence: BTreeMap<String, String> = BTreeMap::new();
    let mut seen = 0;
    for call in &calls {
        assert!(call.records.len() <= 3);
        for (sequence, key, data) in &call.records {
            let n = data["n"].as_u64().unwrap();
            if let Some(before) = last_n.insert(key.clone(), n) {
                assert!(before < n, "key {key}: {n} after {before}");
            }
            // Sequence numbers are decimal strings longer than any integer type.
            let by_value = |s: &String| (s.len(), s.clone());
            if let Some(before) = last_sequence.insert(call.shard.clone(), sequence.clone()) {
                assert!(
                    by_value(&before) < by_value(sequence),
                    "{} out of order",
                    call.shard
                );
            }
            seen += 1;
        }
    }
    assert_eq!(seen, total, "each record once");
    assert!(
        !function.overlapped.load(Ordering::SeqCst),
        "two batches of a shard at once"
    );
    counts_until(&mapping, |c| c.records_delivered == total as u64).await;
}

#[tokio::test]
async fn item_failures_are_retried_from_the_lowest_sequence_number() {
    let kinesis = emulator(1, Duration::from_secs(300)).await;
    let records: Vec<(&str, Vec<u8>)> = (0..5).map(|n| ("1", reading("1", n))).collect();
    let sequence_numbers = put_all(&kinesis, &records).await;
    let failed = [sequence_numbers[3].clone(), sequence_numbers[2].clone()];
    let script: Script = Arc::new(move |index, _| {
        if index == 0 {
            let mut response = KinesisEventResponse::default();
            for id in &failed {
                let mut failure = KinesisBatchItemFailure::default();
                failure.item_identifier = Some(id.clone());
                response.batch_item_failures.push(failure);
            }
            Reply::Json(serde_json::to_value(response).unwrap())
        } else {
            Reply::Json(json!({"batchItemFailures": []}))
        }
    });
    let mut function = FakeFunction::start(any_port(), script).await;
    let mut config = mapping("gasdetector");
    config.batch_size = 5;
    let failures = Destination::memory();
    let mapping = start_mapping(&kinesis, &function.url, config, &failures).await;

    assert_eq!(function.next().await.ns(), vec![0, 1, 2, 3, 4]);
    let retried = function.next().await;
    assert_eq!(
        retried.ns(),
        vec![2, 3, 4],
        "from the lowest failure, not before"
    );
    let counts = counts_until(&mapping, |c| c.records_delivered == 5).await;
    assert_eq!((counts.invocations, counts.retries), (2, 1));
    assert!(failures.messages().is_empty());
}

#[tokio::test]
async fn bisect_isolates_a_poison_record_and_the_shard_goes_on() {
    let kinesis = emulator(1, Duration::from_secs(300)).await;
    let mut records: Vec<(&str, Vec<u8>)> = (0..8).map(|n| ("1", reading("1", n))).collect();
    records[5].1 = json!({"sensor": "gasdetector", "n": 5, "poison": true})
        .to_string()
        .into_bytes();
    let sequence_numbers = put_all(&kinesis, &records).await;
    let script: Script = Arc::new(|_, event: &KinesisEvent| {
        let poisoned = event
            .records
            .iter()
            .any(|r| String::from_utf8_lossy(&r.kinesis.data.0).contains("poison"));
        if poisoned {
            Reply::FunctionError
        } else {
            Reply::Json(json!({}))
        }
    });
    let mut function = FakeFunction::start(any_port(), script).await;
    let mut config = mapping("gasdetector");
    config.batch_size = 8;
    config.max_retries = Some(2);
    let failures = Destination::memory();
    let mapping = start_mapping(&kinesis, &function.url, config, &failures).await;

    let sent = failures
        .wait_for(1, WAIT)
        .await
        .expect("the poison batch given up");
    let message = &sent[0];
    let info = &message["KinesisBatchInfo"];
    assert_eq!(info["batchSize"], 1);
    assert_eq!(info["startSequenceNumber"], sequence_numbers[5]);
    assert_eq!(info["endSequenceNumber"], sequence_numbers[5]);
    assert_eq!(info["streamArn"], kinesis.stream_arn());
    assert!(info["shardId"].as_str().unwrap().starts_with("shardId-"));
    assert!(info["approximateArrivalOfFirstRecord"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(
        message["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(message["requestContext"]["approximateInvokeCount"], 3);
    assert!(message["requestContext"]["functionArn"]
        .as_str()
        .unwrap()
        .ends_with(":function:gasdetector"));
    assert_eq!(message["responseContext"]["functionError"], "Unhandled");
    assert_eq!(message["version"], "1.0");

    // The shard goes on past the poison record.
    put_one(&kinesis, "1", reading("1", 8)).await;
    let counts = counts_until(&mapping, |c| c.records_delivered == 8).await;
    assert_eq!(
        (counts.bisects, counts.retries, counts.failed_batches),
        (3, 2, 1)
    );
    let mut calls = Vec::new();
    while calls.len() < counts.invocations as usize {
        calls.push(function.next().await);
    }
    // Every good record is in exactly one successful invocation.
    let mut delivered: Vec<u64> = calls
        .iter()
        .filter(|c| !c.ns().contains(&5))
        .flat_map(Call::ns)
        .collect();
    delivered.sort_unstable();
    assert_eq!(delivered, vec![0, 1, 2, 3, 4, 6, 7, 8]);
    assert_eq!(failures.messages().len(), 1);
}

#[tokio::test]
async fn a_function_killed_mid_batch_uses_its_retries() {
    let kinesis = emulator(1, Duration::from_secs(300)).await;
    put_one(&kinesis, "1", reading("1", 0)).await;
    let mut function = FakeFunction::start(any_port(), Arc::new(|_, _| Reply::Reset)).await;
    let mut config = mapping("gasdetector");
    config.bisect = false;
    config.max_retries = Some(1);
    let failures = Destination::memory();
    let mapping = start_mapping(&kinesis, &function.url, config, &failures).await;

    let sent = failures.wait_for(1, WAIT).await.expect("given up");
    assert_eq!(sent[0]["requestContext"]["approximateInvokeCount"], 2);
    assert_eq!(sent[0]["responseContext"]["functionError"], "Unhandled");
    function.next().await;
    function.next().await;
    let counts = counts_until(&mapping, |c| c.failed_batches == 1).await;
    assert_eq!(
        (counts.invocations, counts.retries, counts.unreachable),
        (2, 1, 0)
    );
}

#[tokio::test]
async fn an_unreachable_function_uses_no_retries() {
    let kinesis = emulator(1, Duration::from_secs(300)).await;
    put_one(&kinesis, "1", reading("1", 0)).await;
    let addr = free_port();
    let mut config = mapping("gasdetector");
    config.max_retries = Some(0);
    let failures = Destination::memory();
    let mapping = start_mapping(&kinesis, &format!("http://{addr}"), config, &failures).await;
    counts_until(&mapping, |c| c.unreachable >= 3).await;

    // `cargo lambda watch` is back: the batch is delivered, nothing was given up.
    let mut function = FakeFunction::start(addr, answer(json!({}))).await;
    assert_eq!(function.next().await.ns(), vec![0]);
    let counts = counts_until(&mapping, |c| c.records_delivered == 1).await;
    assert_eq!(
        (counts.invocations, counts.retries, counts.failed_batches),
        (1, 0, 0)
    );
    assert!(failures.messages().is_empty());
}

#[tokio::test]
async fn records_past_the_maximum_age_are_given_up_uninvoked() {
    let kinesis = emulator(1, Duration::from_secs(300)).await;
    let sequence_number = put_one(&kinesis, "1", reading("1", 0)).await;
    let function = FakeFunction::start(any_port(), answer(json!({}))).await;
    let mut config = mapping("gasdetector");
    config.max_record_age = Some(Duration::ZERO);
    let failures = Destination::memory();
    let mapping = start_mapping(&kinesis, &function.url, config, &failures).await;

    let sent = failures.wait_for(1, WAIT).await.expect("given up");
    assert_eq!(sent[0]["requestContext"]["condition"], "RecordAgeExceeded");
    assert_eq!(sent[0]["requestContext"]["approximateInvokeCount"], 0);
    assert_eq!(
        sent[0]["KinesisBatchInfo"]["startSequenceNumber"],
        sequence_number
    );
    assert!(sent[0]["responseContext"].get("functionError").is_none());
    let counts = counts_until(&mapping, |c| c.failed_batches == 1).await;
    assert_eq!(counts.invocations, 0);
}

#[tokio::test]
async fn an_expired_iterator_is_renewed_after_the_checkpoint() {
    let kinesis = emulator(1, Duration::from_secs(1)).await;
    put_one(&kinesis, "1", reading("1", 0)).await;
    // The first invocation outlasts the iterator the poller holds.
    let script: Script = Arc::new(|index, _| {
        if index == 0 {
            Reply::Slow(Duration::from_millis(2100), json!({}))
        } else {
            Reply::Json(json!({}))
        }
    });
    let mut function = FakeFunction::start(any_port(), script).await;
    let failures = Destination::memory();
    let mapping = start_mapping(&kinesis, &function.url, mapping("gasdetector"), &failures).await;

    assert_eq!(function.next().await.ns(), vec![0]);
    put_one(&kinesis, "1", reading("1", 1)).await;
    assert_eq!(
        function.next().await.ns(),
        vec![1],
        "record 0 is not sent again"
    );
    let counts = counts_until(&mapping, |c| c.records_delivered == 2).await;
    assert!(counts.iterator_renewals >= 1, "{counts:?}");
}

fn rule_config() -> StreamRuleConfig {
    StreamRuleConfig {
        rule: "sensorbox_readings".into(),
        device_root: "devices".into(),
        stream: STREAM.into(),
        sensors: vec!["gasdetector".into(), "dust".into()],
    }
}

#[tokio::test]
async fn the_rule_puts_basic_ingest_messages_into_the_stream() {
    let broker = Broker::start(any_port()).await.unwrap();
    let kinesis = emulator(2, Duration::from_secs(300)).await;
    let errors = Destination::memory();
    let rule = StreamRule::start(rule_config(), kinesis.client(), errors.clone());
    let rules = IotRules::start_with_stream(
        IotRulesConfig {
            broker: broker.local_addr(),
            device_root: "devices".into(),
            invoke_base: None,
            sensors: vec!["gasdetector".into(), "dust".into()],
        },
        local_aws::shadow::Shadows::default(),
        broker.publisher(),
        Some(rule),
    )
    .await
    .unwrap();
    let publisher = broker.publisher();
    let payload = br#"[{"sensorid":"s1","value":1}]"#;
    // Not the rule's: an unknown sensor and a bad thing name, then the real one.
    for topic in [
        "$aws/rules/sensorbox_readings/devices/pi-19/data/temp/2",
        "$aws/rules/sensorbox_readings/devices/pi.19/data/gasdetector/2",
        "$aws/rules/sensorbox_readings/devices/pi-19/data/gasdetector/2",
    ] {
        publisher
            .publish(topic, Bytes::from_static(payload), 1, false)
            .await
            .unwrap();
    }
    let rule = rules.stream_rule().unwrap();
    let counts = rule
        .wait_until(|c| c.put == 1, WAIT)
        .await
        .expect("the record put");
    assert_eq!((counts.ignored, counts.error_actions), (2, 0));

    let records = read_stream(&kinesis).await;
    assert_eq!(records.len(), 1);
    let (key, data) = &records[0];
    assert_eq!(key, "2", "partitioned by the groupid");
    let data: Value = serde_json::from_slice(data).unwrap();
    use base64::Engine as _;
    assert_eq!(
        data,
        json!({
            "thing": "pi-19",
            "sensor": "gasdetector",
            "groupid": "2",
            "payload": base64::engine::general_purpose::STANDARD.encode(payload),
        })
    );
    assert!(errors.messages().is_empty());
}

#[tokio::test]
async fn a_failed_put_runs_the_error_action() {
    // Nothing listens where the rule's Kinesis is.
    let client = local_aws::kinesis::client(&format!("http://{}", free_port()));
    let errors = Destination::memory();
    let rule = StreamRule::start(rule_config(), client, errors.clone());
    let topic = "$aws/rules/sensorbox_readings/devices/pi-19/data/dust/7";
    assert!(rule.offer(topic, Bytes::from_static(b"[1,2]")));
    assert!(!rule.offer("devices/pi-19/data/dust", Bytes::new()));
    let sent = errors.wait_for(1, WAIT).await.expect("an error action");
    let message = &sent[0];
    assert_eq!(message["ruleName"], "sensorbox_readings");
    assert_eq!(message["topic"], topic);
    assert_eq!(message["clientId"], "pi-19");
    assert_eq!(message["base64OriginalPayload"], "WzEsMl0=");
    assert_eq!(message["failures"][0]["failedAction"], "KinesisAction");
    assert_eq!(message["failures"][0]["failedResource"], STREAM);
    assert!(message["cloudwatchTraceId"].is_string());
    assert_eq!(rule.counts().error_actions, 1);
}

/// moto server from the workspace's venv (`cargo xtask` installs it), if it is there.
struct MotoServer {
    url: String,
    child: std::process::Child,
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn moto() -> Option<MotoServer> {
    let binary =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/moto_server");
    if !binary.exists() {
        eprintln!(
            "moto_server not installed at {}: SQS test skipped",
            binary.display()
        );
        return None;
    }
    let port = free_port().port();
    let child = std::process::Command::new(&binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(std::env::temp_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let moto = MotoServer {
        url: format!("http://127.0.0.1:{port}"),
        child,
    };
    let client = local_aws::destination::sqs_client(&moto.url);
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if client.list_queues().send().await.is_ok() {
            return Some(moto);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("moto_server did not come up");
}

#[tokio::test]
async fn failures_reach_an_sqs_queue_in_moto() {
    let Some(moto) = moto().await else {
        return;
    };
    let destination =
        Destination::sqs_or_log(Some(&moto.url), local_aws::destination::FAILURE_QUEUE);
    let message = json!({"version": "1.0", "KinesisBatchInfo": {"batchSize": 1}});
    destination.send("test", &message).await.unwrap();
    let client = local_aws::destination::sqs_client(&moto.url);
    let url = client
        .get_queue_url()
        .queue_name(local_aws::destination::FAILURE_QUEUE)
        .send()
        .await
        .unwrap();
    let received = client
        .receive_message()
        .queue_url(url.queue_url().unwrap())
        .wait_time_seconds(5)
        .send()
        .await
        .unwrap();
    let body = received.messages()[0].body().unwrap();
    assert_eq!(serde_json::from_str::<Value>(body).unwrap(), message);
}
