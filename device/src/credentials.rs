//! Short-lived AWS credentials for this box from the AWS IoT credentials provider
//! ("Authorizing direct calls to AWS services using AWS IoT Core credential provider"):
//! `GET https://<endpoint>/role-aliases/<alias>/credentials` over mutual TLS with the box's
//! own certificate and `x-amzn-iot-thingname: <thing>`, answered with
//! `{"credentials":{"accessKeyId","secretAccessKey","sessionToken","expiration"}}`.
//!
//! The role's policy names `${credentials-iot:ThingName}`, so these credentials may invoke
//! only this box's own API routes; no secret is shared between boxes, and revoking the
//! certificate cuts the box off at its next fetch.
//!
//! [`CredentialsCache`] asks the provider once per lifetime (an hour on AWS): the fetch is
//! behind [`Fetch`] and the clock is passed in, so the caching is tested without a network.
//! Secrets never reach `Debug` output or the log.

use crate::config::IamConfig;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The header naming the thing the certificate is attached to; the provider checks it and
/// hands it to the role as `credentials-iot:ThingName`.
pub const THING_HEADER: &str = "x-amzn-iot-thingname";
/// Refresh at most this long before expiry...
const MAX_MARGIN_S: i64 = 300;
/// ...and at most this share of the lifetime, so a short-lived local credential (a minute)
/// is still used for most of its life.
const MARGIN_DIVISOR: i32 = 5;
/// After a failed refresh while the current credentials are still valid, wait at most this
/// long before asking again (the old ones keep the box sending meanwhile).
const MAX_RETRY_S: i64 = 10;

/// One set of temporary credentials as the provider issued them.
#[derive(Clone, PartialEq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration: DateTime<Utc>,
}

