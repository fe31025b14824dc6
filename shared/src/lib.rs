//! Everything the sensor functions share, grouped by role so the layout shows the
//! architecture (ARCHITECTURE.md has the map):
//! - [`domain`]: the reading schema, each type built only through validation;
//! - [`ingest`]: rules, warnings, documents, topics and the pipeline that ties them;
//! - [`alarms`]: alarm state per group (hysteresis, `for`, `renotify`, staleness);
//! - [`query`]: the read API (parameters, intervals, searches, answers) and its routes;
//! - [`ports`]: the small traits the pipeline depends on; [`adapters`]: IoT and OpenSearch;
//! - [`lambda`]: the boundary with the Lambda runtime (configuration, HTTP request and
//!   response, the handler and the runtime loop);
//! - [`observability`]: structured logs, the per-request summary and EMF metrics.

pub mod adapters;
pub mod alarms;
pub mod domain;
pub mod ingest;
pub mod lambda;
pub mod observability;
pub mod ports;
pub mod query;

pub use domain::error::ValidationError;
pub use domain::measure::Measure;
pub use domain::reading::Reading;
pub use domain::sensor::Sensor;
pub use lambda::app::App;
pub use lambda::config::Config;

/// Structured logs for CloudWatch: JSON lines under `AWS_LAMBDA_LOG_FORMAT=JSON`, text
/// otherwise; level from `AWS_LAMBDA_LOG_LEVEL` / `RUST_LOG` (see [`observability::logging`]).
pub fn init_tracing() {
    observability::logging::init(&observability::logging::LogSettings::from_env());
}
