//! `cargo xtask dev`: the whole system on localhost.
//!
//! Installs what is missing (cargo-lambda and osmem-server into `target/venv`), then starts
//! osmem-server (unless `OPENSEARCH_URL` is set) with the index templates applied, the
//! `localstack` binary (MQTT broker, IoT data-plane endpoint, API Gateway emulator) and
//! `cargo lambda watch` serving the three ingest functions, the no-data check and the
//! `query` function (the read API and the page on http://127.0.0.1:3000/). Each peer runs in its own process
//! group; Ctrl-C (or SIGTERM, or any peer dying) stops every group and frees the ports.

use crate::tools::{self, root, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: cargo xtask dev [options]

  --mqtt-port N         MQTT broker, plain       (default 1883, env DEV_MQTT_PORT)
  --mqtts-port N        MQTT broker, mutual TLS  (default 8883, env DEV_MQTTS_PORT)
  --iot-port N          IoT data-plane endpoint  (default 4443, env DEV_IOT_PORT)
  --opensearch-port N   osmem-server             (default 9200, env DEV_OPENSEARCH_PORT)
  --watch-port N        cargo lambda watch       (default 9000, env DEV_WATCH_PORT)
  --gateway-port N      API Gateway emulator     (default 3000, env DEV_GATEWAY_PORT)
  --release             build the functions in release mode
  --box                 also run a simulated box (sensorbox with simulate sources for
                        gasdetector, dust and temp, every 5 s) against the gateway; it
                        receives its group's warnings over mutual TLS (port 8883) and
                        its shadow shows connected true/false

With OPENSEARCH_URL set (e.g. https://admin:PASSWORD@localhost:9200 for the
opensearchproject/opensearch container) no osmem-server is started; the functions use
that URL with OPENSEARCH_AUTH (default none). RULES, TOPIC_TEMPLATE, ACK_MESSAGES, INDEX
and DEVICE_TIMEZONE are passed on to the functions when set.
";

const HOST: &str = "127.0.0.1";
/// The simulated box's IoT thing (its device certificate is issued by localstack).
const BOX_THING: &str = "sensorbox-box-1";
/// The Lambda functions `cargo lambda watch` serves (binary = function name).
const FUNCTIONS: [&str; 3] = ["gasdetector", "dust", "temp"];
/// The read API and the page (`GET /`, `GET /api/...` through the gateway).
const QUERY: &str = "query";
/// Environment variables passed through to the functions when the user sets them.
const PASS_THROUGH: &[&str] = &[
    "RULES",
    "TOPIC_TEMPLATE",
    "ACK_MESSAGES",
    "INDEX",
    "DEVICE_TIMEZONE",
    "OPENSEARCH_SERVICE",
    "RUST_LOG",
    "AWS_LAMBDA_LOG_FORMAT",
    "AWS_LAMBDA_LOG_LEVEL",
    "METRICS_NAMESPACE",
    "QUERY_INDICES",
    "CORS_ORIGIN",
];

struct Ports {
    mqtt: u16,
    mqtts: u16,
    iot: u16,
    opensearch: u16,
    watch: u16,
    gateway: u16,
}

struct Options {
    ports: Ports,
    release: bool,
    simulated_box: bool,
}

fn parse(args: &[String]) -> Result<Option<Options>> {
    let env_port = |name: &str, default: u16| -> Result<u16> {
        match std::env::var(name) {
            Ok(value) => value
                .parse()
                .map_err(|_| format!("{name}=`{value}` is not a port number")),
            Err(_) => Ok(default),
        }
    };
    let mut options = Options {
        ports: Ports {
            mqtt: env_port("DEV_MQTT_PORT", 1883)?,
            mqtts: env_port("DEV_MQTTS_PORT", 8883)?,
            iot: env_port("DEV_IOT_PORT", 4443)?,
            opensearch: env_port("DEV_OPENSEARCH_PORT", 9200)?,
            watch: env_port("DEV_WATCH_PORT", 9000)?,
            gateway: env_port("DEV_GATEWAY_PORT", 3000)?,
        },
        release: false,
        simulated_box: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let slot = match flag.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "--release" => {
                options.release = true;
                continue;
            }
            "--box" => {
                options.simulated_box = true;
                continue;
            }
            "--mqtt-port" => &mut options.ports.mqtt,
            "--mqtts-port" => &mut options.ports.mqtts,
            "--iot-port" => &mut options.ports.iot,
            "--opensearch-port" => &mut options.ports.opensearch,
            "--watch-port" => &mut options.ports.watch,
            "--gateway-port" => &mut options.ports.gateway,
            other => return Err(format!("unknown option `{other}`\n{USAGE}")),
        };
        let value = it.next().ok_or_else(|| format!("{flag} needs a port"))?;
        *slot = value
            .parse()
            .map_err(|_| format!("{flag}: `{value}` is not a port number"))?;
    }
    Ok(Some(options))
}

