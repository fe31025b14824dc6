//! Scheduled (EventBridge, every minute): raises the `no data` alarm for silent groups.
//! Wiring only; the check lives in `sensor_core::no_data`.

use lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    sensor_lambda::init_tracing();
    let check = sensor_lambda::no_data_function::from_env().await?;
    sensor_lambda::no_data_function::run(check).await
}
