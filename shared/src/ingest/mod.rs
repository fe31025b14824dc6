//! What happens to a valid reading: threshold rules, warnings and their topics, the
//! indexed document and its index, and the pipeline (publish || index, bounded retries)
//! that sees the outside world only through [`crate::ports`].

pub mod document;
pub mod index_name;
pub mod pipeline;
pub mod retry;
pub mod rules;
pub mod topic;
pub mod warning;
