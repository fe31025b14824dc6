//! The local stack: an MQTT broker (Mosquitto, with mutual TLS from a local CA), an AWS
//! IoT data-plane endpoint that relays `Publish` calls to it and keeps device shadows, the
//! IoT rules the stacks deploy, and an API Gateway (REST, v1 proxy) emulator that invokes
//! the functions through `cargo lambda watch`. Each starts on a given address (port 0
//! picks a free one) and reports the address it bound, so tests can run many stacks side
//! by side.
//!
//! # Layers
//!
//! A module uses only modules of lower layers, so the modules form no circle (the test
//! `modules_use_only_lower_layers` below checks every `crate::` path):
//!
//! 0. [`http`]: the hyper plumbing the servers share, and a reverse proxy's forwarding; `sdk`: the one SDK configuration of
//!    local-aws's own AWS clients; `counters`: waiting on a running piece's counts;
//! 1. the rest of the base: `aws_error` (AWS's JSON error responses), `thing_name` (IoT
//!    Core's thing and shadow names), `invoke` (the Lambda invoke API client),
//!    [`kinesis`] (the embedded Kinesis emulator served with `http`, its stream, the SDK
//!    client), [`destination`] (the SQS queues, or the log, failed stream messages go to),
//!    [`mqtt_publisher`] (the in-process client that publishes into the broker),
//!    [`mqtt_subscriber`] (a client that waits on what the broker routes to a filter),
//!    [`apigw_event`] (API Gateway's REST proxy event and response mapping), [`openapi`]
//!    (the contract), [`fault`] (the fault-injecting proxy), [`sts`] (the temporary
//!    credentials issued so far);
//! 2. [`certs`] (the local CA), [`shadow`] (the Device Shadow API), [`signature`]
//!    (API Gateway's SigV4 check and the boxes' role, over `sts`' sessions), `moto`
//!    (calls to moto's IoT control plane, with `invoke`'s client), [`stream_rule`] (the
//!    Basic Ingest rule's Kinesis action and error action: `destination`, `thing_name`)
//!    and [`event_source`] (the Kinesis event source mappings: `invoke`, `kinesis`,
//!    `destination`);
//! 3. [`broker`] (Mosquitto, mutual TLS with `certs`), [`iot`] (the data-plane
//!    endpoint: publishes through `mqtt_publisher`, shadows from `shadow`) and
//!    [`registry`] (moto's IoT control plane behind a front whose `CreateCertificateFromCsr`
//!    signs with `certs`' CA, through `invoke`'s HTTP client) and [`credentials`] (the IoT
//!    credentials provider: mutual TLS with `certs`, the registry through `moto`, sessions
//!    into `sts`);
//! 4. [`iot_rules`] (the emulated IoT rules: `mqtt_publisher`, `shadow`, `invoke`,
//!    `stream_rule`) and
//!    [`gateway`] (the API Gateway emulator: `invoke`, `apigw_event`, `openapi`, and
//!    `signature` on the IAM-authorized routes);
//! 5. [`Stack`] (this file), which starts them together.

pub mod apigw_event;
mod aws_error;
pub mod broker;
pub mod certs;
mod counters;
pub mod credentials;
pub mod destination;
pub mod event_source;
pub mod fault;
pub mod gateway;
pub mod http;
mod invoke;
pub mod iot;
pub mod iot_rules;
pub mod kinesis;
mod moto;
pub mod mqtt_publisher;
pub mod mqtt_subscriber;
pub mod openapi;
pub mod registry;
mod sdk;
pub mod shadow;
pub mod signature;
pub mod stream_rule;
pub mod sts;
mod thing_name;

pub use broker::{Broker, BrokerConfig, TlsListener};
pub use certs::Certs;
pub use destination::Destination;
pub use event_source::{EventSourceMapping, MappingConfig};
pub use gateway::{Gateway, GatewayConfig};
pub use iot::IotEndpoint;
pub use iot_rules::{IotRules, IotRulesConfig};
pub use kinesis::{Kinesis, KinesisConfig};
pub use mqtt_publisher::MqttPublisher;
pub use mqtt_subscriber::MqttSubscriber;
pub use registry::RegistryFront;
pub use stream_rule::{StreamRule, StreamRuleConfig};

