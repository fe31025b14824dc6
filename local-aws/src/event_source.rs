//! A small Kinesis event source mapping: what Lambda's pollers do for the stacks' ESMs,
//! built here only because no maintained local one exists. One [`EventSourceMapping`]
//! per function; per shard one task with its own shard iterator, at most one batch in
//! flight (ParallelizationFactor 1), so records reach the function in shard order.
//!
//! Implemented, after Lambda's documentation ("Using Lambda with Kinesis", partial batch
//! responses, on-failure destinations, event filtering):
//! - polling: `ListShards` once, `GetShardIterator` `TRIM_HORIZON`, then `GetRecords`
//!   (`Limit` = BatchSize, at most 10,000) at once again while a call returns records,
//!   else after `poll_interval` (Lambda: once a second) or when the batching window ends;
//!   an expired iterator is renewed `AFTER_SEQUENCE_NUMBER` of the checkpoint (the
//!   records read after it are read again).
//! - FilterCriteria `{"data":{"sensor":["<sensor>"]}}`: a record whose data is a JSON
//!   object with that `sensor` string is delivered; any other record (another sensor, not
//!   JSON) is skipped without an invocation and counts as processed.
//! - batching: the function is invoked once BatchSize matching records are gathered, once
//!   MaximumBatchingWindow has passed since the first record of the batch was read, or
//!   when one more record would take the event past 6 MB (Lambda's synchronous payload
//!   limit). Window 0 invokes with whatever one `GetRecords` returned.
//! - the event: Lambda's Kinesis event (`Records[].kinesis{kinesisSchemaVersion,
//!   partitionKey, sequenceNumber, data, approximateArrivalTimestamp}`, `eventSource`,
//!   `eventVersion`, `eventID` = `<shardId>:<sequenceNumber>`, `eventName`,
//!   `invokeIdentityArn`, `awsRegion`, `eventSourceARN`), through the Lambda invoke API
//!   (`cargo lambda watch`).
//! - the answer ([`judge`], then [`plan`]), ReportBatchItemFailures on:
//!   - `null`, `{}`, no or `null` or empty `batchItemFailures`: all succeeded, the
//!     checkpoint moves past the batch;
//!   - `{"batchItemFailures":[{"itemIdentifier": <seq>}, ...]}`: the records before the
//!     lowest listed sequence number succeeded (checkpointed, never sent again); the
//!     rest is retried from it, which counts as a retry;
//!   - an empty, null, missing or unknown `itemIdentifier`, or an answer of another
//!     shape: the whole batch failed, handled as a function error;
//!   - a function error (`X-Amz-Function-Error`, no answer within the timeout, the
//!     connection dropped mid-invocation): with BisectBatchOnFunctionError a batch of
//!     two or more is split in two and each half retried, first half first; a split does
//!     not count as a retry (the halves keep the batch's retry count). A batch of one,
//!     or without bisect, is retried, which counts.
//!   - nothing listening at the invoke URL (`cargo lambda watch` restarting): the
//!     function never ran, so the same batch is retried after a pause without using a
//!     retry attempt (logged).
//! - retries wait `backoff` (200 ms doubling to 5 s locally); after MaximumRetryAttempts
//!   retries the (sub)batch is given up (condition `RetryAttemptsExhausted`), and before
//!   each invocation records older than MaximumRecordAge are given up
//!   (`RecordAgeExceeded`): Lambda's on-failure record (`requestContext`,
//!   `responseContext`, `version`, `timestamp`, `KinesisBatchInfo`) goes to the
//!   [`Destination`] (`StreamFailureQueue`), the checkpoint moves past those records and
//!   the shard goes on, so a poison record never blocks it.
//!
//! Not implemented: resharding (shards are listed once; no parent-before-child order),
//! ParallelizationFactor above 1, tumbling windows, enhanced fan-out, `AT_TIMESTAMP`/
//! `LATEST` starting positions, filters other than `data.sensor`, checkpoints that
//! survive a restart (a restarted poller reads from `TRIM_HORIZON` again: at-least-once,
//! as the function must be anyway).

use crate::destination::Destination;
use crate::invoke::{self, InvokeClient, InvokeError};
use aws_sdk_kinesis::types::ShardIteratorType;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Lambda's synchronous invocation payload limit, which bounds a batch's event.
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024;
/// `{"Records":[]}`.
const ENVELOPE: usize = 14;
/// The largest `GetRecords` limit.
const MAX_GET: usize = 10_000;

