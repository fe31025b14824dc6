//! `GET /` (the page) and `GET /api/boxes|readings|warnings|rules` (the read API): wiring
//! only; the routes live in the `shared` crate (`shared::query`, `shared::lambda::query`).

use lambda_http::Error;

/// The page, built from `web/` into one file (`web/dist/index.html`, committed and kept
/// up to date by a test), embedded at compile time so the page ships with the function.
const PAGE: &str = include_str!("../../../web/dist/index.html");

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::init_tracing();
    let handler = shared::lambda::query::QueryFunction::from_env(PAGE).await?;
    shared::lambda::query::run(handler).await
}
