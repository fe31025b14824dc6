//! The functions as `cargo xtask dev` runs them: built and served by `cargo lambda watch`,
//! invoked with `cargo lambda invoke --data-file events/...` and through the local-aws
//! gateway, publishing to the in-process broker, keeping alarm state in the local IoT
//! endpoint's shadows and indexing into osmem-server.

use chrono::{DateTime, Utc};
use integration_tests::{
    path_with_venv, root, start_watch, venv_bin, Peers, Subscriber, WATCH_BUILD as BUILD,
};
use local_aws::{Gateway, GatewayConfig};
use serde_json::{json, Value};

async fn cargo_lambda_invoke(port: u16, function: &str, file: &str) -> Value {
    let cargo_lambda = venv_bin("cargo-lambda");
    let mut command = tokio::process::Command::new(&cargo_lambda);
    command
        .current_dir(root())
        .env("PATH", path_with_venv())
        .args(["lambda", "invoke", function, "-A", "127.0.0.1"])
        .args(["-P", &port.to_string(), "--data-file", file])
        .args(["--output-format", "json"])
        .kill_on_drop(true);
    let output = tokio::time::timeout(BUILD, command.output())
        .await
        .expect("cargo lambda invoke did not finish")
        .expect("cannot run cargo lambda invoke");
    assert!(
        output.status.success(),
        "cargo lambda invoke {function} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "cargo lambda invoke printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Every message `subscriber` gets on `topic` before a marker published after them.
async fn until_marker(peers: &Peers, subscriber: &mut Subscriber, topic: &str) -> Vec<Value> {
    peers.publish_marker(topic).await;
    let mut messages = Vec::new();
    loop {
        let (_, message, _) = subscriber.next().await;
        if message["marker"] == true {
            return messages;
        }
        messages.push(message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cargo_lambda_watch_serves_the_functions() {
    let peers = Peers::start().await;
    let mut subscriber = Subscriber::connect(peers.broker.local_addr(), "pi/2").await;

    let env = peers.env();
    let env_file = std::env::temp_dir().join(format!("it-functions-{}.env", std::process::id()));
    let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(&env_file, text).unwrap();
    let (_watch, port) = start_watch(&env, &["--env-file".as_ref(), env_file.as_os_str()]).await;

    // A REST API event from events/ (base64 body, no2 = 95) via `cargo lambda invoke`.
    let reply = cargo_lambda_invoke(
        port,
        "gasdetector",
        "events/gasdetector/warn-no2-apigw-rest.json",
    )
    .await;
    assert_eq!(reply["statusCode"], 200, "{reply}");
    let body: Value = serde_json::from_str(reply["body"].as_str().expect("body")).unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    let (topic, warning, _) = subscriber.next().await;
    assert_eq!(topic, "pi/2");
    assert_eq!(warning["warning"], "no2 warning");
    assert_eq!(warning["id"], body["id"]);
    peers
        .opensearch
        .wait_count("gasdetect", json!({"range": {"no2.value": {"gte": 90}}}), 1)
        .await;

    // The same function through the gateway: a plain POST becomes a REST proxy event.
    let gateway = Gateway::start(
        "127.0.0.1:0".parse().unwrap(),
        GatewayConfig::sensors(format!("http://127.0.0.1:{port}")),
    )
    .await
    .unwrap();
    // A leak through the gateway, as a box sends it: normal, ten breaching readings,
    // normal. Default alarm mode: exactly one warning and one clear reach the subscriber.
    let mut leak = Subscriber::connect(peers.broker.local_addr(), "pi/12").await;
    let http = reqwest::Client::new();
    let mut values = vec!["20"];
    values.extend(["99"; 10]);
    values.push("20");
    for (i, value) in values.iter().enumerate() {
        let reading = json!({"groupid": "12",
            "no2": {"sensorid": "0006", "sensortype": "9", "value": value,
                    "createdtime": format!("2021-09-03 19:{:02}:00", i)}});
        let response = http
            .post(format!("{}/gasdetector", gateway.url()))
            .header("content-type", "application/json")
            .body(reading.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let tripped = usize::from(*value == "99");
        assert_eq!(
            body["warnings"].as_array().map(Vec::len),
            Some(tripped),
            "{body}"
        );
    }
    let messages = until_marker(&peers, &mut leak, "pi/12").await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0]["warning"], "no2 warning");
    assert_eq!(messages[0]["state"], "alarm");
    assert_eq!(messages[0]["value"], 99.0);
    assert_eq!(messages[1]["clear"], "no2 clear");
    assert_eq!(messages[1]["duration_s"], 600);

    // A box whose clock ran three hours ahead, then was corrected by NTP: its readings
    // dated in the future cannot make its live leak stale. An independent subscriber on
    // pi/19 gets exactly the one warning of the leak.
    let mut skewed = Subscriber::connect(peers.broker.local_addr(), "pi/19").await;
    let stamp = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let post_gas = |value: &str, created: String| {
        let reading = json!({"groupid": "19",
            "no2": {"sensorid": "0006", "sensortype": "9", "value": value, "createdtime": created}});
        let request = http
            .post(format!("{}/gasdetector", gateway.url()))
            .header("content-type", "application/json")
            .body(reading.to_string());
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let ahead = Utc::now() + chrono::Duration::hours(3);
    for i in 0..3 {
        post_gas("20", stamp(ahead + chrono::Duration::seconds(i))).await;
    }
    // The corrected clock's next reading, as a box sends it a few seconds later: dated
    // after the last future-dated one arrived plus CLOCK_AHEAD_TOLERANCE (2 s).
    let next = Utc::now() + chrono::Duration::seconds(3);
    if let Ok(wait) = (next - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    let leak = post_gas("95", stamp(next)).await;
    assert_eq!(leak["warnings"].as_array().map(Vec::len), Some(1), "{leak}");
    let messages = until_marker(&peers, &mut skewed, "pi/19").await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["state"], "alarm");
    assert_eq!(messages[0]["value"], 95.0);
    assert_eq!(messages[0]["id"], leak["id"]);

    // Any method but POST is the function's 405, passed through.
    let response = http
        .get(format!("{}/gasdetector", gateway.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);

    let _ = std::fs::remove_file(&env_file);
}
