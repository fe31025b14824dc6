//! `POST /temp`: wiring only; the pipeline lives in the `shared` crate.

use lambda_http::{service_fn, Error};
use shared::{App, Sensor};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::init_tracing();
    let app = App::from_env(Sensor::Temp).await?;
    lambda_http::run(service_fn(|request| app.invoke(request))).await
}
