//! Where the cold start goes. Run without arguments (or `--runs N`), it starts a tiny
//! IoT/OpenSearch stub on two threads and runs itself N times as a fresh process; each
//! child times the gasdetector's init steps one by one (runtime, tracing, configuration,
//! SDK config, IoT client, OpenSearch client) and its first and second invokes, then one
//! standalone load of the native root certificates. The parent prints medians.
//!
//! `cargo build --release -p initsteps && target/release/initsteps --runs 25`

use sensor_aws::{IotPublisher, OpenSearchIndexer};
use sensor_core::ports::{Indexer, Message, Publisher};
use sensor_lambda::{App, IngestSettings};
use sensor_model::topic::TopicTemplate;
use sensor_model::Sensor;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const EVENT: &str = include_str!("../../../events/gasdetector/warn-no2-apigw-rest.json");
const BODY: &str = r#"{"groupid": "2", "gps": "37.61002501514269, 126.99636868892937",
 "no2": {"sensorid": "0006", "sensortype": "9", "value": "95.00", "createdtime": "2021-09-03 18:14:49"}}"#;
const STEPS: [&str; 12] = [
    "tokio runtime",
    "init_tracing",
    "Config::from_env",
    "sdk_config",
    "IotPublisher::new",
    "OpenSearchIndexer::new",
    "init total",
    "first IoT publish",
    "first OpenSearch _bulk",
    "first invoke (publish + bulk)",
    "second invoke",
    "load_native_certs (standalone)",
];

fn main() {
    if std::env::var_os("INITSTEPS_CHILD").is_some() {
        child();
    } else {
        parent();
    }
}

struct Laps {
    start: Instant,
    last: Instant,
    times: Vec<Duration>,
}

impl Laps {
    fn mark(&mut self) {
        let now = Instant::now();
        self.times.push(now - self.last);
        self.last = now;
    }
}

fn child() {
    let now = Instant::now();
    let mut laps = Laps {
        start: now,
        last: now,
        times: Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    laps.mark();
    runtime.block_on(async {
        sensor_lambda::init_tracing();
        laps.mark();
        let config = IngestSettings::from_env(Sensor::Gasdetector).expect("configuration");
        laps.mark();
        let sdk_config = sensor_aws::sdk_config(&config.aws);
        laps.mark();
        let publisher = IotPublisher::new(&sdk_config, config.iot_endpoint.as_str());
        laps.mark();
        let indexer =
            OpenSearchIndexer::new(&config.opensearch, &sdk_config).expect("OpenSearch client");
        laps.mark();
        let app = App::new(&config, publisher.clone(), indexer.clone());
        laps.times.push(laps.start.elapsed());
        laps.last = Instant::now();
        // The two downstream calls alone, on the clients the app shares.
        let body = serde_json::from_str::<serde_json::Value>(BODY).expect("body");
        let reading = app.pipeline().validate(body).expect("reading");
        let arrival = app.pipeline().arrival(chrono::Utc::now());
        let (document, _) = app.pipeline().check(&reading, arrival);
        let message = Message {
            topic: TopicTemplate::default().topic(Sensor::Gasdetector, reading.group()),
            payload: b"{}".to_vec(),
        };
        publisher.publish(&message).await.expect("publish");
        laps.mark();
        indexer.create_all(&[&document]).await.expect("bulk");
        laps.mark();
        for _ in 0..2 {
            let request = lambda_http::request::from_str(EVENT).expect("event");
            let response = app.handle(request).await;
            assert_eq!(response.status(), 200, "{:?}", response.body());
            laps.mark();
        }
    });
    let certs = rustls_native_certs::load_native_certs();
    laps.mark();
    assert!(!certs.certs.is_empty());
    let line: Vec<String> = laps
        .times
        .iter()
        .map(|d| d.as_micros().to_string())
        .collect();
    println!("{}", line.join(" "));
}

fn parent() {
    let mut runs = 25usize;
    let mut extra_env = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--env" => {
                let kv = args.next().expect("--env KEY=VALUE");
                let (k, v) = kv.split_once('=').expect("--env KEY=VALUE");
                extra_env.push((k.to_string(), v.to_string()));
            }
            other => panic!("unknown argument {other:?} (--runs N, --env KEY=VALUE)"),
        }
    }
    let iot = stub(b"{}".to_vec());
    let bulk = stub(
        br#"{"took":1,"errors":false,"items":[{"create":{"_index":"gasdetect","_id":"x","status":201}}]}"#
            .to_vec(),
    );
    let exe = std::env::current_exe().expect("current_exe");
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); STEPS.len()];
    for _ in 0..runs + 1 {
        let output = std::process::Command::new(&exe)
            .env_clear()
            .env("INITSTEPS_CHILD", "1")
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("TZ", ":UTC")
            .env("AWS_LAMBDA_FUNCTION_NAME", "gasdetector")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "AKIDBENCHMARK0000000")
            .env("AWS_SECRET_ACCESS_KEY", "benchmark-secret-key")
            .env("AWS_SESSION_TOKEN", "benchmark-session-token")
            .env(
                "AWS_ENDPOINT_URL_IOT_DATA_PLANE",
                format!("http://127.0.0.1:{iot}"),
            )
            .env("OPENSEARCH_URL", format!("http://127.0.0.1:{bulk}"))
            .env("OPENSEARCH_AUTH", "none")
            .envs(extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stderr(std::process::Stdio::null())
            .output()
            .expect("child");
        assert!(output.status.success(), "child failed: {output:?}");
        let line = String::from_utf8_lossy(&output.stdout);
        let values: Vec<u64> = line
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        assert_eq!(values.len(), STEPS.len(), "child printed {line:?}");
        for (i, v) in values.into_iter().enumerate() {
            samples[i].push(v);
        }
    }
    println!("| step | median ms | p90 ms |\n|---|---:|---:|");
    for (name, mut s) in STEPS.iter().zip(samples) {
        s.remove(0); // the discarded first run (page cache)
        s.sort_unstable();
        let median = s[s.len() / 2] as f64 / 1000.0;
        let p90 = s[(s.len() * 9).div_ceil(10).max(1) - 1] as f64 / 1000.0;
        println!("| {name} | {median:.2} | {p90:.2} |");
    }
    println!("\n{runs} fresh processes (after one discarded), OPENSEARCH_AUTH=none unless --env says otherwise.");
}

/// A keep-alive HTTP/1.1 server on a thread that answers every request with 200 `body`.
fn stub(body: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let body = body.clone();
            std::thread::spawn(move || serve(stream, &body));
        }
    });
    port
}

fn serve(stream: TcpStream, body: &[u8]) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" && !first {
                break;
            }
            first = false;
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut request_body = vec![0u8; length];
        if reader.read_exact(&mut request_body).is_err() {
            return;
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(body).is_err() {
            return;
        }
    }
}