/// One mapping's settings: the ESM's parameters and the local timings.
#[derive(Clone, Debug)]
pub struct MappingConfig {
    /// The function invoked (`gasdetector`).
    pub function: String,
    /// FilterCriteria on `data.sensor` (`None`: every record).
    pub sensor: Option<String>,
    /// BatchSize (1 to 10,000).
    pub batch_size: usize,
    /// MaximumBatchingWindowInSeconds.
    pub window: Duration,
    /// MaximumRetryAttempts (`None`: -1, retry until the record is too old).
    pub max_retries: Option<u32>,
    /// MaximumRecordAgeInSeconds (`None`: -1).
    pub max_record_age: Option<Duration>,
    /// BisectBatchOnFunctionError.
    pub bisect: bool,
    /// How long an invocation may take before it counts as a function error.
    pub invoke_timeout: Duration,
    /// The pause between `GetRecords` calls that returned nothing (Lambda: 1 s).
    pub poll_interval: Duration,
    /// The first pause before a retry, doubled each time up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// One line per invocation on stderr.
    pub log: bool,
}

impl MappingConfig {
    /// The stacks' mapping for `function`: filtered on its sensor, BatchSize 1,000,
    /// ReportBatchItemFailures, bisect on, 5 retries, records up to 6 hours old; locally a
    /// 1 s window (the stacks: 5 s), 200 ms to 5 s between retries.
    pub fn new(function: &str) -> MappingConfig {
        MappingConfig {
            function: function.to_owned(),
            sensor: Some(function.to_owned()),
            batch_size: 1000,
            window: Duration::from_secs(1),
            max_retries: Some(5),
            max_record_age: Some(Duration::from_secs(21_600)),
            bisect: true,
            invoke_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(1),
            backoff: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            log: true,
        }
    }
}

/// What a mapping did so far (all its shards).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Invocations that reached the function (unreachable attempts not included).
    pub invocations: u64,
    pub records_read: u64,
    /// Records the filter skipped.
    pub records_filtered: u64,
    /// Records the function processed: checkpointed as succeeded.
    pub records_delivered: u64,
    /// Retries (after item failures or function errors; not splits, not unreachable).
    pub retries: u64,
    pub bisects: u64,
    /// Attempts that found nothing listening at the invoke URL.
    pub unreachable: u64,
    /// (Sub)batches given up and sent to the on-failure destination.
    pub failed_batches: u64,
    /// Shard iterators renewed after they expired.
    pub iterator_renewals: u64,
}

/// What the function's invocation gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Its result JSON.
    Response(Value),
    /// A function error, a timeout, or the connection lost mid-invocation.
    FunctionError(String),
    /// Nothing accepted the connection: the function never ran.
    Unreachable(String),
}

/// What an answer means for the batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every record succeeded.
    Succeeded,
    /// The records from this index on failed (the lowest reported sequence number).
    FailedFrom(usize),
    /// A malformed partial response: the whole batch failed.
    BatchFailed(String),
    FunctionError(String),
    Unreachable(String),
}

/// What the poller does next with the batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Checkpoint past the batch.
    Done,
    /// Checkpoint before `from`, retry the rest (a retry attempt).
    Retry { from: usize },
    /// Split in two, retry each half (no retry attempt used).
    Bisect,
    /// Checkpoint before `from`, send the rest to the on-failure destination.
    GiveUp { from: usize, function_error: bool },
    /// The function never ran: wait, then the same batch again.
    Wait,
}

/// Reads the function's `answer` to a batch whose records have `sequence_numbers`, in
/// order, as Lambda reads a partial batch response.
pub fn judge(answer: &Answer, sequence_numbers: &[&str]) -> Verdict {
    let response = match answer {
        Answer::Response(response) => response,
        Answer::FunctionError(why) => return Verdict::FunctionError(why.clone()),
        Answer::Unreachable(why) => return Verdict::Unreachable(why.clone()),
    };
    let failures = match response {
        Value::Null => return Verdict::Succeeded,
        Value::Object(fields) => match fields.get("batchItemFailures") {
            None | Some(Value::Null) => return Verdict::Succeeded,
            Some(Value::Array(failures)) => failures,
            Some(other) => {
                return Verdict::BatchFailed(format!("batchItemFailures is not a list: {other}"))
            }
        },
        other => return Verdict::BatchFailed(format!("not a batch response: {other}")),
    };
    let mut lowest: Option<usize> = None;
    for failure in failures {
        let identifier = failure.get("itemIdentifier").and_then(Value::as_str);
        let index = identifier
            .filter(|id| !id.is_empty())
            .and_then(|id| sequence_numbers.iter().position(|seq| *seq == id));
        match index {
            Some(index) => lowest = Some(lowest.map_or(index, |l| l.min(index))),
            None => {
                return Verdict::BatchFailed(format!(
                    "itemIdentifier not a sequence number of the batch: {failure}"
                ))
            }
        }
    }
    match lowest {
        Some(index) => Verdict::FailedFrom(index),
        None => Verdict::Succeeded,
    }
}