pub fn run(args: &[String]) -> Result {
    let Some(options) = parse(args)? else {
        return Ok(());
    };
    let ports = &options.ports;
    let user_opensearch = std::env::var("OPENSEARCH_URL")
        .ok()
        .filter(|url| !url.trim().is_empty());

    // Fail early and clearly on a taken port, before installing or building anything.
    let mut wanted = vec![
        (ports.mqtt, "MQTT broker (--mqtt-port)"),
        (ports.mqtts, "MQTT broker, TLS (--mqtts-port)"),
        (ports.iot, "IoT data-plane endpoint (--iot-port)"),
        (ports.watch, "cargo lambda watch (--watch-port)"),
        (ports.gateway, "gateway (--gateway-port)"),
    ];
    if user_opensearch.is_none() {
        wanted.push((ports.opensearch, "osmem-server (--opensearch-port)"));
    }
    check_ports(&wanted)?;

    // Ctrl-C / SIGTERM from here on tears everything down.
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;

    let cargo_lambda = tools::ensure_cargo_lambda()?;
    tools::ensure_mosquitto()?;
    // The "try it" lines below subscribe with `mosquitto_sub` (Debian's
    // mosquitto-clients): installed as root, otherwise named; the stack runs without it.
    if let Err(e) = tools::ensure_debian_package("/usr/bin/mosquitto_sub", "mosquitto-clients") {
        eprintln!("note: {e}");
    }
    let osmem = if user_opensearch.is_none() {
        Some(ensure_osmem_server()?)
    } else {
        None
    };

    let profile = if options.release { "release" } else { "debug" };
    let release: &[&str] = if options.release { &["--release"] } else { &[] };
    tools::run(
        Command::new("cargo")
            .current_dir(root())
            .args(["build", "-p", "localstack", "--bin", "localstack"])
            .args(release),
    )?;
    // Exactly what `cargo lambda watch` runs (`cargo run --bin <fn>` at the root, so the
    // default members' feature set), so its first build of a function finds it fresh.
    // Building the functions together with localstack would unify other features and
    // make watch recompile on the first request (~20 s).
    let mut functions = Command::new("cargo");
    functions.current_dir(root()).arg("build").args(release);
    // nodata too: watch serves it beside the ingest functions (the minute check invokes it),
    // and query (the page and the read API).
    for function in FUNCTIONS.iter().chain(&["nodata", QUERY]) {
        functions.args(["--bin", function]);
    }
    tools::run(&mut functions)?;
    if options.simulated_box {
        tools::run(
            Command::new("cargo")
                .current_dir(root())
                .args(["build", "-p", "sensorbox", "--bin", "sensorbox"])
                .args(release),
        )?;
    }

    let logs = root().join("target").join("dev");
    std::fs::create_dir_all(&logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
    let mut peers = Peers::default();

    // OpenSearch: osmem-server in memory, or the user's own.
    let opensearch_url = match (&user_opensearch, osmem) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(binary)) => {
            let addr = format!("{HOST}:{}", ports.opensearch);
            let log = logs.join("osmem-server.log");
            let mut command = Command::new(&binary);
            command
                .args(["-addr", &addr, "-no-stdin-watch"])
                .stdin(Stdio::null())
                .stdout(log_file(&log)?)
                .stderr(log_file(&log)?);
            peers.spawn("osmem-server", &mut command)?;
            let url = format!("http://{addr}");
            peers.wait_until("osmem-server", Duration::from_secs(30), &stop_rx, || {
                http_status(&addr, "GET", "/", "").is_some_and(|s| s == 200)
            })?;
            warm_up_osmem(&addr)?;
            url
        }
        (None, None) => unreachable!("osmem-server is installed when OPENSEARCH_URL is unset"),
    };
    match apply_templates(&opensearch_url) {
        Ok(count) => eprintln!("applied {count} index templates to {opensearch_url}"),
        Err(e) if user_opensearch.is_none() => {
            return Err(format!("applying the index templates: {e}"))
        }
        Err(e) => eprintln!(
            "warning: could not apply the index templates to {opensearch_url}: {e}\n\
             (apply them by hand: cargo xtask opensearch-setup <url>)"
        ),
    }

    // The functions under cargo lambda watch, configured for the local peers.
    let mut env: Vec<(String, String)> = vec![
        (
            "AWS_ENDPOINT_URL_IOT_DATA_PLANE".into(),
            format!("http://{HOST}:{}", ports.iot),
        ),
        ("OPENSEARCH_URL".into(), opensearch_url.clone()),
        (
            "OPENSEARCH_AUTH".into(),
            std::env::var("OPENSEARCH_AUTH").unwrap_or_else(|_| "none".into()),
        ),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "AKIDLOCALSTACK".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "localstack-secret".into()),
    ];
    for name in PASS_THROUGH {
        if let Ok(value) = std::env::var(name) {
            env.push(((*name).to_owned(), value));
        }
    }
    let env_file = logs.join("functions.env");
    write_env_file(&env_file, &env)?;
    let mut command = Command::new(&cargo_lambda);
    command
        .current_dir(root())
        .env("PATH", tools::path_with_venv())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        // The functions must not pick up the user's real AWS session.
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .args([
            "lambda",
            "watch",
            "-A",
            HOST,
            "-P",
            &ports.watch.to_string(),
        ])
        .arg("--env-file")
        .arg(&env_file)
        .stdin(Stdio::null())
        // The functions' stdout (logs and EMF metrics) goes through us: see stats.rs.
        .stdout(Stdio::piped());
    if options.release {
        command.arg("--release");
    }
    peers.spawn("cargo lambda watch", &mut command)?;
    if let Some(stdout) = peers.take_stdout() {
        crate::stats::tee_functions_output(stdout, &crate::stats::functions_log())?;
    }
    peers.wait_until(
        "cargo lambda watch",
        Duration::from_secs(300),
        &stop_rx,
        || port_open(ports.watch),
    )?;

    // Start each function now (a request that changes nothing: GET answers 405, or the
    // rules for query), so the first request after "ready" runs a warm function instead
    // of waiting for a build.
    let warm_ups = FUNCTIONS
        .iter()
        .map(|f| (*f, format!("/{f}"), 405))
        .chain([(QUERY, "/api/rules".to_string(), 200)]);
    for (function, path, expected) in warm_ups {
        let (done_tx, done_rx) = mpsc::channel();
        let watch_port = ports.watch;
        std::thread::spawn(move || {
            let _ = done_tx.send(warm_up(watch_port, function, &path, expected));
        });
        let mut outcome = None;
        peers.wait_until(function, Duration::from_secs(600), &stop_rx, || {
            if let Ok(result) = done_rx.try_recv() {
                outcome = Some(result);
            }
            outcome.is_some()
        })?;
        if let Some(Err(e)) = outcome {
            return Err(e);
        }
    }

    // The broker, the IoT endpoint and the gateway last: the gateway's port opens only
    // once every function behind it answers.
    let localstack = root().join("target").join(profile).join("localstack");
    let mut command = Command::new(&localstack);
    command
        .args(["--mqtt-port", &ports.mqtt.to_string()])
        .args(["--mqtts-port", &ports.mqtts.to_string()])
        .arg("--certs")
        .arg(logs.join("certs"))
        .arg("--broker-dir")
        .arg(logs.join("mosquitto"))
        .args(["--things", BOX_THING])
        .args(["--iot-port", &ports.iot.to_string()])
        .args(["--gateway-port", &ports.gateway.to_string()])
        .args(["--invoke-url", &format!("http://{HOST}:{}", ports.watch)])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    peers.spawn("localstack", &mut command)?;
    for (port, what) in [
        (ports.mqtt, "MQTT broker"),
        (ports.mqtts, "MQTT broker (TLS)"),
        (ports.iot, "IoT endpoint"),
        (ports.gateway, "gateway"),
    ] {
        peers.wait_until(what, Duration::from_secs(30), &stop_rx, || port_open(port))?;
    }

    // `cargo lambda invoke` sends to [::1] by default; watch listens on 127.0.0.1 only
    // (loopback, never the LAN), so relay the IPv6 loopback port to it.
    let invoke_flag = match forward_ipv6_loopback(ports.watch) {
        Ok(()) => "",
        Err(e) => {
            eprintln!("note: {e}; pass -A {HOST} to cargo lambda invoke");
            " -A 127.0.0.1"
        }
    };

    print_banner(ports, &opensearch_url, invoke_flag);
    start_no_data_schedule(ports.watch);
    if options.simulated_box {
        start_simulated_box(&mut peers, ports, profile, &logs)?;
    }

    // Serve until Ctrl-C or until a peer dies.
    loop {
        match stop_rx.recv_timeout(Duration::from_millis(500)) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                eprintln!("\nstopping the local stack...");
                peers.stop_all();
                eprintln!("stopped; ports freed");
                return Ok(());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(dead) = peers.exited() {
                    peers.stop_all();
                    return Err(format!("{dead}; stopped the local stack"));
                }
            }
        }
    }
}

