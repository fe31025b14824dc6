//! The read API behind `GET /api/...` (the `query` function) and the page on `GET /`:
//! - `params.rs`: query parameters validated into types (a bad one is a 400 naming it);
//! - `interval.rs`: the date histogram's bucket width, given or chosen (<= 2,000 buckets);
//! - `search.rs`: the OpenSearch bodies, user input only as term/range values;
//! - `shape.rs`: OpenSearch answers into the API's JSON;
//! - `api.rs`: the routes, over the `Search` port (`ports.rs`).

pub mod api;
pub mod interval;
pub mod params;
pub mod search;
pub mod shape;

pub use api::{Answer, Body, Indices, QueryApi};