/// What to do after `verdict` for a (sub)batch of `len` records retried `retries` times.
pub fn plan(
    verdict: &Verdict,
    len: usize,
    retries: u32,
    bisect: bool,
    max_retries: Option<u32>,
) -> Action {
    let exhausted = max_retries.is_some_and(|max| retries >= max);
    match verdict {
        Verdict::Succeeded => Action::Done,
        Verdict::Unreachable(_) => Action::Wait,
        Verdict::FailedFrom(from) if exhausted => Action::GiveUp {
            from: *from,
            function_error: false,
        },
        Verdict::FailedFrom(from) => Action::Retry { from: *from },
        Verdict::BatchFailed(_) | Verdict::FunctionError(_) if bisect && len > 1 => Action::Bisect,
        Verdict::BatchFailed(_) | Verdict::FunctionError(_) if exhausted => Action::GiveUp {
            from: 0,
            function_error: matches!(verdict, Verdict::FunctionError(_)),
        },
        Verdict::BatchFailed(_) | Verdict::FunctionError(_) => Action::Retry { from: 0 },
    }
}

/// Whether a record's `data` passes the mapping's filter on `data.sensor`.
pub fn matches(sensor: Option<&str>, data: &[u8]) -> bool {
    let Some(sensor) = sensor else {
        return true;
    };
    serde_json::from_slice::<Value>(data)
        .ok()
        .and_then(|data| data.get("sensor").cloned())
        .is_some_and(|value| value == sensor)
}

/// The running mapping; dropping it stops its pollers.
pub struct EventSourceMapping {
    function: String,
    counts: watch::Sender<Counts>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for EventSourceMapping {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Where a mapping reads and invokes.
#[derive(Clone, Debug)]
pub struct Source {
    pub stream: String,
    pub stream_arn: String,
    /// The Lambda invoke API base (`cargo lambda watch`).
    pub invoke_base: String,
}

struct Context {
    kinesis: aws_sdk_kinesis::Client,
    source: Source,
    config: MappingConfig,
    failures: Destination,
    invoke: InvokeClient,
    url: String,
    counts: watch::Sender<Counts>,
}

impl EventSourceMapping {
    /// Lists the stream's shards and starts one poller per shard (on the current runtime).
    pub async fn start(
        kinesis: aws_sdk_kinesis::Client,
        source: Source,
        config: MappingConfig,
        failures: Destination,
    ) -> Result<EventSourceMapping, String> {
        let listed = kinesis
            .list_shards()
            .stream_name(&source.stream)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "ListShards {}: {}",
                    source.stream,
                    aws_sdk_kinesis::error::DisplayErrorContext(&e)
                )
            })?;
        let shards: Vec<String> = listed
            .shards()
            .iter()
            .map(|s| s.shard_id().to_owned())
            .collect();
        let counts = watch::channel(Counts::default()).0;
        let function = config.function.clone();
        let context = Arc::new(Context {
            url: invoke::url(&source.invoke_base, &config.function),
            kinesis,
            source,
            config,
            failures,
            invoke: invoke::client(),
            counts: counts.clone(),
        });
        let tasks = shards
            .into_iter()
            .map(|shard| {
                let poller = ShardPoller {
                    context: context.clone(),
                    shard,
                    checkpoint: None,
                    last_read: None,
                };
                tokio::spawn(poller.run())
            })
            .collect();
        Ok(EventSourceMapping {
            function,
            counts,
            tasks,
        })
    }

    pub fn function(&self) -> &str {
        &self.function
    }

    pub fn counts(&self) -> Counts {
        *self.counts.borrow()
    }

    /// Waits until the counts satisfy `done`; `None` after `wait`.
    pub async fn wait_until(
        &self,
        done: impl Fn(&Counts) -> bool,
        wait: Duration,
    ) -> Option<Counts> {
        crate::counters::wait_until(&self.counts, done, wait).await
    }
}

