//! The local stack's servers against real clients: rumqttc for MQTT, the real
//! `aws-sdk-iotdataplane` client for the IoT endpoint, lambda_http's own event parser for
//! the gateway's proxy events. Every stack binds port 0, so tests run in parallel.

use aws_sdk_iotdataplane::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_iotdataplane::error::ProvideErrorMetadata;
use aws_sdk_iotdataplane::primitives::Blob;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use lambda_http::RequestExt;
use local_aws::{Broker, Gateway, GatewayConfig, IotEndpoint, MqttSubscriber};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// The local broker's subscriber, with this file's deadline and failures as panics.
struct Subscriber(MqttSubscriber);

impl Subscriber {
    async fn connect(broker: SocketAddr, filter: &str) -> Subscriber {
        Subscriber(MqttSubscriber::connect(broker, filter, WAIT).await.unwrap())
    }

    async fn next(&mut self) -> rumqttc::Publish {
        self.0
            .next(WAIT)
            .await
            .expect("no message within the deadline")
    }

    /// Nothing else arrives: proven by a marker published after `what` arriving first.
    async fn nothing_before_marker(&mut self, marker_topic: &str) {
        let next = self.next().await;
        assert_eq!(next.topic, marker_topic, "unexpected message {next:?}");
    }
}

async fn mqtt_publisher(broker: SocketAddr) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    let id = format!("pub-{}", fastrand::u32(..));
    let options = MqttOptions::new(id, broker.ip().to_string(), broker.port());
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let task = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    (client, task)
}

#[tokio::test]
async fn broker_routes_with_wildcards_and_qos() {
    let broker = Broker::start(any_port()).await.unwrap();
    let addr = broker.local_addr();
    let mut all = Subscriber::connect(addr, "pi/#").await;
    let mut one = Subscriber::connect(addr, "pi/+/alarm").await;
    let (publisher, _task) = mqtt_publisher(addr).await;

    publisher
        .publish("pi/2", QoS::AtLeastOnce, false, "hello")
        .await
        .unwrap();
    let got = all.next().await;
    assert_eq!(got.topic, "pi/2");
    assert_eq!(&got.payload[..], b"hello");
    assert_eq!(got.qos, QoS::AtLeastOnce);

    publisher
        .publish("pi/7/alarm", QoS::AtMostOnce, false, "fire")
        .await
        .unwrap();
    let got = one.next().await;
    assert_eq!(got.topic, "pi/7/alarm");
    assert_eq!(got.qos, QoS::AtMostOnce);
    assert_eq!(all.next().await.topic, "pi/7/alarm");

    // Not matching `pi/+/alarm`: the marker arrives first.
    publisher
        .publish("pi/7/other", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    publisher
        .publish("pi/8/alarm", QoS::AtLeastOnce, false, "marker")
        .await
        .unwrap();
    one.nothing_before_marker("pi/8/alarm").await;
}

#[tokio::test]
async fn broker_retained_messages_and_wills() {
    let broker = Broker::start(any_port()).await.unwrap();
    let addr = broker.local_addr();
    broker
        .publisher()
        .publish("pi/1/state", Bytes::from_static(b"on"), 1, true)
        .await
        .unwrap();
    let mut late = Subscriber::connect(addr, "pi/1/#").await;
    let got = late.next().await;
    assert_eq!((got.topic.as_str(), got.retain), ("pi/1/state", true));

    // A client that dies without DISCONNECT has its will published.
    let mut options = MqttOptions::new("dying", addr.ip().to_string(), addr.port());
    options.set_last_will(LastWill::new("pi/1/lwt", "gone", QoS::AtLeastOnce, false));
    let (client, mut eventloop) = AsyncClient::new(options, 4);
    let (connected_tx, connected) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut connected_tx = Some(connected_tx);
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::ConnAck(_)) = event {
                if let Some(tx) = connected_tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    timeout(WAIT, connected).await.unwrap().unwrap();
    task.abort(); // drops the socket without DISCONNECT
    drop(client);
    let got = late.next().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("pi/1/lwt", &b"gone"[..])
    );
}