use std::net::SocketAddr;
use std::path::PathBuf;

/// Broker (+ TLS listener) + IoT endpoint + IoT rules + gateway, started together, and
/// the stream path when configured.
pub struct Stack {
    pub broker: Broker,
    pub iot: IotEndpoint,
    pub iot_rules: IotRules,
    pub gateway: Gateway,
    /// The local CA, when the TLS listener is on.
    pub certs: Option<Certs>,
    /// The stream path, with [`StackConfig::stream`] (its rule is in `iot_rules`).
    pub stream: Option<StreamPath>,
}

/// The stream path of [`StackConfig`] (`local-aws --stream`): the Kinesis emulator with the
/// stream, the Basic Ingest rule, and one event source mapping per ingest function.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    pub kinesis: KinesisConfig,
    /// `StreamRuleName`.
    pub rule: String,
    /// Every mapping's settings; each function gets its own name and sensor filter.
    pub mapping: MappingConfig,
    /// moto server, whose SQS holds `StreamRuleErrorQueue` and `StreamFailureQueue`;
    /// `None`: what would go there is logged.
    pub moto: Option<String>,
}

impl StreamConfig {
    /// The stacks' stream path, the emulator on `kinesis`.
    pub fn new(kinesis: SocketAddr) -> StreamConfig {
        StreamConfig {
            kinesis: KinesisConfig::new(kinesis),
            rule: stream_rule::DEFAULT_RULE.into(),
            mapping: MappingConfig::new("gasdetector"),
            moto: None,
        }
    }
}

/// The running stream path.
pub struct StreamPath {
    pub kinesis: Kinesis,
    /// One per ingest function, in the gateway's route order.
    pub mappings: Vec<EventSourceMapping>,
}

/// The mutual-TLS listener of [`StackConfig`].
#[derive(Clone, Debug)]
pub struct TlsConfig {
    pub addr: SocketAddr,
    /// Where the CA, server and device certificates are (created on first use).
    pub certs: PathBuf,
}

/// Addresses for [`Stack::start`].
#[derive(Clone, Debug)]
pub struct StackConfig {
    pub mqtt: SocketAddr,
    pub mqtt_tls: Option<TlsConfig>,
    /// Mosquitto's configuration and log (`None`: a temporary directory).
    pub broker_dir: Option<PathBuf>,
    pub iot: SocketAddr,
    pub gateway: SocketAddr,
    pub gateway_config: GatewayConfig,
    /// `DeviceTopicRoot` of the stacks.
    pub device_root: String,
    /// The stream path (`None`: not started).
    pub stream: Option<StreamConfig>,
}