/// The scheduled no-data check, as EventBridge runs it on AWS: `nodata` invoked with a
/// scheduled event every minute, on a thread that ends with the process.
fn start_no_data_schedule(watch_port: u16) {
    let event = std::fs::read_to_string(root().join("events/nodata/scheduled.json"))
        .unwrap_or_else(|_| "{}".into());
    std::thread::spawn(move || {
        let addr = format!("{HOST}:{watch_port}");
        let mut failing = false;
        loop {
            std::thread::sleep(Duration::from_secs(60));
            let answer = http(
                &addr,
                "POST",
                "/2015-03-31/functions/nodata/invocations",
                &event,
            );
            match answer {
                Some((200, _)) => failing = false,
                // Said once per failure streak, not every minute.
                other if !failing => {
                    failing = true;
                    eprintln!("note: the scheduled no-data check failed: {other:?}");
                }
                _ => {}
            }
        }
    });
}

/// A box with the three routes on simulated sources, its queue under target/dev/box, its
/// MQTT connection on the TLS port with the device certificate localstack issued. Its log
/// (one line per send, one per warning) goes to the terminal.
fn start_simulated_box(peers: &mut Peers, ports: &Ports, profile: &str, logs: &Path) -> Result {
    let dir = logs.join("box");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let config = dir.join("config.toml");
    let certs = logs.join("certs");
    let mut text = format!(
        "api_url = \"http://{HOST}:{gateway}\"\ngroupid = \"box-1\"\n\
         gps = \"37.61002501514269, 126.99636868892937\"\nthing_name = \"{BOX_THING}\"\n\
         clock = \"system\"\n[queue]\npath = \"{queue}\"\n\
         [mqtt]\nendpoint = \"localhost\"\nport = {mqtts}\nkeep_alive_s = 30\n\
         ca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n",
        gateway = ports.gateway,
        mqtts = ports.mqtts,
        queue = dir.join("queue.db").display(),
        ca = certs.join("ca.pem").display(),
        cert = certs.join(format!("{BOX_THING}.pem")).display(),
        key = certs.join(format!("{BOX_THING}.key")).display(),
    );
    for (seed, route) in FUNCTIONS.iter().enumerate() {
        text.push_str(&format!(
            "[[sensor]]\nroute = \"{route}\"\ninterval_s = 5\nsource = {{ kind = \"simulate\", seed = {seed} }}\n"
        ));
    }
    std::fs::write(&config, text).map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let agent = root().join("target").join(profile).join("sensorbox");
    let mut command = Command::new(agent);
    command
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "sensorbox=info")
        .stdin(Stdio::null());
    peers.spawn("sensorbox (simulated box, group box-1)", &mut command)?;
    println!(
        "simulated box: group box-1, gasdetector/dust/temp every 5 s, config {}\n  \
         queue:   target/{profile}/sensorbox --config {} queue\n  \
         status:  target/{profile}/sensorbox --config {} status\n  \
         shadow:  curl -s http://{HOST}:{iot}/things/{BOX_THING}/shadow\n",
        config.display(),
        config.display(),
        config.display(),
        iot = ports.iot,
    );
    Ok(())
}

