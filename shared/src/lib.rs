//! Everything the three sensor functions share: the reading schema and its validation,
//! threshold rules, warnings, indexed documents, the pipeline, and the IoT and OpenSearch
//! adapters behind two small ports. See ARCHITECTURE.md for the map.

pub mod adapters;
pub mod app;
pub mod config;
pub mod created_time;
pub mod document;
pub mod error;
pub mod group_id;
pub mod index_name;
pub mod location;
pub mod measure;
pub mod pipeline;
pub mod ports;
pub mod reading;
pub mod request;
pub mod response;
pub mod retry;
pub mod rules;
pub mod runtime;
pub mod sensor;
pub mod sensor_label;
pub mod topic;
pub mod value;
pub mod warning;

pub use app::App;
pub use config::Config;
pub use error::ValidationError;
pub use measure::Measure;
pub use reading::Reading;
pub use sensor::Sensor;

/// Structured logs for CloudWatch (`RUST_LOG` / `AWS_LAMBDA_LOG_LEVEL`).
pub fn init_tracing() {
    lambda_http::tracing::init_default_subscriber();
}
