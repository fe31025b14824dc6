//! The cost of SigV4-signing one post with the box's credentials ([iam]): a single reading
//! (~300 bytes, the live case) and a 500-reading batch (~150 KB, after an outage), where
//! hashing the body dominates. `cargo bench -p sensorbox --bench signing`; figures in
//! BENCHMARKS.md.

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sensorbox::credentials::Credentials;
use sensorbox::signing::sign_post;
use std::hint::black_box;
use std::time::SystemTime;

fn reading(n: u64) -> String {
    format!(
        r#"{{"groupid":"2","gps":"37.61002501514269, 126.99636868892937","no2":{{"sensorid":"0006","sensortype":"9","value":"{n}","createdtime":"2027-01-15T08:00:00.000001Z"}},"co":{{"sensorid":"0005","sensortype":"8","value":"26.20","createdtime":"2027-01-15T08:00:00.000001Z"}}}}"#
    )
}

fn signing(c: &mut Criterion) {
    let credentials = Credentials {
        access_key_id: "ASIAEXAMPLEEXAMPLE12".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        // About the size of a real session token.
        session_token: "IQoJb3JpZ2luX2VjE".repeat(60),
        expiration: Utc
            .with_ymd_and_hms(2027, 1, 15, 9, 0, 0)
            .single()
            .expect("time"),
    };
    let url = reqwest::Url::parse(
        "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/things/sensorbox-2/gasdetector",
    )
    .expect("url");
    let single = reading(1);
    let batch = format!("[{}]", (0..500).map(reading).collect::<Vec<_>>().join(","));
    let mut group = c.benchmark_group("sign");
    for (name, body) in [
        (format!("one reading ({} B)", single.len()), &single),
        (
            format!("500-reading batch ({} KB)", batch.len() / 1000),
            &batch,
        ),
    ] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                sign_post(
                    black_box(&url),
                    "application/json",
                    black_box(body.as_bytes()),
                    &credentials,
                    "eu-west-1",
                    SystemTime::now(),
                )
                .expect("signed")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, signing);
criterion_main!(benches);