impl fmt::Debug for Credentials {
    // The secret and the token are credentials in their own right: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field("session_token", &"** redacted **")
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// The provider's answer as written (no Debug: it holds the secret).
#[derive(Deserialize)]
struct Answer {
    credentials: RawCredentials,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

impl Credentials {
    /// Parses the provider's 200 answer. The error never quotes the body (it may hold a
    /// secret); it says what is missing or wrong.
    pub fn from_provider_answer(body: &[u8]) -> Result<Credentials, FetchError> {
        let bad = |why: String| {
            FetchError::Transient(format!(
                "the credentials provider's answer is not {{\"credentials\":{{\"accessKeyId\",\"secretAccessKey\",\"sessionToken\",\"expiration\"}}}}: {why} (a proxy or captive portal in the way?)"
            ))
        };
        // serde_json's messages name the missing field or the type found; every field is
        // a string, so a type error cannot quote a secret.
        let answer: Answer = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
        let raw = answer.credentials;
        for (name, value) in [
            ("accessKeyId", &raw.access_key_id),
            ("secretAccessKey", &raw.secret_access_key),
            ("sessionToken", &raw.session_token),
        ] {
            if value.is_empty() {
                return Err(bad(format!("{name} is empty")));
            }
        }
        let expiration = DateTime::parse_from_rfc3339(&raw.expiration)
            .map_err(|e| {
                bad(format!(
                    "expiration `{}` is not an RFC 3339 time: {e}",
                    raw.expiration
                ))
            })?
            .with_timezone(&Utc);
        Ok(Credentials {
            access_key_id: raw.access_key_id,
            secret_access_key: raw.secret_access_key,
            session_token: raw.session_token,
            expiration,
        })
    }
}

/// Why there are no credentials.
#[derive(Debug, Clone, PartialEq)]
pub enum FetchError {
    /// The provider will not give this box credentials until a person acts (certificate
    /// revoked, inactive or not enrolled; unknown role alias; a role that does not trust
    /// the provider): asking again cannot help, sending stops and the queue is kept.
    Refused(String),
    /// The network, a timeout, the provider's 429/5xx, an answer of the wrong shape: asked
    /// again after a back-off.
    Transient(String),
}

impl FetchError {
    pub fn message(&self) -> &str {
        match self {
            FetchError::Refused(m) | FetchError::Transient(m) => m,
        }
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for FetchError {}

/// One request to the credentials provider (or a stand-in in tests).
pub trait Fetch {
    fn fetch(&self) -> impl Future<Output = Result<Credentials, FetchError>> + Send;
}

/// How long before expiry credentials are replaced: 5 minutes, or a fifth of their
/// lifetime as issued when that is shorter.
pub fn refresh_margin(lifetime: chrono::Duration) -> chrono::Duration {
    (lifetime / MARGIN_DIVISOR).min(chrono::Duration::seconds(MAX_MARGIN_S))
}

struct Current {
    credentials: Arc<Credentials>,
    /// From here on a call fetches new credentials.
    refresh_at: DateTime<Utc>,
    /// After a failed refresh: no new attempt before this time.
    retry_at: Option<DateTime<Utc>>,
}

/// Hands out the current credentials; fetches only when there are none, or they are within
/// [`refresh_margin`] of expiry, or [`CredentialsCache::invalidate`] was called.
pub struct CredentialsCache<F> {
    fetcher: F,
    current: Option<Current>,
    fetches: u64,
    failures: u64,
}

impl<F: Fetch> CredentialsCache<F> {
    pub fn new(fetcher: F) -> Self {
        CredentialsCache {
            fetcher,
            current: None,
            fetches: 0,
            failures: 0,
        }
    }

    /// The credentials to sign with at `now`.
    ///
    /// Within the refresh margin a failed *transient* fetch still returns the current
    /// credentials while they have not expired (the API accepts them until then), and the
    /// next attempt waits a little; a refusal is returned at once, so a revoked
    /// certificate stops the box at its next refresh.
    pub async fn get(&mut self, now: DateTime<Utc>) -> Result<Arc<Credentials>, FetchError> {
        if let Some(current) = &self.current {
            let waiting = current.retry_at.is_some_and(|at| now < at);
            if now < current.refresh_at || (waiting && now < current.credentials.expiration) {
                return Ok(current.credentials.clone());
            }
        }
        match self.fetcher.fetch().await {
            Ok(credentials) => {
                let lifetime = credentials.expiration - now;
                if lifetime <= chrono::Duration::zero() {
                    self.failures += 1;
                    self.current = None;
                    return Err(FetchError::Transient(format!(
                        "the credentials provider issued credentials expiring at {}, before this box's clock ({}): is the clock right?",
                        credentials.expiration.to_rfc3339(),
                        now.to_rfc3339()
                    )));
                }
                self.fetches += 1;
                tracing::info!(
                    expires = %credentials.expiration.to_rfc3339(),
                    lifetime_s = lifetime.num_seconds(),
                    fetches = self.fetches,
                    "credentials fetched from the IoT credentials provider"
                );
                let credentials = Arc::new(credentials);
                self.current = Some(Current {
                    credentials: credentials.clone(),
                    refresh_at: credentials.expiration - refresh_margin(lifetime),
                    retry_at: None,
                });
                Ok(credentials)
            }
            Err(error) => {
                self.failures += 1;
                match (&error, &mut self.current) {
                    (FetchError::Transient(_), Some(current))
                        if now < current.credentials.expiration =>
                    {
                        let left = current.credentials.expiration - now;
                        let wait = (left / 4).min(chrono::Duration::seconds(MAX_RETRY_S));
                        current.retry_at = Some(now + wait);
                        tracing::warn!(
                            expires = %current.credentials.expiration.to_rfc3339(),
                            "refreshing the credentials failed, still using the current ones: {error}"
                        );
                        Ok(current.credentials.clone())
                    }
                    _ => {
                        self.current = None;
                        Err(error)
                    }
                }
            }
        }
    }

    /// Forgets the current credentials (the API said they expired): the next
    /// [`get`](Self::get) fetches.
    pub fn invalidate(&mut self) {
        self.current = None;
    }

    /// Successful fetches so far: one per lifetime in the steady state.
    pub fn fetches(&self) -> u64 {
        self.fetches
    }

    /// Failed fetches so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// The credentials held now, if any (for `sensorbox status`).
    pub fn current(&self) -> Option<&Credentials> {
        self.current.as_ref().map(|c| c.credentials.as_ref())
    }
}

/// The real provider: mutual TLS with the box's certificate.
pub struct Provider {
    client: reqwest::Client,
    url: reqwest::Url,
    thing: String,
    role_alias: String,
    cert: String,
}

impl Provider {
    /// Reads the certificate files (errors name `iam.ca` / `iam.cert` / `iam.key`).
    pub fn new(iam: &IamConfig, thing: &str, timeout: Duration) -> Result<Provider, String> {
        let tls = crate::tls::client_config(&iam.ca, &iam.cert, &iam.key, "iam")?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("credentials provider client: {e}"))?;
        Ok(Provider {
            client,
            url: iam.credentials_url.clone(),
            thing: thing.to_owned(),
            role_alias: iam.role_alias.clone(),
            cert: iam.cert.display().to_string(),
        })
    }

    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }
}

impl Fetch for Provider {
    async fn fetch(&self) -> Result<Credentials, FetchError> {
        let response = self
            .client
            .get(self.url.clone())
            .header(THING_HEADER, &self.thing)
            .send()
            .await
            .map_err(|e| classify_send_error(&e, &self.cert))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| {
            FetchError::Transient(format!(
                "the credentials provider's answer broke off: {}",
                error_chain(&e)
            ))
        })?;
        classify_answer(status, &body, &self.thing, &self.role_alias)
    }
}

/// What the provider's HTTP answer means.
pub fn classify_answer(
    status: u16,
    body: &[u8],
    thing: &str,
    role_alias: &str,
) -> Result<Credentials, FetchError> {
    if status == 200 {
        return Credentials::from_provider_answer(body);
    }
    // Errors come as {"message": "..."}; anything else is quoted briefly (no secrets in an
    // error answer).
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| {
            let text: String = String::from_utf8_lossy(body).chars().take(200).collect();
            if text.trim().is_empty() {
                "(no message)".into()
            } else {
                text
            }
        });
    match status {
        401 | 403 => Err(FetchError::Refused(format!(
            "the credentials provider refused this box ({status}: {message}): the certificate is revoked, inactive or not attached to thing `{thing}`, or role alias `{role_alias}`'s role does not trust credentials.iot.amazonaws.com; fleet enroll gives the box a certificate"
        ))),
        404 => Err(FetchError::Refused(format!(
            "the credentials provider does not know role alias `{role_alias}` ({status}: {message}): set iam.role_alias to the stacks' output SensorBoxRoleAlias"
        ))),
        400 => Err(FetchError::Refused(format!(
            "the credentials provider refused the request ({status}: {message}): check thing_name `{thing}` is this box's thing"
        ))),
        _ => Err(FetchError::Transient(format!(
            "the credentials provider answered {status}: {message}"
        ))),
    }
}

