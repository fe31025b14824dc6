//! The AWS SDK configuration every adapter is built from: region and credentials when the
//! settings give them (on Lambda they do), else the SDK's provider chains; HTTP(S) through
//! [`crate::tls::sdk_http_client`] (compiled-in roots, no system store read).

use std::fmt;

/// Region and credentials from the function's settings (`AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
#[derive(Debug, Clone, Default)]
pub struct AwsAccess {
    /// `AWS_REGION`, when given (otherwise the SDK's own chain).
    pub region: Option<String>,
    /// Static credentials (local stacks and tests; Lambda's come from its environment too).
    pub static_credentials: Option<StaticCredentials>,
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
pub async fn load_sdk_config(access: &AwsAccess) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    match crate::tls::sdk_http_client() {
        Ok(client) => loader = loader.http_client(client),
        Err(e) => tracing::warn!(error = %e, "no HTTPS client for the AWS SDK"),
    }
    if let Some(region) = &access.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(c) = &access.static_credentials {
        loader = loader.credentials_provider(aws_sdk_iotdataplane::config::Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            c.session_token.clone(),
            None,
            "configuration",
        ));
    }
    loader.load().await
}
