//! `POST /temp`: wiring only; the pipeline lives in the `shared` crate.

use lambda_http::Error;
use shared::{App, Sensor};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::init_tracing();
    let app = App::from_env(Sensor::Temp).await?;
    shared::lambda::runtime::run(app).await
}