/// A record read, with its event JSON made once.
struct Record {
    sequence_number: String,
    /// Epoch seconds (milliseconds precision), as the event carries it.
    arrival: f64,
    /// When the poller read it (the batching window starts at the batch's first).
    read_at: Instant,
    event: Value,
    /// The bytes it adds to the event.
    size: usize,
}

/// A (sub)batch on its way through retries and splits.
struct Attempt {
    records: Vec<Record>,
    retries: u32,
    invocations: u32,
}

enum ReadError {
    Expired,
    Other(String),
}

struct ShardPoller {
    context: Arc<Context>,
    shard: String,
    /// The last sequence number handled (delivered, skipped or given up).
    checkpoint: Option<String>,
    last_read: Option<String>,
}

impl ShardPoller {
    async fn run(mut self) {
        let config = &self.context.config.clone();
        let mut iterator: Option<String> = None;
        let mut pending: VecDeque<Record> = VecDeque::new();
        let mut pending_bytes = 0usize;
        let mut errors = 0u32;
        loop {
            if let Some(first) = pending.front() {
                let full =
                    pending.len() >= config.batch_size || ENVELOPE + pending_bytes >= MAX_PAYLOAD;
                if full || first.read_at.elapsed() >= config.window {
                    let batch = take_batch(&mut pending, &mut pending_bytes, config.batch_size);
                    self.deliver(batch).await;
                    if pending.is_empty() {
                        self.checkpoint = self.last_read.clone();
                    }
                    continue;
                }
            }
            let current = match iterator.take() {
                Some(current) => current,
                None => match self.shard_iterator().await {
                    Ok(current) => current,
                    Err(why) => {
                        errors += 1;
                        self.log_error(&why);
                        tokio::time::sleep(self.backoff(errors)).await;
                        continue;
                    }
                },
            };
            let limit = config.batch_size.clamp(1, MAX_GET) as i32;
            match self.read(&current, limit).await {
                Ok((records, next)) => {
                    errors = 0;
                    let got = !records.is_empty();
                    for record in records {
                        self.take(record, &mut pending, &mut pending_bytes);
                    }
                    let Some(next) = next else {
                        // A closed shard: hand over what is left, then stop.
                        while !pending.is_empty() {
                            let batch =
                                take_batch(&mut pending, &mut pending_bytes, config.batch_size);
                            self.deliver(batch).await;
                        }
                        return;
                    };
                    iterator = Some(next);
                    if !got {
                        let mut pause = config.poll_interval;
                        if let Some(first) = pending.front() {
                            pause =
                                pause.min(config.window.saturating_sub(first.read_at.elapsed()));
                        }
                        tokio::time::sleep(pause).await;
                    }
                }
                Err(ReadError::Expired) => {
                    // Renewed after the checkpoint: what was read after it is read again.
                    self.count(|c| c.iterator_renewals += 1);
                    pending.clear();
                    pending_bytes = 0;
                    self.last_read = self.checkpoint.clone();
                }
                Err(ReadError::Other(why)) => {
                    errors += 1;
                    self.log_error(&why);
                    if errors < 3 {
                        iterator = Some(current);
                    } else {
                        // Perhaps the iterator itself: a new one after the checkpoint.
                        pending.clear();
                        pending_bytes = 0;
                        self.last_read = self.checkpoint.clone();
                    }
                    tokio::time::sleep(self.backoff(errors)).await;
                }
            }
        }
    }

    /// A record just read: into the batch if it passes the filter, else skipped.
    fn take(
        &mut self,
        record: aws_sdk_kinesis::types::Record,
        pending: &mut VecDeque<Record>,
        pending_bytes: &mut usize,
    ) {
        let sequence_number = record.sequence_number().to_owned();
        self.last_read = Some(sequence_number.clone());
        self.count(|c| c.records_read += 1);
        let sensor = self.context.config.sensor.as_deref();
        if !matches(sensor, record.data().as_ref()) {
            self.count(|c| c.records_filtered += 1);
            if pending.is_empty() {
                self.checkpoint = Some(sequence_number);
            }
            return;
        }
        let arrival = record
            .approximate_arrival_timestamp()
            .map_or_else(now_secs, |t| (t.as_secs_f64() * 1000.0).round() / 1000.0);
        let event = self.event_record(&record, arrival);
        let size = event.to_string().len() + 1;
        *pending_bytes += size;
        pending.push_back(Record {
            sequence_number,
            arrival,
            read_at: Instant::now(),
            event,
            size,
        });
    }

