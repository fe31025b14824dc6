//! The AWS adapters of `sensor_core`'s ports: IoT Core over the data-plane Publish API,
//! OpenSearch over `_bulk` (and `_search` for the no-data check and the read API), alarm
//! state in a named IoT shadow per group, the registry (thing -> group) over `DescribeThing`; the one TLS stack ([`tls`]) and the SDK
//! configuration ([`sdk`]) they are built from. Each adapter answers with
//! `DownstreamError::Retryable` or `Permanent`, so the core's one retry decides.

pub mod iot;
pub mod opensearch;
pub mod registry;
pub mod sdk;
pub mod shadow;
pub mod tls;

pub use self::iot::IotPublisher;
pub use self::opensearch::{
    OpenSearchActivity, OpenSearchAuth, OpenSearchIndexer, OpenSearchSearch, OpenSearchSettings,
    Url,
};
pub use self::registry::IotRegistry;
pub use self::sdk::{sdk_config, AwsAccess, CredentialSource, StaticCredentials};
pub use self::shadow::ShadowAlarmStore;

/// Retryable HTTP statuses: throttling and server-side failures.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    status == 429 || status == 408 || status >= 500
}
