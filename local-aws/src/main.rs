//! `local-aws`: the MQTT broker (Mosquitto, started as a child), the IoT data-plane
//! endpoint, the IoT rules and the API Gateway emulator in one process. Prints what it
//! bound, then serves until Ctrl-C / SIGTERM.

use local_aws::credentials::{CredentialsProvider, CredentialsProviderConfig};
use local_aws::{GatewayConfig, RegistryFront, Stack, StackConfig, TlsConfig};
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
  --quiet              no per-request log lines
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
    };
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        if flag == "--quiet" {
            options.quiet = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
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
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    Ok(options)
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
