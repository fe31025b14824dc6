//! `localstack`: the MQTT broker, the IoT data-plane endpoint and the API Gateway
//! emulator in one process. Prints what it bound, then serves until Ctrl-C / SIGTERM.

use localstack::{GatewayConfig, Stack, StackConfig};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage: localstack [options]

  --host IP            address to listen on (default 127.0.0.1)
  --mqtt-port N        MQTT broker port (default 1883; 0 = any free port)
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
  --quiet              no per-request log lines
";

struct Options {
    host: IpAddr,
    mqtt: u16,
    iot: u16,
    gateway: u16,
    invoke: String,
    stage: String,
    timeout: u64,
    quiet: bool,
    api_key: Option<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        host: IpAddr::from([127, 0, 0, 1]),
        mqtt: 1883,
        iot: 4443,
        gateway: 3000,
        invoke: "http://127.0.0.1:9000".into(),
        stage: "local".into(),
        timeout: 600,
        quiet: false,
        api_key: None,
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
            "--iot-port" => options.iot = port()?,
            "--gateway-port" => options.gateway = port()?,
            "--invoke-url" => options.invoke = value.clone(),
            "--stage" => options.stage = value.clone(),
            "--api-key" => options.api_key = Some(value.clone()),
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
            eprintln!("localstack: {message}\n{USAGE}");
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
            eprintln!("localstack: cannot start the runtime: {e}");
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
    let config = StackConfig {
        mqtt: SocketAddr::new(options.host, options.mqtt),
        iot: SocketAddr::new(options.host, options.iot),
        gateway: SocketAddr::new(options.host, options.gateway),
        gateway_config,
    };
    let stack = match Stack::start(config).await {
        Ok(stack) => stack,
        Err(message) => {
            eprintln!("localstack: {message}");
            return ExitCode::FAILURE;
        }
    };
    println!("mqtt     mqtt://{}", stack.broker.local_addr());
    println!("iot-data {}", stack.iot.url());
    println!(
        "gateway  {} -> {}/2015-03-31/functions/<fn>/invocations",
        stack.gateway.url(),
        options.invoke.trim_end_matches('/')
    );
    println!("ready");
    wait_for_signal().await;
    eprintln!("localstack: stopping");
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
