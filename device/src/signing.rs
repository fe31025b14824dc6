//! SigV4 for the box's posts to the IAM-authorized routes (`execute-api`), with aws-sigv4:
//! the AWS SDK's own signer, so the canonical request (double-encoded path, sorted signed
//! headers, the payload hash) is what API Gateway computes. Nothing here is hand-written
//! cryptography.

use crate::credentials::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use std::time::SystemTime;

/// API Gateway's signing name.
pub const SERVICE: &str = "execute-api";

/// The headers that sign one `POST url` with this content type and body:
/// `authorization`, `x-amz-date` and `x-amz-security-token`. `host` and `content-type`
/// are signed as the request will carry them (reqwest writes `host` from the URL the same
/// way: no port when it is the scheme's default).
pub fn sign_post(
    url: &reqwest::Url,
    content_type: &str,
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
) -> Result<Vec<(&'static str, String)>, String> {
    // The cache decides expiry; the signer is given none so it never refuses on its own.
    let identity: Identity = aws_credential_types::Credentials::new(
        &credentials.access_key_id,
        &credentials.secret_access_key,
        Some(credentials.session_token.clone()),
        None,
        "iot-credentials-provider",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url.as_str(),
        std::iter::once(("content-type", content_type)),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("cannot sign a request to {url}: {e}"))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| format!("cannot sign a request to {url}: {e}"))?
        .into_parts();
    let (headers, _query) = instructions.into_parts();
    Ok(headers
        .into_iter()
        .map(|h| (h.name(), h.value().to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use std::time::{Duration, UNIX_EPOCH};

    fn credentials() -> Credentials {
        Credentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: "token-of-the-box".into(),
            expiration: Utc.with_ymd_and_hms(2026, 12, 4, 17, 0, 0).unwrap(),
        }
    }

    /// 2026-12-04T16:00:00Z
    fn time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_400_000)
    }

    fn headers(body: &[u8]) -> Vec<(&'static str, String)> {
        let url = reqwest::Url::parse(
            "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/things/box-1/gasdetector",
        )
        .expect("url");
        sign_post(
            &url,
            "application/json",
            body,
            &credentials(),
            "eu-west-1",
            time(),
        )
        .expect("signed")
    }

    fn header<'a>(headers: &'a [(&'static str, String)], name: &str) -> &'a str {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }

    #[test]
    fn the_authorization_header_scopes_the_key_to_execute_api_in_the_region() {
        let h = headers(br#"{"groupid":"2"}"#);
        let authorization = header(&h, "authorization");
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20261204/eu-west-1/execute-api/aws4_request, "
            ),
            "{authorization}"
        );
        assert!(
            authorization
                .contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,"),
            "{authorization}"
        );
        assert_eq!(header(&h, "x-amz-date"), "20261204T160000Z");
        assert_eq!(header(&h, "x-amz-security-token"), "token-of-the-box");
        assert!(!authorization.contains("wJalrXUtnFEMI"));
    }

    #[test]
    fn the_signature_covers_the_body_and_is_deterministic() {
        let signature = |body: &[u8]| header(&headers(body), "authorization").to_owned();
        let one = signature(br#"{"groupid":"2"}"#);
        assert_eq!(one, signature(br#"{"groupid":"2"}"#));
        assert_ne!(one, signature(br#"{"groupid":"3"}"#));
    }
}
