//! Publishes through `aws-sdk-iotdataplane` (`POST /topics/{topic}?qos=1`), against the
//! endpoint in `AWS_ENDPOINT_URL_IOT_DATA_PLANE`.

use aws_sdk_iotdataplane::config::http::HttpResponse;
use aws_sdk_iotdataplane::config::retry::RetryConfig;
use aws_sdk_iotdataplane::config::StalledStreamProtectionConfig;
use aws_sdk_iotdataplane::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_iotdataplane::primitives::Blob;
use aws_sdk_iotdataplane::Client;
use sensor_core::ports::{DownstreamError, Message, Publisher};

#[derive(Debug, Clone)]
pub struct IotPublisher {
    client: Client,
}

impl IotPublisher {
    /// The data-plane client, for the shadow adapter (one client, one set of runtime
    /// plugins per cold start).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn new(sdk_config: &aws_config::SdkConfig, endpoint: &str) -> IotPublisher {
        let config = aws_sdk_iotdataplane::config::Builder::from(sdk_config)
            .endpoint_url(endpoint)
            // The pipeline owns retries and timeouts, bounded by the Lambda deadline.
            .retry_config(RetryConfig::disabled())
            // Stalled-stream protection watches long uploads and downloads with timers; a
            // Publish is a few hundred bytes each way and already runs under the
            // pipeline's deadline. Off, the first publish of a cold start is ~0.14 ms
            // lighter here (BENCHMARKS.md).
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .build();
        IotPublisher {
            client: Client::from_conf(config),
        }
    }
}

impl Publisher for IotPublisher {
    async fn publish(&self, message: &Message) -> Result<(), DownstreamError> {
        self.client
            .publish()
            .topic(message.topic.as_str())
            .qos(1)
            .payload(Blob::new(message.payload.clone()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("IoT publish", e))
    }
}

/// Throttling, 5xx, timeouts and connection failures are retryable; 4xx (a bad topic,
/// 403 from missing `iot:Publish`) are not. `what` names the call in the reason.
pub(crate) fn classify<E>(what: &str, error: SdkError<E, HttpResponse>) -> DownstreamError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let reason = match &error {
        // Status, error code and the service's message: enough to act on, and short (the
        // full context would dump the raw response into the log line).
        SdkError::ServiceError(e) => {
            let message: String = e
                .err()
                .meta()
                .message()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            format!(
                "{what}: HTTP {} {}: {message}",
                e.raw().status().as_u16(),
                e.err().meta().code().unwrap_or("error"),
            )
        }
        other => format!("{what}: {}", DisplayErrorContext(other)),
    };
    match &error {
        SdkError::ConstructionFailure(_) => DownstreamError::Permanent(reason),
        SdkError::ServiceError(e) if !super::is_retryable_status(e.raw().status().as_u16()) => {
            DownstreamError::Permanent(reason)
        }
        _ => DownstreamError::Retryable(reason),
    }
}
