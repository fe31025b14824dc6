//! The AWS SDK configuration every adapter is built from, assembled from the function's
//! settings alone: the region, the credentials (the execution role's keys that Lambda puts
//! in the environment, or the container credentials endpoint), HTTP(S) through
//! [`crate::tls::sdk_http_client`] (compiled-in roots, no system store read).
//!
//! Why not `aws_config::defaults(..).load()`: its provider chains (shared config and
//! credentials files, SSO, web identity via STS, IMDS) can be chosen only at run time, so the
//! linker keeps all of them in every function, ~0.8 MB of code that Lambda never runs
//! (it always sets `AWS_REGION` and the credentials). Built this way the bootstrap is ~10 %
//! smaller and the zip stays under the 4 MB bar (BENCHMARKS.md, "Structure (issue 20)").

use aws_sdk_iotdataplane::config::{Credentials, SharedAsyncSleep, SharedCredentialsProvider};
use std::fmt;

/// Region and credentials from the function's settings.
#[derive(Debug, Clone)]
pub struct AwsAccess {
    /// `AWS_REGION` (Lambda sets it), else `AWS_DEFAULT_REGION`.
    pub region: String,
    pub credentials: CredentialSource,
}

/// Where the function's AWS credentials come from.
#[derive(Debug, Clone)]
pub enum CredentialSource {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`: on Lambda, the
    /// execution role's keys; locally, the stand-ins' dummies.
    Static(StaticCredentials),
    /// The container credentials endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI` or
    /// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`), refreshed before they expire.
    Container,
}

#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for StaticCredentials {
    // Never print secrets, not even in a debug dump of the settings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticCredentials(..)")
    }
}

/// The SDK configuration for `access`.
pub fn sdk_config(access: &AwsAccess) -> aws_config::SdkConfig {
    let credentials = match &access.credentials {
        CredentialSource::Static(c) => SharedCredentialsProvider::new(Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            c.session_token.clone(),
            None,
            "environment",
        )),
        CredentialSource::Container => SharedCredentialsProvider::new(
            aws_config::ecs::EcsCredentialsProvider::builder().build(),
        ),
    };
    let mut config = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(access.region.clone()))
        .credentials_provider(credentials)
        .sleep_impl(SharedAsyncSleep::new(
            aws_smithy_async::rt::sleep::TokioSleep::new(),
        ));
    match crate::tls::sdk_http_client() {
        Ok(client) => config = config.http_client(client),
        Err(e) => tracing::warn!(error = %e, "no HTTPS client for the AWS SDK"),
    }
    config.build()
}