impl Stack {
    /// Starts the servers; the error names the one that could not start.
    pub async fn start(config: StackConfig) -> Result<Stack, String> {
        let (tls, certs) = match &config.mqtt_tls {
            Some(tls) => {
                let certs = Certs::ensure(&tls.certs)?;
                let listener = TlsListener::from_certs(tls.addr, &certs);
                (Some(listener), Some(certs))
            }
            None => (None, None),
        };
        let broker = Broker::start_with(BrokerConfig {
            plain: config.mqtt,
            tls,
            dir: config.broker_dir.clone(),
        })
        .await
        .map_err(|e| format!("MQTT broker on {}: {e}", config.mqtt))?;
        let iot = IotEndpoint::start(config.iot, broker.publisher())
            .await
            .map_err(|e| format!("IoT endpoint cannot listen on {}: {e}", config.iot))?;
        // Only the ingest functions take readings (never `query`).
        let mut sensors: Vec<String> = Vec::new();
        for (_, function) in &config.gateway_config.routes {
            if gateway::INGEST_FUNCTIONS.contains(&function.as_str()) && !sensors.contains(function)
            {
                sensors.push(function.clone());
            }
        }
        let kinesis = match &config.stream {
            Some(stream) => Some(Kinesis::start(stream.kinesis.clone()).await?),
            None => None,
        };
        let rule = match (&config.stream, &kinesis) {
            (Some(stream), Some(kinesis)) => Some(StreamRule::start(
                StreamRuleConfig {
                    rule: stream.rule.clone(),
                    device_root: config.device_root.clone(),
                    stream: kinesis.stream().to_owned(),
                    sensors: sensors.clone(),
                },
                kinesis.client(),
                Destination::sqs_or_log(stream.moto.as_deref(), destination::RULE_ERROR_QUEUE),
            )),
            _ => None,
        };
        let iot_rules = IotRules::start_with_stream(
            IotRulesConfig {
                broker: broker.local_addr(),
                device_root: config.device_root.clone(),
                invoke_base: Some(config.gateway_config.invoke_base.clone()),
                sensors: sensors.clone(),
            },
            iot.shadows().clone(),
            broker.publisher(),
            rule,
        )
        .await?;
        let stream = match (&config.stream, kinesis) {
            (Some(stream), Some(kinesis)) => {
                let mut mappings = Vec::new();
                for function in &sensors {
                    let source = event_source::Source {
                        stream: kinesis.stream().to_owned(),
                        stream_arn: kinesis.stream_arn().to_owned(),
                        invoke_base: config.gateway_config.invoke_base.clone(),
                    };
                    let mapping = MappingConfig {
                        function: function.clone(),
                        sensor: Some(function.clone()),
                        ..stream.mapping.clone()
                    };
                    let failures =
                        Destination::sqs_or_log(stream.moto.as_deref(), destination::FAILURE_QUEUE);
                    let started =
                        EventSourceMapping::start(kinesis.client(), source, mapping, failures)
                            .await
                            .map_err(|e| format!("event source mapping of {function}: {e}"))?;
                    mappings.push(started);
                }
                Some(StreamPath { kinesis, mappings })
            }
            _ => None,
        };
        let gateway = Gateway::start(config.gateway, config.gateway_config)
            .await
            .map_err(|e| format!("gateway cannot listen on {}: {e}", config.gateway))?;
        Ok(Stack {
            broker,
            iot,
            iot_rules,
            gateway,
            certs,
            stream,
        })
    }
}

#[cfg(test)]
mod tests {
    /// Every module, its layer (the crate doc's list) and its source.
    const MODULES: [(&str, u8, &str); 26] = [
        ("http", 0, include_str!("http.rs")),
        ("counters", 0, include_str!("counters.rs")),
        ("sdk", 0, include_str!("sdk.rs")),
        ("aws_error", 1, include_str!("aws_error.rs")),
        ("thing_name", 1, include_str!("thing_name.rs")),
        ("invoke", 1, include_str!("invoke.rs")),
        ("mqtt_publisher", 1, include_str!("mqtt_publisher.rs")),
        ("mqtt_subscriber", 1, include_str!("mqtt_subscriber.rs")),
        ("apigw_event", 1, include_str!("apigw_event.rs")),
        ("openapi", 1, include_str!("openapi.rs")),
        ("fault", 1, include_str!("fault.rs")),
        ("kinesis", 1, include_str!("kinesis.rs")),
        ("destination", 1, include_str!("destination.rs")),
        ("stream_rule", 2, include_str!("stream_rule.rs")),
        ("event_source", 2, include_str!("event_source.rs")),
        ("moto", 2, include_str!("moto.rs")),
        ("sts", 1, include_str!("sts.rs")),
        ("signature", 2, include_str!("signature.rs")),
        ("certs", 2, include_str!("certs.rs")),
        ("shadow", 2, include_str!("shadow.rs")),
        ("broker", 3, include_str!("broker.rs")),
        ("registry", 3, include_str!("registry.rs")),
        ("credentials", 3, include_str!("credentials.rs")),
        ("iot", 3, include_str!("iot.rs")),
        ("iot_rules", 4, include_str!("iot_rules.rs")),
        ("gateway", 4, include_str!("gateway.rs")),
    ];

    /// The modules `source` names as `crate::<module>` outside comments.
    fn uses(source: &str) -> Vec<&str> {
        source
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .flat_map(|line| line.split("crate::").skip(1))
            .map(|rest| {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect()
    }

    #[test]
    fn modules_use_only_lower_layers() {
        for (module, layer, source) in MODULES {
            for used in uses(source) {
                let lower = MODULES
                    .iter()
                    .find(|(name, _, _)| *name == used)
                    .is_some_and(|(_, used_layer, _)| *used_layer < layer);
                assert!(
                    lower,
                    "{module} (layer {layer}) uses crate::{used}: not a module of a lower layer"
                );
            }
        }
    }
}
