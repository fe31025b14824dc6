//! `GET /` (the page) and `GET /api/boxes|readings|warnings|rules` (the read API): wiring
//! only; the routes live in `sensor_core::query`, the HTTP boundary in
//! `sensor_lambda::query_function`.

use lambda_http::Error;

/// The page, built from `web/` into one file (`web/dist/index.html`, committed and kept
/// up to date by a test), embedded at compile time so the page ships with the function.
const PAGE: &str = include_str!("../../../web/dist/index.html");

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    sensor_lambda::init_tracing();
    let handler = sensor_lambda::query_function::QueryFunction::from_env(PAGE).await?;
    sensor_lambda::query_function::run(handler).await
}