/// Listens on `[::1]:port` and pipes every connection to `127.0.0.1:port`, on threads that
/// end with the process.
fn forward_ipv6_loopback(port: u16) -> Result {
    let listener = TcpListener::bind(("::1", port))
        .map_err(|e| format!("cannot listen on [::1]:{port} ({e})"))?;
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(upstream) = TcpStream::connect((HOST, port)) else {
                    return;
                };
                let (Ok(mut client_read), Ok(mut upstream_read)) =
                    (client.try_clone(), upstream.try_clone())
                else {
                    return;
                };
                let (mut client_write, mut upstream_write) = (client, upstream);
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client_read, &mut upstream_write);
                    let _ = upstream_write.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut upstream_read, &mut client_write);
                let _ = client_write.shutdown(std::net::Shutdown::Write);
                let _ = up.join();
            });
        }
    });
    Ok(())
}

fn print_banner(ports: &Ports, opensearch_url: &str, invoke_flag: &str) {
    let sample = sample_body();
    let curl_body = match &sample {
        Some(path) => format!("--data-binary @{}", path.display()),
        None => format!("--data-binary '{SEED}'"),
    };
    let invoke = sample_event()
        .map(|path| {
            let port = if ports.watch == 9000 {
                String::new()
            } else {
                format!(" --invoke-port {}", ports.watch)
            };
            format!(
                "  cargo lambda invoke gasdetector{invoke_flag}{port} --data-file {}\n",
                path.display()
            )
        })
        .unwrap_or_default();
    println!(
        "\n\
http://{HOST}:{gw}/   the fleet page (boxes, positions, charts, warnings)

local stack ready (Ctrl-C stops everything)
  page           http://{HOST}:{gw}/   read API: /api/boxes /api/readings /api/warnings /api/rules
  gateway        http://{HOST}:{gw}/gasdetector  /dust  /temp
  functions      http://{HOST}:{watch}/2015-03-31/functions/<gasdetector|dust|temp|query>/invocations
  IoT endpoint   http://{HOST}:{iot}   (AWS_ENDPOINT_URL_IOT_DATA_PLANE)
  MQTT broker    mqtt://{HOST}:{mqtt}   mqtts://localhost:{mqtts} (client certificate from target/dev/certs)
  OpenSearch     {opensearch_url}
  logs           target/dev/

try it:
  mosquitto_sub -h {HOST} -p {mqtt} -t 'pi/#' -q 1 -v
  curl -sS -X POST http://{HOST}:{gw}/gasdetector -H 'content-type: application/json' {curl_body}
{invoke}  curl -sS '{opensearch_url}/gasdetect/_search?q=groupid:2&pretty'
  cargo xtask stats      (sums the functions' EMF metrics from target/dev/functions.log)
",
        gw = ports.gateway,
        watch = ports.watch,
        iot = ports.iot,
        mqtt = ports.mqtt,
        mqtts = ports.mqtts,
    );
}

/// The design's seed reading with no2 above the default threshold, for the curl line when
/// `events/` has no plain body sample.
const SEED: &str = r#"{"groupid": "2", "gps": "37.61002501514269, 126.99636868892937", "co": {"sensorid": "0005", "sensortype": "8", "value": "26.20", "createdtime": "2021-09-03 18:14:49"}, "no2": {"sensorid": "0006", "sensortype": "9", "value": "95.00", "createdtime": "2021-09-03 18:14:49"}}"#;

/// A plain request body under `events/gasdetector/` (a reading, not an envelope),
/// preferably one that trips the no2 rule.
fn sample_body() -> Option<PathBuf> {
    let files = sample_files();
    let plain =
        |text: &str| serde_free_has_key(text, "groupid") && !serde_free_has_key(text, "httpMethod");
    let named = |path: &Path, part: &str| path.to_string_lossy().contains(part);
    files
        .iter()
        .find(|(path, text)| plain(text) && named(path, "warn-no2"))
        .or_else(|| {
            files
                .iter()
                .find(|(path, text)| plain(text) && !named(path, "batch"))
        })
        .or_else(|| files.iter().find(|(_, text)| plain(text)))
        .map(|(path, _)| path.clone())
}

/// An API Gateway REST event under `events/gasdetector/` for `cargo lambda invoke`.
fn sample_event() -> Option<PathBuf> {
    let files = sample_files();
    files
        .iter()
        .find(|(path, text)| {
            serde_free_has_key(text, "httpMethod")
                && path.to_string_lossy().contains("warn-no2-apigw-rest")
        })
        .or_else(|| {
            files
                .iter()
                .find(|(_, text)| serde_free_has_key(text, "httpMethod"))
        })
        .map(|(path, _)| path.clone())
}

fn sample_files() -> Vec<(PathBuf, String)> {
    let dir = Path::new("events").join("gasdetector");
    let Ok(entries) = std::fs::read_dir(root().join(&dir)) else {
        return Vec::new();
    };
    let mut files: Vec<(PathBuf, String)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            Some((dir.join(p.file_name()?), text))
        })
        .collect();
    files.sort();
    files
}

