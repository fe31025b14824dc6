//! The fault proxy over real HTTP, in front of the local IoT endpoint: each fault kind
//! does what it says, and the seeded RNG makes the fault sequence repeatable.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use local_aws::fault::{Fault, FaultConfig, FaultProxy};
use local_aws::{Broker, IotEndpoint};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn publish(client: &HttpClient, proxy: &FaultProxy) -> Result<(u16, Option<String>), String> {
    let request = hyper::Request::post(format!("{}/topics/pi%2F1?qos=1", proxy.url()))
        .body(Full::new(Bytes::from_static(b"{\"x\":1}")))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("x-amzn-ErrorType")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let _ = response.into_body().collect().await;
    Ok((status, kind))
}

async fn proxy(iot: &IotEndpoint, rate: f64, seed: u64, faults: Vec<Fault>) -> FaultProxy {
    FaultProxy::start(any(), &iot.url(), FaultConfig { rate, seed, faults })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_kind_behaves() {
    let broker = Broker::start(any()).await.unwrap();
    let iot = IotEndpoint::start(any(), broker.publisher()).await.unwrap();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let clean = proxy(&iot, 0.0, 1, vec![]).await;
    assert_eq!(publish(&client, &clean).await, Ok((200, None)));
    assert_eq!(clean.stats().forwarded, 1);

    for (status, kind) in [
        (429, "ThrottlingException"),
        (500, "InternalFailureException"),
        (503, "ServiceUnavailableException"),
    ] {
        let p = proxy(&iot, 1.0, 1, vec![Fault::Status(status)]).await;
        assert_eq!(
            publish(&client, &p).await,
            Ok((status, Some(kind.to_string())))
        );
        assert_eq!(p.stats().forwarded, 0);
        assert_eq!(p.stats().injected_total(), 1);
    }

    let before = proxy(&iot, 1.0, 1, vec![Fault::ResetBeforeForward]).await;
    assert!(publish(&client, &before).await.is_err(), "connection reset");
    assert_eq!(before.stats().forwarded, 0);

    let after = proxy(&iot, 1.0, 1, vec![Fault::ResetAfterForward]).await;
    assert!(publish(&client, &after).await.is_err(), "connection reset");
    assert_eq!(after.stats().forwarded, 1, "the upstream got it");

    let slow = proxy(&iot, 1.0, 1, vec![Fault::Slow(Duration::from_millis(300))]).await;
    let start = Instant::now();
    assert_eq!(publish(&client, &slow).await, Ok((200, None)));
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_gives_the_same_faults() {
    let broker = Broker::start(any()).await.unwrap();
    let iot = IotEndpoint::start(any(), broker.publisher()).await.unwrap();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let faults = vec![Fault::Status(429), Fault::Status(503)];
    let mut runs = Vec::new();
    for _ in 0..2 {
        let p = proxy(&iot, 0.5, 42, faults.clone()).await;
        let mut statuses = Vec::new();
        for _ in 0..40 {
            statuses.push(publish(&client, &p).await.unwrap().0);
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    let faulty = runs[0].iter().filter(|s| **s != 200).count();
    assert!((8..=32).contains(&faulty), "about half: {faulty} of 40");
}
