//! What an operator sees of a request: structured logs (JSON under Lambda's advanced
//! logging controls, text locally), one summary line per request, and CloudWatch Embedded
//! Metric Format (EMF) lines on stdout. Nothing here calls an API: CloudWatch Logs turns
//! the EMF lines into metrics.
//!
//! - [`logging`]: the tracing subscriber (`AWS_LAMBDA_LOG_FORMAT`, `AWS_LAMBDA_LOG_LEVEL` /
//!   `RUST_LOG`) and the flat JSON line format;
//! - the per-request retry, failure and latency counters that the core's one retry fills
//!   live in `sensor_core::downstream` (a task-local scoped to the request's future);
//! - [`emf`]: the metric namespace, the per-request counts and their EMF lines;
//! - [`request`]: the request span and the per-request summary.

pub mod emf;
pub mod logging;
pub mod request;