fn serde_free_has_key(text: &str, key: &str) -> bool {
    text.contains(&format!("\"{key}\""))
}

/// osmem-server ships a static binary inside its wheel; there is no console script.
fn ensure_osmem_server() -> Result<PathBuf> {
    if let Some(binary) = find_osmem_server() {
        return Ok(binary);
    }
    tools::ensure_python_tools(&[("osmem-server", "osmem-server")])?;
    find_osmem_server().ok_or_else(|| {
        "osmem-server is installed but its binary (site-packages/osmem_server/bin/osmem-server) \
         is missing"
            .into()
    })
}

fn find_osmem_server() -> Option<PathBuf> {
    let script = tools::venv_bin("osmem-server");
    if script.exists() {
        return Some(script);
    }
    let lib = tools::venv_dir().join("lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| {
            e.path()
                .join("site-packages")
                .join("osmem_server")
                .join("bin")
                .join("osmem-server")
        })
        .find(|p| p.exists())
}

fn check_ports(wanted: &[(u16, &str)]) -> Result {
    for (i, (port, what)) in wanted.iter().enumerate() {
        if let Some((_, other)) = wanted[..i].iter().find(|(p, _)| p == port) {
            return Err(format!("port {port} is given to both {other} and {what}"));
        }
        if let Err(e) = TcpListener::bind((HOST, *port)) {
            return Err(format!(
                "port {port} for the {what} is not free on {HOST} ({e}); \
                 stop what uses it or pick another port"
            ));
        }
    }
    Ok(())
}

fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Invokes `function` through watch's invoke API with a GET event and checks that the
/// function itself answered (405). The first invoke makes watch start the function (and
/// build it if the pre-build missed), so the wait is generous.
fn warm_up(watch_port: u16, function: &str, route: &str, expected: u16) -> Result {
    let event = format!(
        r#"{{"resource":"{route}","path":"{route}","httpMethod":"GET","headers":{{}},"multiValueHeaders":{{}},"queryStringParameters":null,"multiValueQueryStringParameters":null,"pathParameters":null,"stageVariables":null,"requestContext":{{"accountId":"123456789012","apiId":"local","resourceId":"local","stage":"local","requestId":"warm-up","resourcePath":"{route}","httpMethod":"GET","path":"/local{route}","protocol":"HTTP/1.1","identity":{{"sourceIp":"127.0.0.1"}}}},"body":null,"isBase64Encoded":false}}"#
    );
    let addr = format!("{HOST}:{watch_port}");
    let path = format!("/2015-03-31/functions/{function}/invocations");
    let (status, reply) = http_with_timeout(&addr, "POST", &path, &event, Duration::from_secs(600))
        .ok_or_else(|| {
            format!("no answer from {function} under cargo lambda watch (logs above)")
        })?;
    let answered = reply.contains(&format!("\"statusCode\":{expected}"))
        || reply.contains(&format!("\"statusCode\": {expected}"));
    if status != 200 || !answered {
        return Err(format!(
            "{function} did not answer the warm-up request as expected (HTTP {status}): {reply}"
        ));
    }
    Ok(())
}

/// osmem-server spends ~0.8 s on the first index it creates (any index); pay that now
/// with a throwaway index (matched by no template, deleted at once), not in the first
/// reading after "ready".
fn warm_up_osmem(addr: &str) -> Result {
    const INDEX: &str = "/xtask-warm-up";
    for (method, expect) in [("PUT", 200), ("DELETE", 200)] {
        match http(addr, method, INDEX, "") {
            Some((status, _)) if status == expect => {}
            other => {
                return Err(format!(
                    "warming up osmem-server: {method} {INDEX} answered {other:?}"
                ))
            }
        }
    }
    Ok(())
}

/// A minimal HTTP/1.1 request over std (plain `http://` only): status and body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    http_with_timeout(addr, method, path, body, Duration::from_secs(10))
}

fn http_with_timeout(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Some((status, body.to_owned()))
}

fn http_status(addr: &str, method: &str, path: &str, body: &str) -> Option<u16> {
    http(addr, method, path, body).map(|(status, _)| status)
}