    fn event_record(&self, record: &aws_sdk_kinesis::types::Record, arrival: f64) -> Value {
        use base64::Engine as _;
        let source = &self.context.source;
        json!({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": record.partition_key().unwrap_or_default(),
                "sequenceNumber": record.sequence_number(),
                "data": base64::engine::general_purpose::STANDARD.encode(record.data().as_ref()),
                "approximateArrivalTimestamp": arrival,
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": format!("{}:{}", self.shard, record.sequence_number()),
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": format!("arn:aws:iam::{}:role/local-stream-poller", crate::kinesis::ACCOUNT),
            "awsRegion": crate::kinesis::REGION,
            "eventSourceARN": source.stream_arn,
        })
    }

    /// Invokes the function with `batch` until it is done with, given up or the poller
    /// stops: the retries, splits and pauses of the module doc.
    async fn deliver(&mut self, batch: Vec<Record>) {
        let config = self.context.config.clone();
        let mut work = VecDeque::from([Attempt {
            records: batch,
            retries: 0,
            invocations: 0,
        }]);
        let mut waited = 0u32;
        while let Some(mut attempt) = work.pop_front() {
            if let Some(max_age) = config.max_record_age {
                let now = now_secs();
                let expired = attempt
                    .records
                    .iter()
                    .take_while(|r| now - r.arrival > max_age.as_secs_f64())
                    .count();
                if expired > 0 {
                    let old: Vec<Record> = attempt.records.drain(..expired).collect();
                    self.give_up(&old, "RecordAgeExceeded", attempt.invocations, false)
                        .await;
                    if attempt.records.is_empty() {
                        continue;
                    }
                }
            }
            let answer = self.invoke(&attempt.records).await;
            if !matches!(answer, Answer::Unreachable(_)) {
                attempt.invocations += 1;
                self.count(|c| c.invocations += 1);
            }
            let sequence_numbers: Vec<&str> = attempt
                .records
                .iter()
                .map(|r| r.sequence_number.as_str())
                .collect();
            let verdict = judge(&answer, &sequence_numbers);
            let action = plan(
                &verdict,
                attempt.records.len(),
                attempt.retries,
                config.bisect,
                config.max_retries,
            );
            let len = attempt.records.len();
            let mut pause = None;
            match action.clone() {
                Action::Done => self.succeeded(&attempt.records),
                Action::Retry { from } => {
                    let done: Vec<Record> = attempt.records.drain(..from).collect();
                    self.succeeded(&done);
                    attempt.retries += 1;
                    self.count(|c| c.retries += 1);
                    pause = Some(self.backoff(attempt.retries));
                    work.push_front(attempt);
                }
                Action::Bisect => {
                    self.count(|c| c.bisects += 1);
                    let second = attempt.records.split_off(attempt.records.len() / 2);
                    for half in [second, attempt.records] {
                        work.push_front(Attempt {
                            records: half,
                            retries: attempt.retries,
                            invocations: 0,
                        });
                    }
                }
                Action::GiveUp {
                    from,
                    function_error,
                } => {
                    let done: Vec<Record> = attempt.records.drain(..from).collect();
                    self.succeeded(&done);
                    self.give_up(
                        &attempt.records,
                        "RetryAttemptsExhausted",
                        attempt.invocations,
                        function_error,
                    )
                    .await;
                }
                Action::Wait => {
                    waited += 1;
                    self.count(|c| c.unreachable += 1);
                    pause = Some(self.backoff(waited));
                    work.push_front(attempt);
                }
            }
            self.log_invocation(len, &verdict, &action);
            if let Some(pause) = pause {
                tokio::time::sleep(pause).await;
            }
        }
    }

    async fn invoke(&self, records: &[Record]) -> Answer {
        let event = json!({
            "Records": records.iter().map(|r| r.event.clone()).collect::<Vec<_>>(),
        });
        let timeout = self.context.config.invoke_timeout;
        match invoke::invoke(&self.context.invoke, &self.context.url, &event, timeout).await {
            Ok(response) => Answer::Response(response),
            Err(InvokeError::Unreachable(why)) => Answer::Unreachable(why),
            Err(InvokeError::Failed(why)) => Answer::FunctionError(why),
        }
    }

    fn succeeded(&mut self, records: &[Record]) {
        if let Some(last) = records.last() {
            self.checkpoint = Some(last.sequence_number.clone());
            let n = records.len() as u64;
            self.count(|c| c.records_delivered += n);
        }
    }

