//! The local Kinesis Data Stream: the `ferrokinesis` emulator embedded and served on a
//! TCP port of this process's runtime, the stream the stacks create, and the one way this
//! crate talks to it: the real `aws-sdk-kinesis` client ([`client`]).
//!
//! Why `ferrokinesis` and not moto server's Kinesis: both speak the wire protocol the SDK
//! speaks, but only ferrokinesis enforces a shard's write throughput as AWS does
//! (`enforce_limits`: 1 MiB/s and 1,000 records/s per shard, answered with
//! `ProvisionedThroughputExceededException`, per record in `PutRecords`). moto accepts any
//! rate, so a producer that would be throttled on AWS (and a rule whose error action would
//! then fire) passes unnoticed against it. ferrokinesis also expires shard iterators
//! (five minutes, as AWS), which the event source mapping has to survive.
//!
//! What it does not emulate: on-demand capacity mode scaling, enhanced fan-out billing,
//! the read limits (5 `GetRecords` a second per shard, 2 MiB/s), and retention trimming
//! (records stay in memory for the life of the process).

use crate::http::{self, Server};
use aws_sdk_kinesis::types::StreamStatus;
use std::net::SocketAddr;
use std::time::Duration;

/// The stream's name unless configured (`--stream-name`).
pub const DEFAULT_STREAM: &str = "sensor-readings";
/// Shards unless configured (`--stream-shards`).
pub const DEFAULT_SHARDS: u32 = 2;
/// The region and account every local ARN names (the emulator's defaults).
pub const REGION: &str = crate::sdk::REGION;
pub const ACCOUNT: &str = "000000000000";

/// What [`Kinesis::start`] serves.
#[derive(Clone, Debug)]
pub struct KinesisConfig {
    /// Where the emulator listens (port 0: any free port).
    pub addr: SocketAddr,
    /// The stream created on start.
    pub stream: String,
    pub shards: u32,
    /// How long a shard iterator stays valid (AWS: five minutes).
    pub iterator_ttl: Duration,
}

impl KinesisConfig {
    /// The stacks' stream on `addr`: [`DEFAULT_STREAM`], [`DEFAULT_SHARDS`] shards.
    pub fn new(addr: SocketAddr) -> KinesisConfig {
        KinesisConfig {
            addr,
            stream: DEFAULT_STREAM.into(),
            shards: DEFAULT_SHARDS,
            iterator_ttl: Duration::from_secs(300),
        }
    }
}

/// The running emulator with its stream ACTIVE; dropping it stops serving.
pub struct Kinesis {
    server: Server,
    stream: String,
    stream_arn: String,
    client: aws_sdk_kinesis::Client,
}

impl Kinesis {
    /// Serves the emulator on `config.addr` and creates the stream, returning once the
    /// stream is ACTIVE. The error names what failed.
    pub async fn start(config: KinesisConfig) -> Result<Kinesis, String> {
        let options = ferrokinesis::store::StoreOptions {
            // AWS-like per-shard write throttling: the point of this emulator (module doc).
            enforce_limits: true,
            iterator_ttl_seconds: config.iterator_ttl.as_secs().max(1),
            shard_limit: config.shards.max(10),
            aws_account_id: ACCOUNT.into(),
            aws_region: REGION.into(),
            ..Default::default()
        };
        let (router, _store) = ferrokinesis::create_app(options);
        let service = hyper_util::service::TowerToHyperService::new(router);
        let server = http::serve_service(config.addr, service)
            .await
            .map_err(|e| format!("Kinesis emulator cannot listen on {}: {e}", config.addr))?;
        let client = client(&format!("http://{}", server.addr));
        let stream_arn = ensure_stream(&client, &config.stream, config.shards).await?;
        Ok(Kinesis {
            server,
            stream: config.stream,
            stream_arn,
            client,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The endpoint URL an SDK client is given.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    pub fn stream_arn(&self) -> &str {
        &self.stream_arn
    }

    /// A client of this emulator (see [`client`]).
    pub fn client(&self) -> aws_sdk_kinesis::Client {
        self.client.clone()
    }
}

/// The `aws-sdk-kinesis` client for the emulator at `endpoint`: static test credentials,
/// `us-east-1`, the SDK's own retries off (callers retry, and the throttling answer must
/// reach them), 10 s per call.
pub fn client(endpoint: &str) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(&crate::sdk::local(endpoint))
}

/// Creates `stream` with `shards` shards unless it exists, waits until it is ACTIVE and
/// returns its ARN.
pub async fn ensure_stream(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shards: u32,
) -> Result<String, String> {
    let shard_count = i32::try_from(shards).map_err(|_| format!("{shards} shards: too many"))?;
    let created = client
        .create_stream()
        .stream_name(stream)
        .shard_count(shard_count)
        .send()
        .await;
    if let Err(e) = created {
        let exists = e
            .as_service_error()
            .is_some_and(|e| e.is_resource_in_use_exception());
        if !exists {
            return Err(format!(
                "Kinesis: CreateStream {stream}: {}",
                aws_sdk_kinesis::error::DisplayErrorContext(&e)
            ));
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "Kinesis: DescribeStreamSummary {stream}: {}",
                    aws_sdk_kinesis::error::DisplayErrorContext(&e)
                )
            })?;
        if let Some(summary) = summary.stream_description_summary() {
            if summary.stream_status() == &StreamStatus::Active {
                return Ok(summary.stream_arn().to_owned());
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("Kinesis: stream {stream} not ACTIVE within 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
