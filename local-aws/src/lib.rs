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
//! 0. `http`: the hyper plumbing the servers share;
//! 1. the rest of the base: `aws_error` (AWS's JSON error responses), `thing_name` (IoT
//!    Core's thing and shadow names), `invoke` (the Lambda invoke API client),
//!    [`mqtt_publisher`] (the in-process client that publishes into the broker),
//!    [`mqtt_subscriber`] (a client that waits on what the broker routes to a filter),
//!    [`apigw_event`] (API Gateway's REST proxy event and response mapping), [`openapi`]
//!    (the contract), [`fault`] (the fault-injecting proxy), [`sts`] (the temporary
//!    credentials issued so far);
//! 2. [`certs`] (the local CA), [`shadow`] (the Device Shadow API), [`signature`]
//!    (API Gateway's SigV4 check and the boxes' role, over `sts`' sessions) and `moto`
//!    (calls to moto's IoT control plane, with `invoke`'s client);
//! 3. [`broker`] (Mosquitto, mutual TLS with `certs`), [`iot`] (the data-plane
//!    endpoint: publishes through `mqtt_publisher`, shadows from `shadow`) and
//!    [`registry`] (moto's IoT control plane behind a front whose `CreateCertificateFromCsr`
//!    signs with `certs`' CA, through `invoke`'s HTTP client) and [`credentials`] (the IoT
//!    credentials provider: mutual TLS with `certs`, the registry through `moto`, sessions
//!    into `sts`);
//! 4. [`iot_rules`] (the emulated IoT rules: `mqtt_publisher`, `shadow`, `invoke`) and
//!    [`gateway`] (the API Gateway emulator: `invoke`, `apigw_event`, `openapi`, and
//!    `signature` on the IAM-authorized routes);
//! 5. [`Stack`] (this file), which starts them together.

pub mod apigw_event;
mod aws_error;
pub mod broker;
pub mod certs;
pub mod credentials;
pub mod fault;
pub mod gateway;
mod http;
mod invoke;
pub mod iot;
pub mod iot_rules;
mod moto;
pub mod mqtt_publisher;
pub mod mqtt_subscriber;
pub mod openapi;
pub mod registry;
pub mod shadow;
pub mod signature;
pub mod sts;
mod thing_name;

pub use broker::{Broker, BrokerConfig, TlsListener};
pub use certs::Certs;
pub use gateway::{Gateway, GatewayConfig};
pub use iot::IotEndpoint;
pub use iot_rules::{IotRules, IotRulesConfig};
pub use mqtt_publisher::MqttPublisher;
pub use mqtt_subscriber::MqttSubscriber;
pub use registry::RegistryFront;

use std::net::SocketAddr;
use std::path::PathBuf;

/// Broker (+ TLS listener) + IoT endpoint + IoT rules + gateway, started together.
pub struct Stack {
    pub broker: Broker,
    pub iot: IotEndpoint,
    pub iot_rules: IotRules,
    pub gateway: Gateway,
    /// The local CA, when the TLS listener is on.
    pub certs: Option<Certs>,
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
        let iot_rules = IotRules::start(
            IotRulesConfig {
                broker: broker.local_addr(),
                device_root: config.device_root.clone(),
                invoke_base: Some(config.gateway_config.invoke_base.clone()),
                // Only the ingest functions take readings (never `query`).
                sensors: config
                    .gateway_config
                    .routes
                    .iter()
                    .map(|(_, function)| function.clone())
                    .filter(|function| gateway::INGEST_FUNCTIONS.contains(&function.as_str()))
                    .collect(),
            },
            iot.shadows().clone(),
            broker.publisher(),
        )
        .await?;
        let gateway = Gateway::start(config.gateway, config.gateway_config)
            .await
            .map_err(|e| format!("gateway cannot listen on {}: {e}", config.gateway))?;
        Ok(Stack {
            broker,
            iot,
            iot_rules,
            gateway,
            certs,
        })
    }
}

#[cfg(test)]
mod tests {
    /// Every module, its layer (the crate doc's list) and its source.
    const MODULES: [(&str, u8, &str); 20] = [
        ("http", 0, include_str!("http.rs")),
        ("aws_error", 1, include_str!("aws_error.rs")),
        ("thing_name", 1, include_str!("thing_name.rs")),
        ("invoke", 1, include_str!("invoke.rs")),
        ("mqtt_publisher", 1, include_str!("mqtt_publisher.rs")),
        ("mqtt_subscriber", 1, include_str!("mqtt_subscriber.rs")),
        ("apigw_event", 1, include_str!("apigw_event.rs")),
        ("openapi", 1, include_str!("openapi.rs")),
        ("fault", 1, include_str!("fault.rs")),
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
