//! Durable enqueue: one reading per transaction (one fsync each, a box's steady state of a
//! few readings a minute) against a batch of 100 in one transaction (a burst, or readings
//! held for the clock). On the queue file in a temporary directory of this machine's disk.
//! `cargo bench -p sensorbox --bench enqueue`; figures in BENCHMARKS.md.

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sensor_model::Sensor;
use sensorbox::queue::Queue;
use sensorbox::reading::QueuedReading;

fn reading(n: u64) -> QueuedReading {
    let created = Utc
        .timestamp_opt(1_800_000_000 + n as i64, 0)
        .single()
        .expect("time");
    QueuedReading {
        route: Sensor::Gasdetector,
        doc_id: format!("bench-{n}"),
        created,
        body: format!(
            r#"{{"groupid":"2","gps":"37.61002501514269, 126.99636868892937","no2":{{"sensorid":"0006","sensortype":"9","value":"{n}","createdtime":"2027-01-15T08:00:00.000001Z"}}}}"#
        ),
    }
}

fn enqueue(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut queue = Queue::open(&dir.path().join("bench.db"), 10_000_000).expect("queue");
    let mut n = 0u64;
    let mut group = c.benchmark_group("enqueue");
    group.sample_size(30);
    group.throughput(Throughput::Elements(1));
    group.bench_function("one reading per transaction", |b| {
        b.iter(|| {
            n += 1;
            queue.enqueue(&[reading(n)]).expect("enqueue");
        })
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("100 readings in one transaction", |b| {
        b.iter(|| {
            let batch: Vec<QueuedReading> = (0..100)
                .map(|_| {
                    n += 1;
                    reading(n)
                })
                .collect();
            queue.enqueue(&batch).expect("enqueue");
        })
    });
    group.finish();
}

criterion_group!(benches, enqueue);
criterion_main!(benches);
