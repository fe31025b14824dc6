//! The command line of `cargo xtask dev`: its flags, the `DEV_*_PORT` defaults and usage.

use crate::tools::Result;

const USAGE: &str = "\
usage: cargo xtask dev [options]

  --mqtt-port N         MQTT broker, plain       (default 1883, env DEV_MQTT_PORT)
  --mqtts-port N        MQTT broker, mutual TLS  (default 8883, env DEV_MQTTS_PORT)
  --iot-port N          IoT data-plane endpoint  (default 4443, env DEV_IOT_PORT)
  --opensearch-port N   osmem-server             (default 9200, env DEV_OPENSEARCH_PORT)
  --watch-port N        cargo lambda watch       (default 9000, env DEV_WATCH_PORT)
  --gateway-port N      API Gateway emulator     (default 3000, env DEV_GATEWAY_PORT)
  --registry-port N     IoT registry (moto)      (default 5010, env DEV_REGISTRY_PORT)
  --credentials-port N  IoT credentials provider (default 5011, env DEV_CREDENTIALS_PORT)
  --kinesis-port N      Kinesis emulator, with --stream (default 4567, env DEV_KINESIS_PORT)
  --credentials-lifetime S
                        seconds the credentials provider's credentials last (default
                        3600, as the stacks' role alias); shorter to watch boxes renew
  --as-deployed         run the stack exactly as deployed: the shared-key routes
                        (POST /gasdetector, ...) refused, as LegacyKeyRoutes=false
                        deploys them; boxes post to /things/{thing}/<sensor>, signed
  --stream              also run the stream path (IngestPath=stream): a Kinesis emulator
                        (ferrokinesis) fed by the stream rule on the Basic Ingest topic
                        $aws/rules/sensorbox_readings/devices/<thing>/data/<sensor>/<group>,
                        and an event source mapping invoking the functions with Kinesis
                        batches; with --box, the box publishes that way (transport =
                        \"stream\")
  --release             build the functions in release mode
  --box                 also run a simulated box (sensorbox with simulate sources for
                        gasdetector, dust and temp, every 5 s) against the gateway; it
                        receives its group's warnings over mutual TLS (port 8883) and
                        its shadow shows connected true/false; it posts readings
                        signed with credentials from the credentials provider

With OPENSEARCH_URL set (e.g. https://admin:PASSWORD@localhost:9200 for the
opensearchproject/opensearch container) no osmem-server is started; the functions use
that URL with OPENSEARCH_AUTH (default none). RULES, TOPIC_TEMPLATE, ACK_MESSAGES, INDEX
and DEVICE_TIMEZONE are passed on to the functions when set.
";

/// The ports of the local peers, all on 127.0.0.1.
pub struct Ports {
    pub mqtt: u16,
    pub mqtts: u16,
    pub iot: u16,
    pub opensearch: u16,
    pub watch: u16,
    pub gateway: u16,
    pub registry: u16,
    pub credentials: u16,
    pub kinesis: u16,
}

pub struct Options {
    pub ports: Ports,
    pub release: bool,
    pub simulated_box: bool,
    /// Legacy shared-key routes off, as a stack deploys by default.
    pub as_deployed: bool,
    /// `--credentials-lifetime`, seconds.
    pub credentials_lifetime: u64,
    /// `--stream`: the Kinesis emulator, the stream rule and the event source mappings.
    pub stream: bool,
}

impl Options {
    /// The cargo profile the binaries are built with (`target/<profile>/`).
    pub fn profile(&self) -> &'static str {
        if self.release {
            "release"
        } else {
            "debug"
        }
    }

    /// `--release` for cargo when building in release mode.
    pub fn release_flag(&self) -> &'static [&'static str] {
        if self.release {
            &["--release"]
        } else {
            &[]
        }
    }
}

/// The options, or `None` after printing the usage for `--help`.
pub fn parse(args: &[String]) -> Result<Option<Options>> {
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
            registry: env_port("DEV_REGISTRY_PORT", 5010)?,
            credentials: env_port("DEV_CREDENTIALS_PORT", 5011)?,
            kinesis: env_port("DEV_KINESIS_PORT", 4567)?,
        },
        release: false,
        simulated_box: false,
        as_deployed: false,
        credentials_lifetime: 3600,
        stream: false,
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
            "--as-deployed" => {
                options.as_deployed = true;
                continue;
            }
            "--stream" => {
                options.stream = true;
                continue;
            }
            "--credentials-lifetime" => {
                let value = it.next().ok_or("--credentials-lifetime needs seconds")?;
                options.credentials_lifetime = match value.parse() {
                    Ok(seconds @ 1..) => seconds,
                    _ => {
                        return Err(format!(
                            "--credentials-lifetime: `{value}` is not a positive number of seconds"
                        ))
                    }
                };
                continue;
            }
            "--mqtt-port" => &mut options.ports.mqtt,
            "--mqtts-port" => &mut options.ports.mqtts,
            "--iot-port" => &mut options.ports.iot,
            "--opensearch-port" => &mut options.ports.opensearch,
            "--watch-port" => &mut options.ports.watch,
            "--gateway-port" => &mut options.ports.gateway,
            "--registry-port" => &mut options.ports.registry,
            "--credentials-port" => &mut options.ports.credentials,
            "--kinesis-port" => &mut options.ports.kinesis,
            other => return Err(format!("unknown option `{other}`\n{USAGE}")),
        };
        let value = it.next().ok_or_else(|| format!("{flag} needs a port"))?;
        *slot = value
            .parse()
            .map_err(|_| format!("{flag}: `{value}` is not a port number"))?;
    }
    Ok(Some(options))
}
