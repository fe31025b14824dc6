//! The box agent's library: the binary (`main.rs`) is the command line over it, and the
//! benchmarks (`benches/`) time its queue directly. See docs/box.md and ARCHITECTURE.md.

pub mod agent;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod enroll;
pub mod mqtt;
pub mod queue;
pub mod reading;
pub mod sender;
pub mod signing;
pub mod source;
pub mod tls;
