//! The local stack: an MQTT broker (Mosquitto, with mutual TLS from a local CA), an AWS
//! IoT data-plane endpoint that relays `Publish` calls to it and keeps device shadows, the
//! IoT rules the stacks deploy, and an API Gateway (REST, v1 proxy) emulator that invokes
//! the functions through `cargo lambda watch`. Each starts on a given address (port 0
//! picks a free one) and reports the address it bound, so tests can run many stacks side
//! by side.

pub mod broker;
pub mod certs;
pub mod fault;
pub mod gateway;
mod http;
pub mod iot;
pub mod openapi;
pub mod rules;
pub mod shadow;

pub use broker::{Broker, BrokerConfig, Publisher, TlsListener};
pub use certs::Certs;
pub use gateway::{Gateway, GatewayConfig};
pub use iot::IotEndpoint;
pub use rules::{Rules, RulesConfig};

use std::net::SocketAddr;
use std::path::PathBuf;

/// Broker (+ TLS listener) + IoT endpoint + rules + gateway, started together.
pub struct Stack {
    pub broker: Broker,
    pub iot: IotEndpoint,
    pub rules: Rules,
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
                let listener = TlsListener {
                    addr: tls.addr,
                    ca: certs.ca(),
                    server: certs.server(),
                };
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
        let rules = Rules::start(
            RulesConfig {
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
            rules,
            gateway,
            certs,
        })
    }
}