/// PUTs each `infra/opensearch/index-templates/<name>.json` to `_index_template/<name>`:
/// over std for `http://`, with curl (`-k`: local containers use a demo certificate)
/// for `https://`.
fn apply_templates(url: &str) -> Result<usize> {
    let dir = root()
        .join("infra")
        .join("opensearch")
        .join("index-templates");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no index templates in {}", dir.display()));
    }
    for file in &files {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("bad file name {}", file.display()))?;
        let body = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let path = format!("/_index_template/{name}");
        let (status, reply) = if let Some(addr) = url.strip_prefix("http://") {
            http(addr.trim_end_matches('/'), "PUT", &path, &body)
                .ok_or_else(|| format!("no answer from {url}"))?
        } else {
            let output = Command::new("curl")
                .args(["-sS", "-k", "--max-time", "30", "-X", "PUT"])
                .args(["-H", "content-type: application/json", "--data-binary"])
                .arg(format!("@{}", file.display()))
                .args(["-w", "\n%{http_code}"])
                .arg(format!("{url}{path}"))
                .output()
                .map_err(|e| format!("cannot run curl: {e}"))?;
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let (reply, code) = text.rsplit_once('\n').unwrap_or(("", &text));
            let stderr = String::from_utf8_lossy(&output.stderr);
            let status = code
                .trim()
                .parse()
                .map_err(|_| format!("curl failed: {stderr}"))?;
            (status, reply.to_owned())
        };
        if status != 200 {
            return Err(format!("PUT {path} answered {status}: {reply}"));
        }
    }
    Ok(files.len())
}

fn log_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

fn write_env_file(path: &Path, env: &[(String, String)]) -> Result {
    let mut text = String::new();
    for (key, value) in env {
        if value.contains('\n') {
            return Err(format!("{key} must not contain a newline"));
        }
        text.push_str(&format!("{key}={value}\n"));
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The started peers, each the leader of its own process group; dropping stops them all.
#[derive(Default)]
struct Peers {
    children: Vec<(&'static str, Child)>,
}

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn signal_group(pgid: u32, signal: i32) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        kill(-pgid, signal);
    }
}

impl Peers {
    fn spawn(&mut self, name: &'static str, command: &mut Command) -> Result {
        // Own process group: Ctrl-C reaches only xtask, which then stops each group whole
        // (cargo lambda watch's function processes included).
        command.process_group(0);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {name} (`{}`): {e}", tools::describe(command)))?;
        eprintln!("started {name} (pid {})", child.id());
        self.children.push((name, child));
        Ok(())
    }

    /// The stdout pipe of the peer spawned last, if it was piped.
    fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.children.last_mut()?.1.stdout.take()
    }

    /// Polls `ready` until it holds, failing if the deadline passes, a peer exits or the
    /// user presses Ctrl-C.
    fn wait_until(
        &mut self,
        what: &str,
        deadline: Duration,
        stop: &mpsc::Receiver<()>,
        mut ready: impl FnMut() -> bool,
    ) -> Result {
        let start = Instant::now();
        loop {
            if ready() {
                eprintln!("{what} ready after {:.1} s", start.elapsed().as_secs_f64());
                return Ok(());
            }
            if let Some(dead) = self.exited() {
                return Err(format!("{dead} while waiting for {what}"));
            }
            if start.elapsed() > deadline {
                return Err(format!(
                    "{what} not ready after {} s (logs in target/dev/)",
                    deadline.as_secs()
                ));
            }
            if stop.recv_timeout(Duration::from_millis(100)).is_ok() {
                return Err("interrupted".into());
            }
        }
    }

    /// The first peer that has exited, described.
    fn exited(&mut self) -> Option<String> {
        for (name, child) in &mut self.children {
            match child.try_wait() {
                Ok(Some(status)) => return Some(format!("{name} exited ({status})")),
                Ok(None) => {}
                Err(e) => return Some(format!("{name}: {e}")),
            }
        }
        None
    }

    /// SIGTERM to every group, up to 10 s grace, then SIGKILL to whatever is left.
    fn stop_all(&mut self) {
        for (_, child) in self.children.iter().rev() {
            signal_group(child.id(), SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (name, child) in self.children.iter_mut().rev() {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        eprintln!("{name} did not stop on SIGTERM: killing it");
                        signal_group(child.id(), SIGKILL);
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            // Stragglers in the group (e.g. a function process) go too.
            signal_group(child.id(), SIGKILL);
        }
        self.children.clear();
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        self.stop_all();
    }
}
