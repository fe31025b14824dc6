//! Everything the sensor functions share, grouped by role so the layout shows the
//! architecture (ARCHITECTURE.md has the map):
//! - [`domain`]: the reading schema, each type built only through validation;
//! - [`ingest`]: rules, warnings, documents, topics and the pipeline that ties them;
//! - [`alarms`]: alarm state per group (hysteresis, `for`, `renotify`, staleness);
//! - [`ports`]: the small traits the pipeline depends on; [`adapters`]: IoT and OpenSearch;
//! - [`lambda`]: the boundary with the Lambda runtime (configuration, HTTP request and
//!   response, the handler and the runtime loop).

pub mod adapters;
pub mod alarms;
pub mod domain;
pub mod ingest;
pub mod lambda;
pub mod ports;

pub use domain::error::ValidationError;
pub use domain::measure::Measure;
pub use domain::reading::Reading;
pub use domain::sensor::Sensor;
pub use lambda::app::App;
pub use lambda::config::Config;

/// Structured logs for CloudWatch (`RUST_LOG` / `AWS_LAMBDA_LOG_LEVEL`).
pub fn init_tracing() {
    lambda_http::tracing::init_default_subscriber();
}
