//! The real ports: IoT Core over the data-plane Publish API, OpenSearch over `_bulk` (and
//! `_search` for the no-data check and the read API), alarm state in a named IoT shadow
//! per group.

pub mod iot;
pub mod opensearch;
pub mod shadow;
pub mod tls;

pub use self::iot::IotPublisher;
pub use self::opensearch::{OpenSearchIndexer, OpenSearchSearch};
pub use self::shadow::ShadowAlarmStore;

/// Retryable HTTP statuses: throttling and server-side failures.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    status == 429 || status == 408 || status >= 500
}
