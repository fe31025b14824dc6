//! The two things the pipeline needs from the outside world. The IoT and OpenSearch
//! adapters implement them; tests swap in fakes.

use crate::ingest::document::Document;
use crate::ingest::topic::Topic;
use std::fmt;
use std::future::Future;

/// One MQTT message, published with QoS 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: Topic,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownstreamError {
    /// Throttling, 5xx, timeouts, connection errors: worth another try.
    Retryable(String),
    /// Will fail the same way again (400, 403, ...).
    Permanent(String),
}

impl DownstreamError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, DownstreamError::Retryable(_))
    }
    pub fn reason(&self) -> &str {
        match self {
            DownstreamError::Retryable(r) | DownstreamError::Permanent(r) => r,
        }
    }
}

impl fmt::Display for DownstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownstreamError::Retryable(r) => write!(f, "{r} (retryable)"),
            DownstreamError::Permanent(r) => write!(f, "{r}"),
        }
    }
}

/// What became of one document of a bulk `create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOutcome {
    Created,
    /// 409: a document with this id exists, so this reading is already stored.
    AlreadyStored,
    Failed(DownstreamError),
}

pub trait Publisher: Send + Sync {
    fn publish(
        &self,
        message: &Message,
    ) -> impl Future<Output = Result<(), DownstreamError>> + Send;
}

pub trait Indexer: Send + Sync {
    /// Creates every document (never overwrites); one outcome per document, in order.
    fn create_all(
        &self,
        documents: &[&Document],
    ) -> impl Future<Output = Result<Vec<IndexOutcome>, DownstreamError>> + Send;
}
