//! The fleet page in a real browser: headless Debian Chromium, driven by Playwright for
//! Python (tests/browser/page_test.py), against the local stack as `cargo xtask dev` runs
//! it: the gateway (requiring an API key, as the deployed API does for /api/*) in front
//! of the functions under `cargo lambda watch`, the real broker, IoT endpoint and
//! osmem-server. Readings (one of them a warning) are posted through the gateway; the
//! script asserts from the DOM that the group, its latest values, the chart's points, the
//! threshold line, the warning, the language switch, the auto refresh and an error
//! message for a failing call are all there, saves a screenshot under
//! target/browser/ and reports the first meaningful render (Performance API).
//!
//! Needs Debian's `chromium` (`cargo xtask test` installs it with apt-get when run as root;
//! otherwise the test fails with the command to run) and Playwright, which it installs into
//! target/venv. Never skipped.

use chrono::{Duration as ChronoDuration, Utc};
use integration_tests::{
    ensure_python_package, eventually, gas_reading, root, start_watch, venv_bin, Peers, WATCH_BUILD,
};
use local_aws::{Gateway, GatewayConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Keep in step with xtask/src/tools.rs (PLAYWRIGHT).
const PLAYWRIGHT: &str = "playwright==1.56.0";
const CHROMIUM: &str = "/usr/bin/chromium";
const API_KEY: &str = "browser-test-viewer-key";
const GROUP: &str = "web-1";

/// Debian's chromium (`cargo xtask test` installs it with apt-get when run as root); without
/// it the test fails with the command to run, never skips.
fn ensure_chromium() -> PathBuf {
    let path = Path::new(CHROMIUM);
    assert!(
        path.exists(),
        "the browser test needs Debian's chromium at {CHROMIUM}: run `sudo apt-get install -y \
         --no-install-recommends chromium` (`cargo xtask test` does it when run as root)"
    );
    path.to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_fleet_in_a_real_browser() {
    let chromium = ensure_chromium();
    let python = ensure_python_package(PLAYWRIGHT, || {
        let bin = venv_bin("playwright");
        bin.exists().then(|| venv_bin("python"))
    });
    let peers = Peers::start().await;
    let (mut watch, watch_port) = start_watch(&peers.env(), &[]).await;
    let gateway = Gateway::start(
        "127.0.0.1:0".parse().expect("address"),
        GatewayConfig {
            api_key: Some(API_KEY.into()),
            timeout: Duration::from_secs(300),
            ..GatewayConfig::sensors(format!("http://127.0.0.1:{watch_port}"))
        },
    )
    .await
    .expect("gateway");
    let http = reqwest::Client::new();

    // Six readings 30 s apart in the last minutes (inside the page's default 24 h), the
    // newest one over the no2 threshold (88).
    let now = Utc::now();
    let values = ["41.5", "42", "43.25", "44", "45", "95.5"];
    for (i, value) in values.iter().enumerate() {
        let taken = now - ChronoDuration::seconds(30 * (values.len() - i) as i64);
        let body = gas_reading(GROUP, value, &taken.format("%Y-%m-%d %H:%M:%S").to_string());
        let status = eventually("gasdetector to store a reading", WATCH_BUILD, || {
            watch.assert_running();
            let request = http
                .post(format!("{}/gasdetector", gateway.url()))
                .header("x-api-key", API_KEY)
                .header("content-type", "application/json")
                .body(body.clone())
                .send();
            async move {
                let status = request.await.ok()?.status().as_u16();
                (status != 503).then_some(status)
            }
        })
        .await;
        assert_eq!(status, 200, "posting reading {i}");
    }
    peers
        .opensearch
        .wait_count(
            "gasdetect",
            serde_json::json!({"term": {"groupid": GROUP}}),
            6,
        )
        .await;
    // The query function built and answering through the gateway before the browser starts.
    eventually("the query function to answer", WATCH_BUILD, || {
        watch.assert_running();
        let request = http
            .get(format!("{}/api/rules", gateway.url()))
            .header("x-api-key", API_KEY)
            .send();
        async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
    // The page itself needs no key.
    let page = http
        .get(format!("{}/", gateway.url()))
        .send()
        .await
        .expect("GET /");
    assert_eq!(page.status(), 200);
    assert!(page
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html")));

    let out_dir = root().join("target").join("browser");
    std::fs::create_dir_all(&out_dir).expect("target/browser");
    let profile = std::env::temp_dir().join(format!("it-browser-profile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let screenshot = out_dir.join("fleet.png");
    let gateway_url = gateway.url();
    let script = root().join("tests/browser/page_test.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("PAGE_URL", gateway_url)
            .env("API_KEY", API_KEY)
            .env("GROUP", GROUP)
            .env("POSTED", values.len().to_string())
            .env("LATEST_NO2", "95.5")
            .env("SCREENSHOT", &screenshot)
            .env("USER_DATA_DIR", &profile)
            .env("CHROMIUM", chromium)
            .stdin(Stdio::null())
            .output()
    })
    .await
    .expect("join")
    .expect("cannot run the Playwright script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the page failed in the browser:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no report from the script: {stdout}"));
    eprintln!(
        "browser: first meaningful render {} ms (DOMContentLoaded {} ms), {} chart points; screenshot {}",
        report["first_render_ms"],
        report["dom_content_loaded_ms"],
        report["chart_points"],
        report["screenshot"].as_str().unwrap_or("?"),
    );
    assert!(out_dir.join("fleet.png").exists(), "no screenshot");
}
