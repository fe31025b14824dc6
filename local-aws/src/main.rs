//! `local-aws`: the MQTT broker (Mosquitto, started as a child), the IoT data-plane
//! endpoint, the IoT rules and the API Gateway emulator in one process, and with
//! `--stream` the stream path (Kinesis emulator, Basic Ingest rule, event source
//! mappings). Prints what it bound, then serves until Ctrl-C / SIGTERM.

use local_aws::credentials::{CredentialsProvider, CredentialsProviderConfig};
use local_aws::{GatewayConfig, RegistryFront, Stack, StackConfig, StreamConfig, TlsConfig};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage: local-aws [options]

  --host IP            address to listen on (default 127.0.0.1)
  --mqtt-port N        MQTT broker port, plain (default 1883; 0 = any free port)
  --certs DIR          also listen with mutual TLS, certificates from the local CA
                       in DIR (created on first use: ca.pem, server.*, <thing>.*)
  --mqtts-port N       the mutual-TLS port (default 8883)
  --things A,B         issue device certificates for these things (with --certs)
  --broker-dir DIR     Mosquitto's configuration and log (default: a temporary
                       directory)
  --device-root NAME   DeviceTopicRoot of the stacks (default devices)
  --iot-port N         IoT data-plane endpoint port (default 4443)
  --gateway-port N     API Gateway emulator port (default 3000)
  --invoke-url URL     Lambda invoke API base of `cargo lambda watch`
                       (default http://127.0.0.1:9000)
  --stage NAME         API Gateway stage name in events (default local)
  --invoke-timeout S   seconds to wait for a function (default 600: the first
                       invocation under `cargo lambda watch` may compile it)
  --api-key KEY        require this x-api-key where api/openapi.yaml requires a
                       key (403 otherwise), as the deployed API does; default: no
                       key checked
  --moto-url URL       moto server (its IoT control plane is the registry); with
                       --certs, serve the registry in front of it on --registry-port
  --registry-port N    the IoT registry port (default 5010): moto, except that
                       CreateCertificateFromCsr is signed by the local CA
  --credentials-port N the IoT credentials provider (default 5011; with --moto-url):
                       mutual TLS, GET /role-aliases/<alias>/credentials; the
                       gateway then checks SigV4 on /things/{thing}/<sensor>
  --role-alias NAME    the role alias it serves (default local-sensor-box)
  --credentials-lifetime S
                       seconds the credentials it issues last (default 3600)
  --quiet              no per-request (and per-invocation) log lines

The stream path (only with --stream):
  --stream             run it: a Kinesis emulator (ferrokinesis, AWS's per-shard
                       write limits enforced) with the stream, the Basic Ingest rule
                       on $aws/rules/<rule>/<root>/+/data/+/+ putting records into
                       it, and one event source mapping per ingest function invoking
                       it at --invoke-url with Kinesis events; failed puts and given-up
                       batches go to moto's SQS (StreamRuleErrorQueue,
                       StreamFailureQueue) with --moto-url, else to the log
  --kinesis-port N     the Kinesis endpoint (default 4567)
  --stream-name NAME   the stream (default sensor-readings)
  --stream-shards N    its shards, 1 to 500 (default 2)
  --stream-rule NAME   StreamRuleName of the stacks (default sensorbox_readings)
  --stream-batch-size N
                       BatchSize, 1 to 10000 (default 1000)
  --stream-window-ms N MaximumBatchingWindow in ms, 0 to 300000 (default 1000 here;
                       the stacks' StreamBatchingWindowSeconds defaults to 5 s)
  --stream-max-retries N
                       MaximumRetryAttempts, -1 (until the record is 6 hours old) to
                       10000 (default 5)
";

struct Options {
    host: IpAddr,
    mqtt: u16,
    mqtts: u16,
    certs: Option<PathBuf>,
    broker_dir: Option<PathBuf>,
    device_root: String,
    things: Vec<String>,
    iot: u16,
    gateway: u16,
    invoke: String,
    stage: String,
    timeout: u64,
    quiet: bool,
    api_key: Option<String>,
    moto: Option<String>,
    registry: u16,
    credentials: u16,
    role_alias: String,
    lifetime: u64,
    stream: Option<StreamOptions>,
    /// A stream flag given, for the error when `--stream` is not.
    stream_flag: Option<String>,
}

struct StreamOptions {
    kinesis: u16,
    name: String,
    shards: u32,
    rule: String,
    batch_size: usize,
    window_ms: u64,
    max_retries: Option<u32>,
}

impl Default for StreamOptions {
    fn default() -> StreamOptions {
        StreamOptions {
            kinesis: 4567,
            name: local_aws::kinesis::DEFAULT_STREAM.into(),
            shards: local_aws::kinesis::DEFAULT_SHARDS,
            rule: local_aws::stream_rule::DEFAULT_RULE.into(),
            batch_size: 1000,
            window_ms: 1000,
            max_retries: Some(5),
        }
    }
}

/// `value` as an integer in `range`, or an error naming `flag` and the range.
fn number_in<T>(flag: &str, value: &str, range: std::ops::RangeInclusive<T>) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    match value.parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "{flag}: `{value}` is not a whole number from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        host: IpAddr::from([127, 0, 0, 1]),
        mqtt: 1883,
        mqtts: 8883,
        certs: None,
        broker_dir: None,
        device_root: "devices".into(),
        things: Vec::new(),
        iot: 4443,
        gateway: 3000,
        invoke: "http://127.0.0.1:9000".into(),
        stage: "local".into(),
        timeout: 600,
        quiet: false,
        api_key: None,
        moto: None,
        registry: 5010,
        credentials: 5011,
        role_alias: "local-sensor-box".into(),
        lifetime: local_aws::credentials::DEFAULT_LIFETIME.as_secs(),
        stream: None,
        stream_flag: None,
    };
    let mut stream = StreamOptions::default();
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        if flag == "--quiet" {
            options.quiet = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        if flag == "--stream" {
            options.stream = Some(StreamOptions::default());
            continue;
        }
        let value = iter.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let port = || {
            value
                .parse::<u16>()
                .map_err(|_| format!("{flag}: `{value}` is not a port number"))
        };
        match flag.as_str() {
            "--host" => {
                options.host = value
                    .parse()
                    .map_err(|_| format!("--host: `{value}` is not an IP address"))?
            }
            "--mqtt-port" => options.mqtt = port()?,
            "--mqtts-port" => options.mqtts = port()?,
            "--certs" => options.certs = Some(PathBuf::from(value)),
            "--broker-dir" => options.broker_dir = Some(PathBuf::from(value)),
            "--device-root" => options.device_root = value.clone(),
            "--things" => {
                options.things = value
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "--iot-port" => options.iot = port()?,
            "--gateway-port" => options.gateway = port()?,
            "--invoke-url" => options.invoke = value.clone(),
            "--stage" => options.stage = value.clone(),
            "--api-key" => options.api_key = Some(value.clone()),
            "--moto-url" => options.moto = Some(value.clone()),
            "--registry-port" => options.registry = port()?,
            "--credentials-port" => options.credentials = port()?,
            "--role-alias" => options.role_alias = value.clone(),
            "--credentials-lifetime" => {
                options.lifetime = match value.parse() {
                    Ok(seconds @ 1..) => seconds,
                    _ => {
                        return Err(format!(
                            "--credentials-lifetime: `{value}` is not a positive number of seconds"
                        ))
                    }
                }
            }
            "--invoke-timeout" => {
                options.timeout = value
                    .parse()
                    .map_err(|_| format!("--invoke-timeout: `{value}` is not a number"))?
            }
            "--kinesis-port"
            | "--stream-name"
            | "--stream-shards"
            | "--stream-rule"
            | "--stream-batch-size"
            | "--stream-window-ms"
            | "--stream-max-retries" => {
                options.stream_flag = Some(flag.clone());
                stream_flag(&mut stream, flag, value)?
            }
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    match (&mut options.stream, &options.stream_flag) {
        (Some(chosen), _) => *chosen = stream,
        (None, Some(flag)) => return Err(format!("{flag} needs --stream")),
        (None, None) => {}
    }
    Ok(options)
}

fn stream_flag(stream: &mut StreamOptions, flag: &str, value: &str) -> Result<(), String> {
    match flag {
        "--kinesis-port" => stream.kinesis = number_in(flag, value, 0..=u16::MAX)?,
        "--stream-name" => {
            // Kinesis: 1 to 128 characters of [a-zA-Z0-9_.-].
            let valid = (1..=128).contains(&value.len())
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !valid {
                return Err(format!(
                    "--stream-name: `{value}` is not a Kinesis stream name (1 to 128 of a-z A-Z 0-9 _ . -)"
                ));
            }
            stream.name = value.to_owned();
        }
        "--stream-shards" => stream.shards = number_in(flag, value, 1..=500)?,
        "--stream-rule" => {
            // The stacks' StreamRuleName: ^[a-zA-Z0-9_]+$ (an IoT rule name, 128 at most).
            let valid = (1..=128).contains(&value.len())
                && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "--stream-rule: `{value}` is not a rule name (1 to 128 of a-z A-Z 0-9 _)"
                ));
            }
            stream.rule = value.to_owned();
        }
        "--stream-batch-size" => stream.batch_size = number_in(flag, value, 1..=10_000)?,
        "--stream-window-ms" => stream.window_ms = number_in(flag, value, 0..=300_000)?,
        "--stream-max-retries" => {
            stream.max_retries = match number_in::<i64>(flag, value, -1..=10_000)? {
                -1 => None,
                n => Some(n as u32),
            }
        }
        _ => return Err(format!("unknown option `{flag}`")),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(message) => {
            if message.is_empty() {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("local-aws: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("local-aws: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(options))
}

async fn serve(options: Options) -> ExitCode {
    let mut gateway_config = GatewayConfig::sensors(options.invoke.clone());
    gateway_config.stage = options.stage;
    gateway_config.timeout = Duration::from_secs(options.timeout);
    gateway_config.log = !options.quiet;
    let stream = options.stream.as_ref().map(|chosen| {
        let mut stream = StreamConfig::new(SocketAddr::new(options.host, chosen.kinesis));
        stream.kinesis.stream = chosen.name.clone();
        stream.kinesis.shards = chosen.shards;
        stream.rule = chosen.rule.clone();
        stream.mapping.batch_size = chosen.batch_size;
        stream.mapping.window = Duration::from_millis(chosen.window_ms);
        stream.mapping.max_retries = chosen.max_retries;
        stream.mapping.invoke_timeout = Duration::from_secs(options.timeout);
        stream.mapping.log = !options.quiet;
        stream.moto = options.moto.clone();
        stream
    });
    gateway_config.api_key = options.api_key;
    // With a registry, the credentials provider issues credentials and the gateway checks
    // signatures made with them.
    let sessions = local_aws::sts::IssuedCredentials::default();
    if options.moto.is_some() {
        gateway_config.sessions = Some(sessions.clone());
    }
    let config = StackConfig {
        mqtt: SocketAddr::new(options.host, options.mqtt),
        mqtt_tls: options.certs.map(|certs| TlsConfig {
            addr: SocketAddr::new(options.host, options.mqtts),
            certs,
        }),
        broker_dir: options.broker_dir,
        device_root: options.device_root,
        iot: SocketAddr::new(options.host, options.iot),
        gateway: SocketAddr::new(options.host, options.gateway),
        gateway_config,
        stream,
    };
    let stack = match Stack::start(config).await {
        Ok(stack) => stack,
        Err(message) => {
            eprintln!("local-aws: {message}");
            return ExitCode::FAILURE;
        }
    };
    println!("mqtt     mqtt://{}", stack.broker.local_addr());
    if let (Some(addr), Some(certs)) = (stack.broker.tls_addr(), &stack.certs) {
        println!(
            "mqtts    mqtts://{addr} (client certificate required; CA {})",
            certs.ca().display()
        );
        for thing in &options.things {
            match certs.device(thing) {
                Ok(identity) => println!(
                    "device   {thing}: {} {}",
                    identity.cert.display(),
                    identity.key.display()
                ),
                Err(e) => {
                    eprintln!("local-aws: --things: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    } else if !options.things.is_empty() {
        eprintln!("local-aws: --things needs --certs");
        return ExitCode::FAILURE;
    }
    let _registry = match (&options.moto, &stack.certs) {
        (Some(moto), Some(certs)) => {
            let addr = SocketAddr::new(options.host, options.registry);
            let reload = stack.broker.reloader();
            let reload: local_aws::registry::Reload = std::sync::Arc::new(reload);
            match RegistryFront::start_revoking(addr, moto.clone(), certs.clone(), Some(reload))
                .await
            {
                Ok(front) => {
                    println!("registry {} (moto at {moto})", front.url());
                    Some(front)
                }
                Err(e) => {
                    eprintln!("local-aws: registry on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        (Some(_), None) => {
            eprintln!("local-aws: --moto-url needs --certs (the CA that signs the CSRs)");
            return ExitCode::FAILURE;
        }
        (None, _) => None,
    };
    let _credentials = match (&options.moto, &stack.certs) {
        (Some(moto), Some(certs)) => {
            let config = CredentialsProviderConfig {
                addr: SocketAddr::new(options.host, options.credentials),
                certs: certs.clone(),
                moto: moto.clone(),
                role_alias: options.role_alias.clone(),
                lifetime: Duration::from_secs(options.lifetime),
                sessions,
            };
            let addr = config.addr;
            match CredentialsProvider::start(config).await {
                Ok(provider) => {
                    println!(
                        "credentials https://{}/role-aliases/{}/credentials (client certificate required)",
                        provider.endpoint(),
                        options.role_alias
                    );
                    Some(provider)
                }
                Err(e) => {
                    eprintln!("local-aws: credentials provider on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    println!("broker   log {}", stack.broker.log_path().display());
    println!("iot-data {}", stack.iot.url());
    println!(
        "gateway  {} -> {}/2015-03-31/functions/<fn>/invocations",
        stack.gateway.url(),
        options.invoke.trim_end_matches('/')
    );
    if let Some(stream) = &stack.stream {
        let kinesis = &stream.kinesis;
        let functions: Vec<&str> = stream.mappings.iter().map(|m| m.function()).collect();
        println!(
            "kinesis  {} (stream {}, {}; AWS's write limits per shard)",
            kinesis.url(),
            kinesis.stream(),
            kinesis.stream_arn()
        );
        if let Some(rule) = stack.iot_rules.stream_rule() {
            println!(
                "stream   rule {} on {} -> {}; mappings {} (batch {}, window {} ms, retries {})",
                rule.config().rule,
                rule.config().filter(),
                kinesis.stream(),
                functions.join(", "),
                options.stream.as_ref().map_or(0, |s| s.batch_size),
                options.stream.as_ref().map_or(0, |s| s.window_ms),
                options
                    .stream
                    .as_ref()
                    .and_then(|s| s.max_retries)
                    .map_or("unlimited".to_owned(), |n| n.to_string()),
            );
        }
        match &options.moto {
            Some(moto) => println!(
                "stream   failures -> SQS {} and {} at {moto}",
                local_aws::destination::RULE_ERROR_QUEUE,
                local_aws::destination::FAILURE_QUEUE
            ),
            None => println!("stream   failures -> the log (no --moto-url)"),
        }
    }
    println!("ready");
    wait_for_signal().await;
    eprintln!("local-aws: stopping");
    drop(stack);
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
