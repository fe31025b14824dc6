//! The Lambda boundary: configuration from the environment, the HTTP request and response
//! shapes, the handler (`App`) that builds the clients once, and the runtime loop.

pub mod app;
pub mod config;
pub mod no_data;
pub mod request;
pub mod response;
pub mod runtime;