fn iot_client(endpoint: &str) -> aws_sdk_iotdataplane::Client {
    let config = aws_sdk_iotdataplane::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDLOCAL", "secret", None, None, "test"))
        .endpoint_url(endpoint)
        .retry_config(aws_sdk_iotdataplane::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_iotdataplane::Client::from_conf(config)
}

/// A broker, an IoT endpoint relaying into it, a subscriber to `filter` on the broker and
/// an SDK client of the endpoint.
async fn iot_endpoint(
    filter: &str,
) -> (
    Broker,
    IotEndpoint,
    Subscriber,
    aws_sdk_iotdataplane::Client,
) {
    let broker = Broker::start(any_port()).await.unwrap();
    let iot = IotEndpoint::start(any_port(), broker.publisher())
        .await
        .unwrap();
    let subscriber = Subscriber::connect(broker.local_addr(), filter).await;
    let client = iot_client(&iot.url());
    (broker, iot, subscriber, client)
}

#[tokio::test]
async fn iot_endpoint_relays_sdk_publishes() {
    let (_broker, _iot, mut subscriber, client) = iot_endpoint("pi/#").await;

    let output = client
        .publish()
        .topic("pi/2")
        .qos(1)
        .payload(Blob::new(br#"{"warning":"no2 warning"}"#.to_vec()))
        .send()
        .await
        .unwrap();
    assert!(aws_sdk_iotdataplane::operation::RequestId::request_id(&output).is_some());
    let got = subscriber.next().await;
    assert_eq!(got.topic, "pi/2");
    assert_eq!(got.qos, QoS::AtLeastOnce);
    assert_eq!(&got.payload[..], br#"{"warning":"no2 warning"}"#);

    // QoS 0, a topic needing percent-encoding, and the maximum payload size.
    let payload = vec![b'x'; local_aws::iot::MAX_PAYLOAD];
    client
        .publish()
        .topic("pi/room 1/é")
        .qos(0)
        .payload(Blob::new(payload.clone()))
        .send()
        .await
        .unwrap();
    let got = subscriber.next().await;
    assert_eq!(got.topic, "pi/room 1/é");
    assert_eq!(got.qos, QoS::AtMostOnce);
    assert_eq!(got.payload.len(), payload.len());
}

#[tokio::test]
async fn iot_endpoint_rejects_what_iot_core_rejects() {
    let (_broker, iot, mut subscriber, client) = iot_endpoint("#").await;

    let long = "t".repeat(257);
    let bad_topics = [
        long.as_str(),
        "a/b/c/d/e/f/g/h/i",
        "pi/+",
        "pi/#",
        "$aws/things/x/shadow/update",
    ];
    for topic in bad_topics {
        let err = client
            .publish()
            .topic(topic)
            .qos(1)
            .payload(Blob::new(b"{}".to_vec()))
            .send()
            .await
            .unwrap_err();
        let service = err.into_service_error();
        assert!(
            service.is_invalid_request_exception(),
            "{topic}: {service:?}"
        );
        assert!(service.message().is_some());
    }

    let err = client
        .publish()
        .topic("pi/2")
        .qos(2)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_invalid_request_exception(), "{err:?}");

    let err = client
        .publish()
        .topic("pi/2")
        .qos(1)
        .payload(Blob::new(vec![b'x'; local_aws::iot::MAX_PAYLOAD + 1]))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(
        err.code(),
        Some("RequestEntityTooLargeException"),
        "{err:?}"
    );

    // The SDK refuses an empty topic itself; a raw request gets the service's answer.
    let (status, headers, body) = raw(&iot.url(), "POST", "/topics/?qos=1", "").await;
    assert_eq!(status, 400);
    assert_eq!(headers["x-amzn-errortype"], "InvalidRequestException");
    assert!(body["message"].is_string());
    let (status, headers, _) = raw(&iot.url(), "GET", "/topics/pi%2F2", "").await;
    assert_eq!(status, 405);
    assert_eq!(headers["x-amzn-errortype"], "MethodNotAllowedException");
    // An unencoded topic path works too (curl users).
    let (status, _, body) = raw(&iot.url(), "POST", "/topics/pi/9?qos=1", "raw").await;
    assert_eq!(status, 200);
    assert_eq!(body["message"], "OK");

    // Nothing from the rejected publishes reached the broker.
    subscriber.nothing_before_marker("pi/9").await;
}

/// A raw HTTP request: status, headers, JSON body.
async fn raw(base: &str, method: &str, path: &str, body: &str) -> (u16, hyper::HeaderMap, Value) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let request = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = timeout(WAIT, client.request(request))
        .await
        .unwrap()
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, json)
}

/// A stand-in for `cargo lambda watch`'s invoke API: parses each event with lambda_http
/// (so the event must be one the real functions accept) and answers with `reply`.
struct FakeInvoke {
    addr: SocketAddr,
    events: Arc<Mutex<Vec<(String, Value)>>>,
}

type Reply = fn(&lambda_http::Request) -> (u16, Value);

async fn fake_invoke(reply: Reply) -> FakeInvoke {
    let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let path = request.uri().path().to_owned();
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let event: Value = serde_json::from_slice(&body).unwrap();
                        seen.lock().unwrap().push((path, event));
                        let parsed =
                            lambda_http::request::from_str(std::str::from_utf8(&body).unwrap())
                                .expect("the gateway's event is a valid API Gateway event");
                        let (status, json) = reply(&parsed);
                        let response = Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from(json.to_string())))
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    FakeInvoke { addr, events }
}

