//! What became of one reading of a request.

use sensor_model::domain::error::ValidationError;
use sensor_model::warning::Warning;

/// What became of one reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Indexed now (`duplicate: false`) or earlier (`true`), every warning published.
    Stored {
        id: String,
        warnings: Vec<Warning>,
        duplicate: bool,
    },
    /// Final: resending it will not help.
    Invalid(ValidationError),
    /// Its `groupid` is not the group the registry binds its box to: nothing was stored,
    /// published or applied to alarm state (403 `forbidden`).
    Forbidden(ValidationError),
    /// A downstream failure outlasted the retries: the box must resend (safe: same id).
    Unavailable {
        id: String,
        warnings: Vec<Warning>,
        reason: String,
    },
    /// Final: OpenSearch refused this reading's document for good (say a mapping
    /// conflict), so resending can never store it. Its alarm state and warnings were
    /// applied as for any valid reading; the box dead-letters it.
    Rejected {
        id: String,
        warnings: Vec<Warning>,
        reason: String,
    },
}

impl Outcome {
    pub fn needs_retry(&self) -> bool {
        matches!(self, Outcome::Unavailable { .. })
    }
}