/// The error and its causes, joined, for a log line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// The rustls error somewhere in a chain of causes (io::Error hides its inner error from
/// `source()`, so it is looked into as well).
fn find_tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

/// A request that got no HTTP answer: a refused certificate (the provider ends the
/// handshake with an alert), or something transient.
fn classify_send_error(error: &reqwest::Error, cert: &str) -> FetchError {
    let chain = error_chain(error);
    match find_tls_error(error) {
        Some(rustls::Error::AlertReceived(alert)) => FetchError::Refused(format!(
            "the credentials provider refused this box's certificate: revoked, inactive or not enrolled? (TLS alert {alert:?}; iam.cert {cert}); fleet enroll gives the box an active certificate ({chain})"
        )),
        Some(rustls::Error::InvalidCertificate(_)) => FetchError::Transient(format!(
            "the credentials provider's certificate is not trusted: check iam.ca is the CA that signed it (AmazonRootCA1.pem on AWS) ({chain})"
        )),
        _ if error.is_timeout() => {
            FetchError::Transient(format!("the credentials provider timed out ({chain})"))
        }
        _ => FetchError::Transient(format!(
            "cannot reach the credentials provider ({chain})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0)
            .single()
            .unwrap_or_default()
    }

    /// Issues credentials valid for `lifetime_s` from the fake clock's time, or the queued
    /// errors first.
    struct Fake {
        clock: Arc<Mutex<DateTime<Utc>>>,
        lifetime_s: i64,
        calls: AtomicU64,
        errors: Mutex<Vec<FetchError>>,
    }

    impl Fetch for &Fake {
        async fn fetch(&self) -> Result<Credentials, FetchError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(error) = self.errors.lock().map(|mut e| e.pop()).ok().flatten() {
                return Err(error);
            }
            let now = *self
                .clock
                .lock()
                .map_err(|_| FetchError::Transient("poisoned".into()))?;
            Ok(Credentials {
                access_key_id: format!("ASIA{n}"),
                secret_access_key: "secret".into(),
                session_token: "token".into(),
                expiration: now + chrono::Duration::seconds(self.lifetime_s),
            })
        }
    }

    fn fake(lifetime_s: i64) -> Fake {
        Fake {
            clock: Arc::new(Mutex::new(at(0))),
            lifetime_s,
            calls: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
        }
    }

    #[tokio::test]
    async fn one_fetch_serves_every_call_within_the_lifetime() {
        let fake = fake(3600);
        let mut cache = CredentialsCache::new(&fake);
        // An hour's credentials: refreshed 5 minutes before expiry, not earlier.
        for s in (0..3300).step_by(7) {
            let c = cache.get(at(s)).await.expect("credentials");
            assert_eq!(c.access_key_id, "ASIA0");
        }
        assert_eq!((cache.fetches(), fake.calls.load(Ordering::SeqCst)), (1, 1));
        *fake.clock.lock().expect("clock") = at(3300);
        let c = cache.get(at(3300)).await.expect("credentials");
        assert_eq!(c.access_key_id, "ASIA1");
        assert_eq!(cache.fetches(), 2);
    }

    #[test]
    fn the_margin_is_five_minutes_or_a_fifth_of_a_short_lifetime() {
        let secs = chrono::Duration::seconds;
        assert_eq!(refresh_margin(secs(3600)), secs(300));
        assert_eq!(refresh_margin(secs(900)), secs(180));
        assert_eq!(refresh_margin(secs(60)), secs(12));
    }

    #[tokio::test]
    async fn short_lifetimes_refresh_after_four_fifths() {
        let fake = fake(60);
        let mut cache = CredentialsCache::new(&fake);
        cache.get(at(0)).await.expect("credentials");
        cache.get(at(47)).await.expect("credentials");
        assert_eq!(cache.fetches(), 1);
        *fake.clock.lock().expect("clock") = at(48);
        cache.get(at(48)).await.expect("credentials");
        assert_eq!(cache.fetches(), 2);
    }

    #[tokio::test]
    async fn invalidate_forces_a_fetch() {
        let fake = fake(3600);
        let mut cache = CredentialsCache::new(&fake);
        cache.get(at(0)).await.expect("credentials");
        cache.invalidate();
        assert!(cache.current().is_none());
        let c = cache.get(at(1)).await.expect("credentials");
        assert_eq!((c.access_key_id.as_str(), cache.fetches()), ("ASIA1", 2));
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_valid_credentials_but_a_refusal_does_not() {
        let fake = fake(3600);
        let mut cache = CredentialsCache::new(&fake);
        cache.get(at(0)).await.expect("credentials");
        fake.errors
            .lock()
            .expect("errors")
            .push(FetchError::Transient("network".into()));
        // Inside the margin, the provider unreachable: the current ones still serve...
        let c = cache.get(at(3400)).await.expect("still valid");
        assert_eq!((c.access_key_id.as_str(), cache.failures()), ("ASIA0", 1));
        // ...without asking again at once.
        cache.get(at(3405)).await.expect("still valid");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        // A refusal is passed on and drops them.
        fake.errors
            .lock()
            .expect("errors")
            .push(FetchError::Refused("revoked".into()));
        let err = cache.get(at(3420)).await.expect_err("refused");
        assert_eq!(err, FetchError::Refused("revoked".into()));
        assert!(cache.current().is_none());
        // With none to fall back on, a transient error is passed on too.
        fake.errors
            .lock()
            .expect("errors")
            .push(FetchError::Transient("network".into()));
        assert!(matches!(
            cache.get(at(3421)).await,
            Err(FetchError::Transient(_))
        ));
    }

    #[tokio::test]
    async fn credentials_already_expired_on_arrival_are_a_clock_error() {
        let fake = fake(-10);
        let mut cache = CredentialsCache::new(&fake);
        let err = cache.get(at(0)).await.expect_err("expired");
        assert!(err.message().contains("clock"), "{err}");
        assert_eq!(cache.fetches(), 0);
    }

    #[test]
    fn the_providers_answer_parses_and_bad_bodies_are_clear_errors() {
        let good = br#"{"credentials":{"accessKeyId":"ASIAEXAMPLE","secretAccessKey":"s3cr3t","sessionToken":"t0k3n","expiration":"2026-12-04T17:00:00Z"}}"#;
        let c = Credentials::from_provider_answer(good).expect("parses");
        assert_eq!(c.access_key_id, "ASIAEXAMPLE");
        assert_eq!(
            c.expiration,
            Utc.with_ymd_and_hms(2026, 12, 4, 17, 0, 0).unwrap()
        );
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cr3t") && !debug.contains("t0k3n"),
            "{debug}"
        );

        let cases: [(&[u8], &str); 5] = [
            (b"<html>captive portal</html>", "captive portal in the way"),
            (br#"{"AccessKeyId":"x"}"#, "credentials"),
            (
                br#"{"credentials":{"accessKeyId":"A","secretAccessKey":"s3cr3t","sessionToken":"t"}}"#,
                "expiration",
            ),
            (
                br#"{"credentials":{"accessKeyId":"A","secretAccessKey":"s3cr3t","sessionToken":"t","expiration":"tomorrow"}}"#,
                "RFC 3339",
            ),
            (
                br#"{"credentials":{"accessKeyId":"","secretAccessKey":"s3cr3t","sessionToken":"t","expiration":"2026-12-04T17:00:00Z"}}"#,
                "accessKeyId is empty",
            ),
        ];
        for (body, says) in cases {
            let err = Credentials::from_provider_answer(body).expect_err(says);
            assert!(matches!(err, FetchError::Transient(_)), "{err}");
            assert!(err.message().contains(says), "{err}");
            assert!(!err.message().contains("s3cr3t"), "{err}");
        }
    }

    #[test]
    fn provider_refusals_stop_and_its_outages_do_not() {
        let answer = |status: u16, body: &str| {
            classify_answer(status, body.as_bytes(), "box-1", "box-https")
        };
        let err = answer(403, r#"{"message":"Access Denied"}"#).expect_err("403");
        assert!(
            matches!(&err, FetchError::Refused(m) if m.contains("Access Denied") && m.contains("revoked")),
            "{err}"
        );
        let err = answer(401, "").expect_err("401");
        assert!(
            matches!(&err, FetchError::Refused(m) if m.contains("(no message)")),
            "{err}"
        );
        let err = answer(404, r#"{"message":"Role alias does not exist"}"#).expect_err("404");
        assert!(
            matches!(&err, FetchError::Refused(m) if m.contains("iam.role_alias") && m.contains("does not exist")),
            "{err}"
        );
        for status in [429, 500, 503] {
            let err = answer(status, "busy").expect_err("transient");
            assert!(
                matches!(&err, FetchError::Transient(m) if m.contains("busy")),
                "{err}"
            );
        }
    }
}
