//! Scheduled (EventBridge, every minute): raises the `no data` alarm for silent groups.
//! Wiring only; the check lives in the `shared` crate (`shared::alarms::no_data`).

use lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::init_tracing();
    let check = shared::lambda::no_data::from_env().await?;
    shared::lambda::no_data::run(check).await
}
