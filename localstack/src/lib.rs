//! The local stack's in-process servers: an MQTT broker, an AWS IoT data-plane endpoint
//! that relays `Publish` calls to it, and an API Gateway (REST, v1 proxy) emulator that
//! invokes the functions through `cargo lambda watch`. Each starts on a given address
//! (port 0 picks a free one) and reports the address it bound, so tests can run many
//! stacks side by side.

pub mod fault;
pub mod gateway;
mod http;
pub mod iot;
pub mod mqtt;
pub mod openapi;

pub use gateway::{Gateway, GatewayConfig};
pub use iot::IotEndpoint;
pub use mqtt::{Broker, Publisher};

use std::net::SocketAddr;

/// Broker + IoT endpoint + gateway, started together.
pub struct Stack {
    pub broker: Broker,
    pub iot: IotEndpoint,
    pub gateway: Gateway,
}

/// Addresses for [`Stack::start`].
#[derive(Clone, Debug)]
pub struct StackConfig {
    pub mqtt: SocketAddr,
    pub iot: SocketAddr,
    pub gateway: SocketAddr,
    pub gateway_config: GatewayConfig,
}

impl Stack {
    /// Starts the three servers; the error names the one that could not bind.
    pub async fn start(config: StackConfig) -> Result<Stack, String> {
        let broker = Broker::start(config.mqtt)
            .await
            .map_err(|e| format!("MQTT broker cannot listen on {}: {e}", config.mqtt))?;
        let iot = IotEndpoint::start(config.iot, broker.publisher())
            .await
            .map_err(|e| format!("IoT endpoint cannot listen on {}: {e}", config.iot))?;
        let gateway = Gateway::start(config.gateway, config.gateway_config)
            .await
            .map_err(|e| format!("gateway cannot listen on {}: {e}", config.gateway))?;
        Ok(Stack {
            broker,
            iot,
            gateway,
        })
    }
}
