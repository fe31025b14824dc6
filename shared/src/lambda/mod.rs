//! The Lambda boundary: configuration from the environment, the HTTP request and response
//! shapes, the handler (`App`) that builds the clients once, and the runtime loop; the
//! scheduled no-data check and the read API (`query`) have their own wiring beside it.

pub mod app;
pub mod config;
pub mod no_data;
pub mod query;
pub mod request;
pub mod response;
pub mod runtime;