    /// Lambda's on-failure record for `records` to the destination; the checkpoint moves
    /// past them either way (a destination that cannot take it has logged it).
    async fn give_up(
        &mut self,
        records: &[Record],
        condition: &str,
        invocations: u32,
        function_error: bool,
    ) {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return;
        };
        let mut response = json!({"statusCode": 200, "executedVersion": "$LATEST"});
        if function_error {
            response["functionError"] = json!("Unhandled");
        }
        let message = json!({
            "requestContext": {
                "requestId": crate::http::request_id(),
                "functionArn": format!(
                    "arn:aws:lambda:{}:{}:function:{}",
                    crate::kinesis::REGION,
                    crate::kinesis::ACCOUNT,
                    self.context.config.function
                ),
                "condition": condition,
                "approximateInvokeCount": invocations,
            },
            "responseContext": response,
            "version": "1.0",
            "timestamp": iso_millis(now_secs()),
            "KinesisBatchInfo": {
                "shardId": self.shard,
                "startSequenceNumber": first.sequence_number,
                "endSequenceNumber": last.sequence_number,
                "approximateArrivalOfFirstRecord": iso_millis(first.arrival),
                "approximateArrivalOfLastRecord": iso_millis(last.arrival),
                "batchSize": records.len(),
                "streamArn": self.context.source.stream_arn,
            },
        });
        eprintln!(
            "local-aws: stream: {} {}: {} records given up ({condition}) after {invocations} invocations",
            self.context.config.function,
            self.shard,
            records.len()
        );
        let what = format!("{} on-failure destination", self.context.config.function);
        let _ = self.context.failures.send(&what, &message).await;
        self.checkpoint = Some(last.sequence_number.clone());
        self.count(|c| c.failed_batches += 1);
    }

    async fn shard_iterator(&self) -> Result<String, String> {
        let request = self
            .context
            .kinesis
            .get_shard_iterator()
            .stream_name(&self.context.source.stream)
            .shard_id(&self.shard);
        let request = match &self.checkpoint {
            Some(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(sequence),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let answer = request.send().await.map_err(|e| {
            format!(
                "GetShardIterator: {}",
                aws_sdk_kinesis::error::DisplayErrorContext(&e)
            )
        })?;
        answer
            .shard_iterator()
            .map(str::to_owned)
            .ok_or_else(|| "GetShardIterator answered no iterator".to_owned())
    }

    async fn read(
        &self,
        iterator: &str,
        limit: i32,
    ) -> Result<(Vec<aws_sdk_kinesis::types::Record>, Option<String>), ReadError> {
        let answer = self
            .context
            .kinesis
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await;
        match answer {
            Ok(answer) => {
                let next = answer.next_shard_iterator().map(str::to_owned);
                Ok((answer.records, next))
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_expired_iterator_exception()) =>
            {
                Err(ReadError::Expired)
            }
            Err(e) => Err(ReadError::Other(format!(
                "GetRecords: {}",
                aws_sdk_kinesis::error::DisplayErrorContext(&e)
            ))),
        }
    }

    /// The pause before the `n`th retry: `backoff`, doubled each time, at most `backoff_max`.
    fn backoff(&self, n: u32) -> Duration {
        let config = &self.context.config;
        let doubled = config
            .backoff
            .saturating_mul(1u32 << n.saturating_sub(1).min(16));
        doubled.min(config.backoff_max)
    }

    fn count(&self, change: impl FnOnce(&mut Counts)) {
        self.context.counts.send_modify(change);
    }

    fn log_error(&self, why: &str) {
        eprintln!(
            "local-aws: stream: {} {}: {why}",
            self.context.config.function, self.shard
        );
    }

    fn log_invocation(&self, records: usize, verdict: &Verdict, action: &Action) {
        let unreachable = matches!(verdict, Verdict::Unreachable(_));
        if !self.context.config.log && !unreachable {
            return;
        }
        let outcome = match verdict {
            Verdict::Succeeded => "ok".to_owned(),
            Verdict::FailedFrom(index) => format!("item failures from record {index}"),
            Verdict::BatchFailed(why) => format!("malformed answer, whole batch failed: {why}"),
            Verdict::FunctionError(why) => format!("function error: {why}"),
            Verdict::Unreachable(why) => format!("function unreachable, waiting: {why}"),
        };
        let c = self.context.counts.borrow();
        eprintln!(
            "local-aws: stream: {} {}: {records} records: {outcome} -> {action:?} (invocations {}, delivered {}, retries {}, bisects {}, failed batches {})",
            self.context.config.function,
            self.shard,
            c.invocations,
            c.records_delivered,
            c.retries,
            c.bisects,
            c.failed_batches
        );
    }
}

/// The next batch from `pending`: up to `batch_size` records whose event stays within
/// [`MAX_PAYLOAD`] (at least one record).
fn take_batch(
    pending: &mut VecDeque<Record>,
    pending_bytes: &mut usize,
    batch_size: usize,
) -> Vec<Record> {
    let mut batch = Vec::new();
    let mut bytes = ENVELOPE;
    while let Some(next) = pending.front() {
        let full = batch.len() >= batch_size.max(1) || bytes + next.size > MAX_PAYLOAD;
        if full && !batch.is_empty() {
            break;
        }
        bytes += next.size;
        *pending_bytes = pending_bytes.saturating_sub(next.size);
        if let Some(record) = pending.pop_front() {
            batch.push(record);
        }
    }
    batch
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `2019-11-14T00:38:04.835Z` for epoch seconds.
fn iso_millis(secs: f64) -> String {
    chrono::DateTime::from_timestamp_millis((secs * 1000.0).round() as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEQS: [&str; 3] = ["101", "102", "103"];

    fn response(value: Value) -> Answer {
        Answer::Response(value)
    }

    /// `verdict` without its explanation, for comparing kinds.
    fn kind(verdict: Verdict) -> Verdict {
        match verdict {
            Verdict::BatchFailed(_) => Verdict::BatchFailed(String::new()),
            Verdict::FunctionError(_) => Verdict::FunctionError(String::new()),
            Verdict::Unreachable(_) => Verdict::Unreachable(String::new()),
            other => other,
        }
    }

    #[test]
    fn answers_are_read_as_lambda_reads_them() {
        let failed = Verdict::BatchFailed(String::new());
        let ok = Verdict::Succeeded;
        let cases = [
            ("null", response(Value::Null), ok.clone()),
            ("{}", response(json!({})), ok.clone()),
            (
                "null list",
                response(json!({"batchItemFailures": null})),
                ok.clone(),
            ),
            (
                "empty list",
                response(json!({"batchItemFailures": []})),
                ok.clone(),
            ),
            (
                "other fields only",
                response(json!({"statusCode": 200})),
                ok.clone(),
            ),
            (
                "one failure",
                response(json!({"batchItemFailures": [{"itemIdentifier": "102"}]})),
                Verdict::FailedFrom(1),
            ),
            (
                "the lowest of several, in any order",
                response(json!({"batchItemFailures": [
                    {"itemIdentifier": "103"}, {"itemIdentifier": "102"}, {"itemIdentifier": "103"}
                ]})),
                Verdict::FailedFrom(1),
            ),
            (
                "the first record",
                response(json!({"batchItemFailures": [{"itemIdentifier": "101"}]})),
                Verdict::FailedFrom(0),
            ),
            (
                "unknown identifier",
                response(json!({"batchItemFailures": [{"itemIdentifier": "999"}]})),
                failed.clone(),
            ),
            (
                "one known, one unknown",
                response(json!({"batchItemFailures": [
                    {"itemIdentifier": "102"}, {"itemIdentifier": "999"}
                ]})),
                failed.clone(),
            ),
            (
                "empty identifier",
                response(json!({"batchItemFailures": [{"itemIdentifier": ""}]})),
                failed.clone(),
            ),
            (
                "null identifier",
                response(json!({"batchItemFailures": [{"itemIdentifier": null}]})),
                failed.clone(),
            ),
            (
                "wrong key name",
                response(json!({"batchItemFailures": [{"itemId": "102"}]})),
                failed.clone(),
            ),
            (
                "numeric identifier",
                response(json!({"batchItemFailures": [{"itemIdentifier": 102}]})),
                failed.clone(),
            ),
            (
                "not a list",
                response(json!({"batchItemFailures": "102"})),
                failed.clone(),
            ),
            ("a string", response(json!("ok")), failed.clone()),
            ("a list", response(json!([])), failed.clone()),
            (
                "function error",
                Answer::FunctionError("Unhandled".into()),
                Verdict::FunctionError(String::new()),
            ),
            (
                "unreachable",
                Answer::Unreachable("refused".into()),
                Verdict::Unreachable(String::new()),
            ),
        ];
        for (name, answer, expected) in cases {
            assert_eq!(kind(judge(&answer, &SEQS)), expected, "{name}");
        }
    }

    #[test]
    fn plans_follow_retries_bisect_and_limits() {
        let error = Verdict::FunctionError("x".into());
        let malformed = Verdict::BatchFailed("x".into());
        let some = Some(2);
        let cases = [
            // verdict, len, retries, bisect, max, action
            (Verdict::Succeeded, 3, 0, true, some, Action::Done),
            (Verdict::Succeeded, 3, 2, true, some, Action::Done),
            (
                Verdict::FailedFrom(1),
                3,
                0,
                true,
                some,
                Action::Retry { from: 1 },
            ),
            (
                Verdict::FailedFrom(1),
                3,
                1,
                true,
                some,
                Action::Retry { from: 1 },
            ),
            (
                Verdict::FailedFrom(1),
                3,
                2,
                true,
                some,
                Action::GiveUp {
                    from: 1,
                    function_error: false,
                },
            ),
            (
                Verdict::FailedFrom(0),
                3,
                9,
                true,
                None,
                Action::Retry { from: 0 },
            ),
            // A split uses no retry, whatever the count so far.
            (error.clone(), 3, 0, true, some, Action::Bisect),
            (error.clone(), 2, 2, true, some, Action::Bisect),
            (malformed.clone(), 2, 0, true, some, Action::Bisect),
            (error.clone(), 1, 0, true, some, Action::Retry { from: 0 }),
            (error.clone(), 3, 1, false, some, Action::Retry { from: 0 }),
            (
                error.clone(),
                1,
                2,
                true,
                some,
                Action::GiveUp {
                    from: 0,
                    function_error: true,
                },
            ),
            (
                malformed.clone(),
                1,
                2,
                true,
                some,
                Action::GiveUp {
                    from: 0,
                    function_error: false,
                },
            ),
            (
                error.clone(),
                1,
                0,
                false,
                Some(0),
                Action::GiveUp {
                    from: 0,
                    function_error: true,
                },
            ),
            (
                error.clone(),
                1,
                1000,
                false,
                None,
                Action::Retry { from: 0 },
            ),
            // Unreachable never uses a retry, even when none are left.
            (
                Verdict::Unreachable("x".into()),
                3,
                2,
                true,
                some,
                Action::Wait,
            ),
            (
                Verdict::Unreachable("x".into()),
                1,
                0,
                false,
                Some(0),
                Action::Wait,
            ),
        ];
        for (verdict, len, retries, bisect, max, expected) in cases {
            assert_eq!(
                plan(&verdict, len, retries, bisect, max),
                expected,
                "{verdict:?} len {len} retries {retries} bisect {bisect} max {max:?}"
            );
        }
    }

    #[test]
    fn the_filter_is_data_sensor() {
        let gas = Some("gasdetector");
        assert!(matches(gas, br#"{"sensor":"gasdetector","thing":"a"}"#));
        assert!(!matches(gas, br#"{"sensor":"dust"}"#));
        assert!(!matches(gas, br#"{"thing":"a"}"#));
        assert!(!matches(gas, br#"{"sensor":["gasdetector"]}"#));
        assert!(!matches(gas, b"not json"));
        assert!(!matches(gas, br#""gasdetector""#));
        assert!(matches(None, b"anything"));
    }

    fn record(sequence_number: &str, size: usize) -> Record {
        Record {
            sequence_number: sequence_number.into(),
            arrival: 0.0,
            read_at: Instant::now(),
            event: Value::Null,
            size,
        }
    }

    #[test]
    fn batches_stop_at_the_size_or_the_payload_limit() {
        let mut pending: VecDeque<Record> = (0..5).map(|i| record(&i.to_string(), 10)).collect();
        let mut bytes = 50;
        let batch = take_batch(&mut pending, &mut bytes, 2);
        assert_eq!(batch.len(), 2);
        assert_eq!((pending.len(), bytes), (3, 30));

        let big = MAX_PAYLOAD / 2;
        let mut pending: VecDeque<Record> = (0..3).map(|i| record(&i.to_string(), big)).collect();
        let mut bytes = 3 * big;
        // Two halves plus the envelope exceed the limit: one record a batch.
        assert_eq!(take_batch(&mut pending, &mut bytes, 100).len(), 1);
        // A record larger than the limit still goes, alone.
        let mut pending = VecDeque::from([record("1", MAX_PAYLOAD + 1), record("2", 1)]);
        let mut bytes = MAX_PAYLOAD + 2;
        assert_eq!(take_batch(&mut pending, &mut bytes, 100).len(), 1);
        assert_eq!(take_batch(&mut pending, &mut bytes, 100).len(), 1);
        assert_eq!(bytes, 0);
    }

    #[test]
    fn failure_records_use_iso_times() {
        assert_eq!(iso_millis(1573691884.835), "2019-11-14T00:38:04.835Z");
    }
}
