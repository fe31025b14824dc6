//! Per-reading CPU cost of the request path without I/O: body parse, validation, rules,
//! document (and warning) building, and the `_bulk` body, for one reading and for a full
//! 500-reading batch. Target (DESIGN.md): under 20 us per reading.
//!
//! `cargo bench -p shared --bench pipeline`

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sensor_aws::opensearch::bulk_body;
use sensor_core::pipeline::Pipeline;
use sensor_core::ports::{DownstreamError, IndexOutcome, Indexer, Message, Publisher};
use sensor_lambda::request::{parse_body, Payload};
use sensor_lambda::IngestSettings;
use sensor_model::Sensor;
use std::hint::black_box;

struct NoPublisher;
impl Publisher for NoPublisher {
    async fn publish(&self, _: &Message) -> Result<(), DownstreamError> {
        Ok(())
    }
}

struct NoIndexer;
impl Indexer for NoIndexer {
    async fn create_all(
        &self,
        documents: &[&sensor_model::document::Document],
    ) -> Result<Vec<IndexOutcome>, DownstreamError> {
        Ok(vec![IndexOutcome::Created; documents.len()])
    }
}

fn pipeline() -> Pipeline<NoPublisher, NoIndexer> {
    let config = IngestSettings::from_lookup(Sensor::Gasdetector, |key| match key {
        "AWS_ENDPOINT_URL_IOT_DATA_PLANE" => Some("http://127.0.0.1:1".into()),
        "OPENSEARCH_URL" => Some("http://127.0.0.1:2".into()),
        "OPENSEARCH_AUTH" => Some("none".into()),
        "AWS_REGION" => Some("us-east-1".into()),
        "AWS_ACCESS_KEY_ID" => Some("AKIDBENCH".into()),
        "AWS_SECRET_ACCESS_KEY" => Some("bench".into()),
        _ => None,
    })
    .expect("config");
    Pipeline::new(&config.pipeline, NoPublisher, NoIndexer)
}

/// The request body from DESIGN.md, with no2 over its threshold (one warning).
fn reading(i: usize) -> String {
    format!(
        r#"{{"groupid": "2", "gps": "37.61002501514269, 126.99636868892937",
 "co":     {{"sensorid": "{i:04}", "sensortype": "8",  "value": "26.20", "createdtime": "2021-09-03 18:14:49"}},
 "no2":    {{"sensorid": "0006", "sensortype": "9",  "value": "95.00", "createdtime": "2021-09-03 18:14:49"}},
 "c2h5oh": {{"sensorid": "0007", "sensortype": "27", "value": "26.11", "createdtime": "2021-09-03 18:14:49"}},
 "h2":     {{"sensorid": "0008", "sensortype": "30", "value": "400",   "createdtime": "2021-09-03 18:14:49"}}}}"#
    )
}

/// parse -> validate -> rules + document + warnings -> `_bulk` body; returns the body size.
fn process(pipeline: &Pipeline<NoPublisher, NoIndexer>, body: &[u8], bulk: bool) -> usize {
    let values = match parse_body(body).expect("valid body") {
        Payload::Single(v) => vec![v],
        Payload::Batch(items) => items,
    };
    let received = pipeline.arrival(Utc::now());
    let mut documents = Vec::with_capacity(values.len());
    let mut warnings = 0;
    for value in values {
        let reading = pipeline.validate(value).expect("valid reading");
        let (document, w) = pipeline.check(&reading, received);
        warnings += w.len();
        documents.push(document);
    }
    assert_eq!(warnings, documents.len());
    if bulk {
        let refs: Vec<_> = documents.iter().collect();
        bulk_body(&refs).len()
    } else {
        documents.len()
    }
}

fn benches(c: &mut Criterion) {
    let pipeline = pipeline();
    let single = reading(1).into_bytes();
    let batch = format!("[{}]", (0..500).map(reading).collect::<Vec<_>>().join(",")).into_bytes();

    let mut group = c.benchmark_group("per_reading");
    group.throughput(Throughput::Elements(1));
    group.bench_function("single: parse+validate+rules+document", |b| {
        b.iter(|| process(&pipeline, black_box(&single), false))
    });
    group.bench_function("single: ... + _bulk body", |b| {
        b.iter(|| process(&pipeline, black_box(&single), true))
    });
    group.finish();

    let mut group = c.benchmark_group("batch_500");
    group.throughput(Throughput::Elements(500));
    group.sample_size(30);
    group.bench_function("batch: parse+validate+rules+document", |b| {
        b.iter(|| process(&pipeline, black_box(&batch), false))
    });
    group.bench_function("batch: ... + _bulk body", |b| {
        b.iter_batched(
            || (),
            |_| process(&pipeline, black_box(&batch), true),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(pipeline_benches, benches);
criterion_main!(pipeline_benches);