fn echo(request: &lambda_http::Request) -> (u16, Value) {
    if request.method() != "POST" {
        return (
            200,
            json!({"statusCode": 405, "headers": {"allow": "POST"},
                   "multiValueHeaders": {"allow": ["POST"]}, "body": "{\"error\":\"method_not_allowed\"}",
                   "isBase64Encoded": false}),
        );
    }
    let body = std::str::from_utf8(request.body().as_ref())
        .unwrap()
        .to_owned();
    let stage = match request.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV1(ctx)) => ctx.stage.clone(),
        other => panic!("not a REST v1 context: {other:?}"),
    };
    let reply = json!({"echo": body, "stage": stage, "query": request.uri().query()});
    (
        200,
        json!({"statusCode": 200, "headers": {"content-type": "application/json"},
               "multiValueHeaders": {"content-type": ["application/json"], "set-cookie": ["a=1", "b=2"]},
               "body": reply.to_string(), "isBase64Encoded": false}),
    )
}

async fn gateway_to(invoke: &FakeInvoke) -> Gateway {
    Gateway::start(
        any_port(),
        GatewayConfig::sensors(format!("http://{}", invoke.addr)),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn gateway_builds_rest_proxy_events() {
    let invoke = fake_invoke(echo).await;
    let gateway = gateway_to(&invoke).await;
    let reading = r#"{"groupid": "2", "no2": {"value": "95"}}"#;

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let request = Request::post(format!("{}/gasdetector?debug=1", gateway.url()))
        .header("content-type", "application/json")
        .header("x-api-key", "k")
        .body(Full::new(Bytes::from(reading)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies.len(), 2);
    assert_eq!(response.headers().get_all("content-type").iter().count(), 1);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["echo"], reading);
    assert_eq!(body["stage"], "local");
    assert_eq!(body["query"], "debug=1");

    let events = invoke.events.lock().unwrap().clone();
    let (path, event) = &events[0];
    assert_eq!(path, "/2015-03-31/functions/gasdetector/invocations");
    assert_eq!(event["httpMethod"], "POST");
    assert_eq!(event["path"], "/gasdetector");
    assert_eq!(event["resource"], "/gasdetector");
    assert_eq!(event["isBase64Encoded"], true);
    assert_eq!(event["headers"]["x-api-key"], "k");
    assert_eq!(event["multiValueHeaders"]["x-api-key"], json!(["k"]));
    assert_eq!(event["queryStringParameters"]["debug"], "1");
    assert_eq!(event["requestContext"]["httpMethod"], "POST");
    assert_eq!(event["requestContext"]["resourcePath"], "/gasdetector");
    assert_eq!(event["requestContext"]["path"], "/local/gasdetector");
    assert_eq!(event["requestContext"]["identity"]["sourceIp"], "127.0.0.1");
    assert!(event["requestContext"]["requestId"].is_string());

    // Other methods reach the function (which answers 405); unknown paths are 404.
    let (status, _, _) = raw(&gateway.url(), "GET", "/dust", "").await;
    assert_eq!(status, 405);
    assert_eq!(
        invoke.events.lock().unwrap()[1].0,
        "/2015-03-31/functions/dust/invocations"
    );
    let (status, _, body) = raw(&gateway.url(), "POST", "/nope", "{}").await;
    assert_eq!(status, 404);
    assert!(body["message"].is_string());
}

#[tokio::test]
async fn gateway_with_an_api_key_refuses_requests_without_it() {
    let invoke = fake_invoke(echo).await;
    let config = GatewayConfig {
        api_key: Some("box-key".into()),
        ..GatewayConfig::sensors(format!("http://{}", invoke.addr))
    };
    let gateway = Gateway::start(any_port(), config).await.unwrap();
    let (status, _, body) = raw(&gateway.url(), "POST", "/dust", "{}").await;
    assert_eq!(status, 403);
    assert_eq!(body, json!({"message": "Forbidden"}));
    assert!(invoke.events.lock().unwrap().is_empty());
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let request = Request::post(format!("{}/dust", gateway.url()))
        .header("x-api-key", "box-key")
        .body(Full::new(Bytes::from("{}")))
        .unwrap();
    assert_eq!(client.request(request).await.unwrap().status(), 200);
    assert_eq!(invoke.events.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn gateway_serves_the_contract_with_itself_as_server() {
    let invoke = fake_invoke(echo).await;
    let gateway = gateway_to(&invoke).await;
    let (status, headers, doc) = raw(&gateway.url(), "GET", "/openapi.json", "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(doc["servers"][0]["url"], gateway.url());
    assert_eq!(
        doc["paths"]["/gasdetector"]["post"]["operationId"],
        "postGasdetector"
    );
    assert!(
        invoke.events.lock().unwrap().is_empty(),
        "no function was invoked"
    );
}

fn failing(_: &lambda_http::Request) -> (u16, Value) {
    (
        200,
        json!({"errorType": "&alloc::string::String", "errorMessage": "boom"}),
    )
}

fn crashing(_: &lambda_http::Request) -> (u16, Value) {
    (500, json!({"errorType": "Runtime.ExitError"}))
}

fn malformed(_: &lambda_http::Request) -> (u16, Value) {
    (200, json!({"hello": "world"}))
}

#[tokio::test]
async fn gateway_maps_function_errors_to_502_and_no_function_yet_to_503() {
    for reply in [failing as Reply, crashing, malformed] {
        let invoke = fake_invoke(reply).await;
        let gateway = gateway_to(&invoke).await;
        let (status, _, body) = raw(&gateway.url(), "POST", "/temp", "{}").await;
        assert_eq!(status, 502);
        assert_eq!(body, json!({"message": "Internal server error"}));
    }
    // Nothing listening at the invoke URL (cargo lambda watch still starting): the request
    // never reached a function, so the answer is "resend later", never a 502.
    let unused = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let dead = unused.local_addr().unwrap();
    drop(unused);
    let gateway = Gateway::start(any_port(), GatewayConfig::sensors(format!("http://{dead}")))
        .await
        .unwrap();
    let (status, headers, body) = raw(&gateway.url(), "POST", "/temp", "{}").await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["error"], "unavailable");
    assert!(body["message"].as_str().unwrap().contains("temp"), "{body}");
}

#[tokio::test]
async fn port_in_use_is_an_error() {
    let broker = Broker::start(any_port()).await.unwrap();
    assert!(Broker::start(broker.local_addr()).await.is_err());
}

/// A rumqttc client with a persistent session (`clean session = false`).
fn persistent_client(broker: SocketAddr, id: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let mut options = MqttOptions::new(id, broker.ip().to_string(), broker.port());
    options.set_clean_session(false);
    options.set_keep_alive(Duration::from_secs(5));
    AsyncClient::new(options, 16)
}

/// What IoT Core does for a box that was offline: QoS 1 messages published to its
/// subscription while it was away arrive when it reconnects with the same client id.
#[tokio::test]
async fn broker_keeps_qos1_messages_for_a_persistent_session() {
    let broker = Broker::start(any_port()).await.unwrap();
    let addr = broker.local_addr();
    let id = format!("box-{}", fastrand::u32(..));

    let (client, mut events) = persistent_client(addr, &id);
    client.subscribe("pi/9", QoS::AtLeastOnce).await.unwrap();
    timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.unwrap() {
                break;
            }
        }
    })
    .await
    .expect("SUBACK");
    client.disconnect().await.unwrap();
    timeout(WAIT, async { while events.poll().await.is_ok() {} })
        .await
        .expect("disconnected");

    // Published while the box is away.
    let publisher = broker.publisher();
    for n in 0..3 {
        publisher
            .publish("pi/9", Bytes::from(format!("warning {n}")), 1, false)
            .await
            .unwrap();
    }
    // Proof they reached the broker before the box comes back: a plain subscriber's copy.
    let mut witness = Subscriber::connect(addr, "pi/9").await;
    publisher
        .publish("pi/9", Bytes::from_static(b"warning 3"), 1, false)
        .await
        .unwrap();
    assert_eq!(&witness.next().await.payload[..], b"warning 3");

    let (_client, mut events) = persistent_client(addr, &id);
    let mut got = Vec::new();
    let mut session_present = None;
    timeout(WAIT, async {
        while got.len() < 4 {
            match events.poll().await.unwrap() {
                Event::Incoming(Packet::ConnAck(ack)) => {
                    session_present = Some(ack.session_present)
                }
                Event::Incoming(Packet::Publish(p)) => {
                    got.push(String::from_utf8_lossy(&p.payload).into_owned())
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the queued messages");
    assert_eq!(session_present, Some(true));
    assert_eq!(got, ["warning 0", "warning 1", "warning 2", "warning 3"]);
}
