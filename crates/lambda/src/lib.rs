//! The Lambda boundary of the functions (ARCHITECTURE.md, "sensor-lambda"): settings from
//! the environment (one type per function kind), the HTTP request and response shapes, the
//! handlers that build the clients once and the runtime loops; and what an operator sees
//! (structured logs, the per-request summary, EMF metrics).
//! - [`settings`]: `IngestSettings`, `QuerySettings`, `NoDataSettings`;
//! - [`app`]: the ingest handler ([`App`]); [`request`], [`response`]: its HTTP shapes;
//! - [`runtime`]: the ingest runtime loop (with its base64 guard);
//! - [`query_function`]: the read API's HTTP boundary; [`no_data_function`]: the
//!   scheduled check's invoke loop;
//! - [`observability`]: logs, the request span and summary, EMF lines.

pub mod app;
pub mod no_data_function;
pub mod observability;
pub mod query_function;
pub mod request;
pub mod response;
pub mod runtime;
pub mod settings;
pub mod stream;

pub use app::App;
pub use settings::{IngestSettings, NoDataSettings, QuerySettings, SettingsError};

/// Structured logs for CloudWatch: JSON lines under `AWS_LAMBDA_LOG_FORMAT=JSON`, text
/// otherwise; level from `AWS_LAMBDA_LOG_LEVEL` / `RUST_LOG` (see [`observability::logging`]).
pub fn init_tracing() {
    observability::logging::init(&observability::logging::LogSettings::from_env());
}
