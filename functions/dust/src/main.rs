//! `POST /dust`: wiring only; the pipeline lives in `sensor_core::pipeline`, its Lambda boundary in
//! `sensor_lambda`.

use lambda_http::Error;
use sensor_lambda::App;
use sensor_model::Sensor;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    sensor_lambda::init_tracing();
    let app = App::from_env(Sensor::Dust).await?;
    sensor_lambda::runtime::run(app).await
}
