//! The application core: what the functions do, written against small traits (ports) so
//! every path runs in tests without AWS (ARCHITECTURE.md, "sensor-core").
//! - [`ports`]: publish, index, search, alarm state and the registry, the only way out;
//! - [`binding`]: which group a box may write (the registry, cached per instance);
//! - [`retry`]: the one retry policy (full-jitter backoff, per-attempt timeout, deadline,
//!   counters, retryable vs permanent) and the one conditional-update loop for alarm state;
//! - [`downstream`]: the per-request counters the retries fill;
//! - [`pipeline`]: a request's readings through rules, alarms, publishes and indexing;
//! - [`no_data`]: the scheduled check for silent groups;
//! - [`query`]: the read API behind `GET /api/...` and the page.

pub mod binding;
pub mod downstream;
pub mod no_data;
pub mod pipeline;
pub mod ports;
pub mod query;
pub mod retry;
