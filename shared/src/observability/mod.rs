//! What an operator sees of a request: structured logs (JSON under Lambda's advanced
//! logging controls, text locally), one summary line per request, and CloudWatch Embedded
//! Metric Format (EMF) lines on stdout. Nothing here calls an API: CloudWatch Logs turns
//! the EMF lines into metrics.
//!
//! - [`logging`]: the tracing subscriber (`AWS_LAMBDA_LOG_FORMAT`, `AWS_LAMBDA_LOG_LEVEL` /
//!   `RUST_LOG`) and the flat JSON line format;
//! - [`downstream`]: per-request retry, failure and latency counters that the pipeline's
//!   retry loops fill (a task-local scoped to the request's future, so the pipeline's
//!   signatures stay as they are);
//! - [`emf`]: the metric namespace, the per-request counts and their EMF lines;
//! - [`request`]: the request span and the per-request summary.

pub mod downstream;
pub mod emf;
pub mod logging;
pub mod request;
