//! The one AWS SDK configuration of local-aws's own clients (the Kinesis emulator's, moto's
//! SQS): static test credentials, `us-east-1`, the SDK's own retries off (callers retry,
//! and a throttling answer must reach them), 2 s to connect and 10 s per call.

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_types::region::Region;
use aws_types::sdk_config::{RetryConfig, TimeoutConfig};
use aws_types::SdkConfig;
use std::time::Duration;

/// The region of every local resource (ARNs, the SigV4 scope).
pub const REGION: &str = "us-east-1";

/// The configuration for a client of the local service at `endpoint`.
pub fn local(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        // The type lives in aws-smithy-runtime-api; every SDK crate re-exports it.
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "LOCAL",
            "local",
            None,
            None,
            "local-aws",
        )))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(10))
                .build(),
        )
        .build()
}
