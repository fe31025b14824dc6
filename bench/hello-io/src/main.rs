//! The I/O floor for the cold-start harness: a `lambda_http` function that, per invoke,
//! sends one `POST /topics/...` to the IoT endpoint and one `POST /_bulk` to OpenSearch
//! through one plain reqwest client (the same HTTP and TLS stack as the functions), and
//! answers 200. No AWS SDK, no signing, no validation, no document building (it sends a
//! fixed document with the same fields as ours): what any function that publishes and
//! indexes pays before doing anything of its own. Compared with `hello`, it shows the cost
//! of two HTTP requests on a cold process; compared with the functions, what ours adds.

use lambda_http::{service_fn, Body, Error, Request, Response};

/// A gasdetector document as the function stores it (same fields), so that in the osmem
/// pass the server spends as long on this write as on the function's.
const DOCUMENT: &str = r#"{"groupid":"2","gps":"37.61002501514269, 126.99636868892937","co":{"sensorid":"0005","sensortype":"8","value":"26.20","createdtime":"2021-09-03 18:14:49"},"no2":{"sensorid":"0006","sensortype":"9","value":"95.00","createdtime":"2021-09-03 18:14:49"},"c2h5oh":{"sensorid":"0007","sensortype":"27","value":"26.11","createdtime":"2021-09-03 18:14:49"},"h2":{"sensorid":"0008","sensortype":"30","value":"400","createdtime":"2021-09-03 18:14:49"},"date":"2021-09-03 18:14:49","@timestamp":"2021-09-03T18:14:49Z","sensor":"gasdetector","location":{"lat":37.61002501514269,"lon":126.99636868892937},"warnings":["no2"]}"#;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    // The same single crypto provider as `sensor_aws::tls`.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().no_proxy().build()?;
    let iot = std::env::var("AWS_ENDPOINT_URL_IOT_DATA_PLANE")?;
    let opensearch = std::env::var("OPENSEARCH_URL")?;
    let (client, iot, opensearch) = (&client, iot.as_str(), opensearch.as_str());
    let mut n = 0u64;
    let n = &mut n;
    lambda_http::run(service_fn(move |_request: Request| {
        *n += 1;
        // A new document per invoke, as the functions store one per reading.
        let id = format!("hello-io-{}-{}", std::process::id(), n);
        async move {
            let publish = client
                .post(format!("{iot}/topics/pi%2Fhello-io?qos=1"))
                .body(r#"{"warning":"no2 warning"}"#)
                .send();
            let bulk = client
                .post(format!("{opensearch}/_bulk"))
                .header("content-type", "application/x-ndjson")
                .body(format!(
                    "{{\"create\":{{\"_index\":\"hello-io\",\"_id\":\"{id}\"}}}}\n{DOCUMENT}\n"
                ))
                .send();
            let (publish, bulk) = tokio::join!(publish, bulk);
            publish?.error_for_status()?.bytes().await?;
            bulk?.error_for_status()?.bytes().await?;
            Ok::<_, Error>(Response::builder().status(200).body(Body::from("ok"))?)
        }
    }))
    .await
}
