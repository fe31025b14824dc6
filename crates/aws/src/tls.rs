//! One HTTPS stack for both downstream clients: reqwest 0.12 on hyper 1 and rustls 0.23
//! with the ring provider, trusting the compiled-in Mozilla roots (webpki-roots), so
//! no client reads or parses the system certificate store during a cold start.
//!
//! The `opensearch` crate builds its own reqwest client; the AWS SDK gets [`sdk_http_client`],
//! a small adapter that sends the SDK's (already signed) requests through another reqwest
//! client of the same stack. Reading the system store costs about 4 ms per client on this
//! machine kind, parsing the roots as PEM about 1 ms per connector: see BENCHMARKS.md.

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use std::time::Duration;

/// The SDK's default connect timeout (`BehaviorVersion::latest()`).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// Installs ring as rustls' process-wide provider: reqwest is built without a provider of
/// its own, so there is exactly one in the binary. Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed: fine either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The AWS SDK's HTTP client: reqwest (rustls, webpki roots), no proxy, the SDK's connect
/// timeout. The SDK still signs, retries (disabled by the IoT adapter) and times out.
pub fn sdk_http_client() -> Result<SharedHttpClient, String> {
    install_crypto_provider();
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(|e| format!("HTTPS client: {e}"))?;
    Ok(SharedHttpClient::new(ReqwestHttpClient { client }))
}

#[derive(Debug, Clone)]
struct ReqwestHttpClient {
    client: reqwest::Client,
}

impl HttpClient for ReqwestHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(ReqwestConnector {
            client: self.client.clone(),
            read_timeout: settings.read_timeout(),
        })
    }
}

#[derive(Debug, Clone)]
struct ReqwestConnector {
    client: reqwest::Client,
    read_timeout: Option<Duration>,
}

impl HttpConnector for ReqwestConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::user(e.into()))?;
            let (parts, body) = request.into_parts();
            // The SDK's requests here (IoT Publish, credential providers) have in-memory
            // bodies; a streaming body would need a body adapter.
            let body = body.bytes().map(<[u8]>::to_vec).ok_or_else(|| {
                ConnectorError::user("streaming request bodies are not supported".into())
            })?;
            let mut builder = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body);
            if let Some(timeout) = read_timeout {
                builder = builder.timeout(timeout);
            }
            let response = builder.send().await.map_err(connector_error)?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.map_err(connector_error)?;
            let mut http = http::Response::new(SdkBody::from(bytes));
            *http.status_mut() = status;
            *http.headers_mut() = headers;
            HttpResponse::try_from(http).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// Timeouts and connection failures are what the SDK (and the pipeline) treat as transient.
fn connector_error(error: reqwest::Error) -> ConnectorError {
    if error.is_timeout() {
        ConnectorError::timeout(error.into())
    } else if error.is_connect() || error.is_request() || error.is_body() {
        ConnectorError::io(error.into())
    } else {
        ConnectorError::other(error.into(), None)
    }
}
