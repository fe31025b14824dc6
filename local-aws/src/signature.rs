//! API Gateway's IAM authorization (`AWS_IAM` routes): the request's SigV4 signature,
//! recomputed with the maintained `aws-sigv4` crate from the credentials the local
//! credentials provider issued, then the role's one permission: `execute-api:Invoke` on
//! `POST /things/${credentials-iot:ThingName}/*`.
//!
//! Refusals are API Gateway's, word for word where its answers are documented: 403
//! `Missing Authentication Token` without a signature, `The security token included in the
//! request is invalid.` for credentials it never issued, `... is expired` after they
//! lapse, `Signature expired: ...` for a request signed more than 5 minutes away from now,
//! `The request signature we calculated does not match ...` for a tampered request, and
//! IAM's `User: ... is not authorized to perform: execute-api:Invoke on resource: ...`.

use crate::sts::{Issued, IssuedCredentials, ACCOUNT, ROLE_ID};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use chrono::{DateTime, NaiveDateTime, Utc};
use hyper::http::request::Parts;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// How far a request's `X-Amz-Date` may be from the gateway's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const SERVICE: &str = "execute-api";
const DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// Why a request is not let through (always a 403).
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not a SigV4 one, or lacks a part.
    Malformed(String),
    /// Credentials this stack did not issue, or a session token that is not theirs.
    InvalidToken,
    /// The credentials' lifetime is over.
    ExpiredToken,
    /// Signed too long before (or after) now: the text says when.
    SignatureExpired(String),
    /// The signature is not the one the request and the credentials make.
    Mismatch,
    /// Signed, but the role may not invoke this method and path: the caller's ARN.
    NotAuthorized { user_arn: String, resource: String },
}

impl Refusal {
    /// The answer's body, as API Gateway words it.
    pub fn body(&self) -> Value {
        match self {
            Refusal::Missing => json!({"message": "Missing Authentication Token"}),
            Refusal::Malformed(what) => json!({"message": what}),
            Refusal::InvalidToken => {
                json!({"message": "The security token included in the request is invalid."})
            }
            Refusal::ExpiredToken => {
                json!({"message": "The security token included in the request is expired"})
            }
            Refusal::SignatureExpired(text) => json!({"message": text}),
            Refusal::Mismatch => {
                json!({"message": "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."})
            }
            // IAM's denial comes with a capital M.
            Refusal::NotAuthorized { user_arn, resource } => json!({"Message": format!(
                "User: {user_arn} is not authorized to perform: execute-api:Invoke on resource: {resource}"
            )}),
        }
    }
}

/// Who signed a request that checked out.
#[derive(Debug, Clone)]
pub struct Caller {
    pub session: Issued,
    /// The region of the signature's credential scope.
    pub region: String,
}

impl Caller {
    /// `requestContext.identity` of an IAM-authorized request, as API Gateway fills it.
    pub fn identity(&self) -> Value {
        let session = format!("{ROLE_ID}:{}", self.session.thing);
        json!({
            "accessKey": self.session.access_key_id,
            "accountId": ACCOUNT,
            "caller": session,
            "user": session,
            "userArn": self.session.user_arn(),
            "cognitoAuthenticationProvider": null,
            "cognitoAuthenticationType": null,
            "cognitoIdentityId": null,
            "cognitoIdentityPoolId": null,
            "principalOrgId": null,
        })
    }
}

/// The parts of `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, Refusal> {
    let malformed = |what: &str| {
        Refusal::Malformed(format!(
            "Authorization header requires {what}. Authorization={value}"
        ))
    };
    let rest = value
        .strip_prefix(ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| malformed("the AWS4-HMAC-SHA256 algorithm"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim) {
        match part.split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let credential = credential.ok_or_else(|| malformed("'Credential' parameter"))?;
    let signed = signed.ok_or_else(|| malformed("'SignedHeaders' parameter"))?;
    let signature = signature.ok_or_else(|| malformed("'Signature' parameter"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, "aws4_request"] = scope[..] else {
        return Err(malformed(
            "'Credential' as <access key>/<date>/<region>/<service>/aws4_request",
        ));
    };
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        signed_headers: signed.split(';').collect(),
        signature,
    })
}

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks the signature of a request (its head and whole body) at `now`.
pub fn verify(
    parts: &Parts,
    body: &[u8],
    sessions: &IssuedCredentials,
    now: SystemTime,
) -> Result<Caller, Refusal> {
    let Some(authorization) = parts.headers.get(hyper::header::AUTHORIZATION) else {
        return Err(Refusal::Missing);
    };
    let authorization = authorization
        .to_str()
        .map_err(|_| Refusal::Malformed("Authorization header is not ASCII".into()))?;
    let auth = parse_authorization(authorization)?;
    let session = sessions
        .get(auth.access_key_id)
        .filter(|s| header(parts, "x-amz-security-token") == Some(s.session_token.as_str()))
        .ok_or(Refusal::InvalidToken)?;
    if auth.service != SERVICE {
        return Err(Refusal::Malformed(format!(
            "Credential should be scoped to correct service: '{SERVICE}'."
        )));
    }
    let amz_date = header(parts, "x-amz-date").ok_or_else(|| {
        Refusal::Malformed(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                .into(),
        )
    })?;
    let signed_at = NaiveDateTime::parse_from_str(amz_date, DATE_FORMAT)
        .map_err(|_| Refusal::Malformed(format!("X-Amz-Date {amz_date:?} is not {DATE_FORMAT}")))?
        .and_utc();
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(Refusal::Malformed(format!(
            "Credential should be scoped to a valid date: '{}'.",
            &amz_date[..8.min(amz_date.len())]
        )));
    }
    if now >= session.expires {
        return Err(Refusal::ExpiredToken);
    }
    let now_utc = DateTime::<Utc>::from(now);
    let skew = chrono::Duration::from_std(MAX_SKEW).unwrap_or_default();
    let stamp = |t: DateTime<Utc>| t.format(DATE_FORMAT).to_string();
    if signed_at < now_utc - skew {
        return Err(Refusal::SignatureExpired(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - 5 min.)",
            stamp(now_utc - skew),
            stamp(now_utc)
        )));
    }
    if signed_at > now_utc + skew {
        return Err(Refusal::SignatureExpired(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
            stamp(now_utc + skew),
            stamp(now_utc)
        )));
    }
    let expected = signature_of(parts, body, &auth, &session, signed_at.into())?;
    if !constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        return Err(Refusal::Mismatch);
    }
    Ok(Caller {
        session,
        region: auth.region.to_owned(),
    })
}

/// The signature `aws-sigv4` makes of the request's signed headers, path, query and body
/// with the session's secret, at the time the request says it was signed.
fn signature_of(
    parts: &Parts,
    body: &[u8],
    auth: &Authorization,
    session: &Issued,
    signed_at: SystemTime,
) -> Result<String, Refusal> {
    let host = header(parts, "host")
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .ok_or(Refusal::Mismatch)?;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri = format!("http://{host}{path_and_query}");
    let mut headers = Vec::new();
    for name in &auth.signed_headers {
        for value in parts.headers.get_all(*name) {
            let value = value.to_str().map_err(|_| Refusal::Mismatch)?;
            headers.push((*name, value));
        }
    }
    let identity = Credentials::new(
        &session.access_key_id,
        &session.secret_access_key,
        Some(session.session_token.clone()),
        Some(session.expires),
        "local-credentials-provider",
    )
    .into();
    // Sign exactly the headers the client signed: none of them excluded.
    let mut settings = SigningSettings::default();
    settings.excluded_headers = None;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(auth.region)
        .name(SERVICE)
        .time(signed_at)
        .settings(settings)
        .build()
        .map_err(|_| Refusal::Mismatch)?
        .into();
    let request = SignableRequest::new(
        parts.method.as_str(),
        uri,
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|_| Refusal::Mismatch)?;
    let output = sign(request, &params).map_err(|_| Refusal::Mismatch)?;
    Ok(output.signature().to_owned())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The role's one permission: `POST /things/<its own thing>/<sensor>`, nothing else.
/// `resource` is the method and path (`POST/things/box-1/gasdetector`); `api` and `stage`
/// name the API in the ARN of a refusal.
pub fn authorize(caller: &Caller, method: &str, path: &str, stage: &str) -> Result<(), Refusal> {
    let own = format!("/things/{}/", caller.session.thing);
    if method == "POST" && path.starts_with(&own) && !path[own.len()..].contains('/') {
        return Ok(());
    }
    Err(Refusal::NotAuthorized {
        user_arn: caller.session.user_arn(),
        resource: format!(
            "arn:aws:execute-api:{}:{ACCOUNT}:local/{stage}/{method}{path}",
            caller.region
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request signed as a box signs it (aws-sigv4, default settings), split into parts.
    fn signed(session: &Issued, path: &str, body: &str, at: SystemTime) -> (Parts, Vec<u8>) {
        let identity = Credentials::new(
            &session.access_key_id,
            &session.secret_access_key,
            Some(session.session_token.clone()),
            None,
            "test",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("execute-api")
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let uri = format!("http://127.0.0.1:3000{path}");
        let headers = [("content-type", "application/json")];
        let signable = SignableRequest::new(
            "POST",
            uri.clone(),
            headers.into_iter(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut request = hyper::Request::post(path)
            .header("host", "127.0.0.1:3000")
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        instructions.apply_to_request_http1x(&mut request);
        let (parts, ()) = request.into_parts();
        (parts, body.as_bytes().to_vec())
    }

    fn session(store: &IssuedCredentials, thing: &str) -> Issued {
        store.issue(thing, Duration::from_secs(900), SystemTime::now())
    }

    #[test]
    fn a_request_signed_with_issued_credentials_checks_out() {
        let store = IssuedCredentials::default();
        let box_a = session(&store, "box-a");
        let now = SystemTime::now();
        let (parts, body) = signed(&box_a, "/things/box-a/gasdetector", "{}", now);
        let caller = verify(&parts, &body, &store, now).expect("valid signature");
        assert_eq!(caller.session.thing, "box-a");
        assert_eq!(caller.region, "us-east-1");
        assert_eq!(caller.identity()["accessKey"], box_a.access_key_id.as_str());
        assert!(authorize(&caller, "POST", "/things/box-a/gasdetector", "local").is_ok());
    }

    #[test]
    fn tampering_expiry_and_strangers_are_refused() {
        let store = IssuedCredentials::default();
        let box_a = session(&store, "box-a");
        let now = SystemTime::now();
        let (parts, _) = signed(&box_a, "/things/box-a/gasdetector", "{\"a\":1}", now);
        assert_eq!(
            verify(&parts, b"{\"a\":2}", &store, now).unwrap_err(),
            Refusal::Mismatch
        );
        // Another path under the same signature.
        let (mut moved, body) = signed(&box_a, "/things/box-a/gasdetector", "{}", now);
        moved.uri = "/things/box-a/dust".parse().unwrap();
        assert_eq!(
            verify(&moved, &body, &store, now).unwrap_err(),
            Refusal::Mismatch
        );
        // Signed 6 minutes ago.
        let old = now - Duration::from_secs(360);
        let (parts, body) = signed(&box_a, "/things/box-a/gasdetector", "{}", old);
        let refusal = verify(&parts, &body, &store, now).unwrap_err();
        assert!(
            matches!(&refusal, Refusal::SignatureExpired(t) if t.starts_with("Signature expired: ")),
            "{refusal:?}"
        );
        // After the credentials' lifetime.
        let (parts, body) = signed(&box_a, "/things/box-a/gasdetector", "{}", now);
        let later = box_a.expires + Duration::from_secs(1);
        assert_eq!(
            verify(&parts, &body, &store, later).unwrap_err(),
            Refusal::ExpiredToken
        );
        // Credentials from elsewhere.
        let other = IssuedCredentials::default();
        let stranger = session(&other, "box-a");
        let (parts, body) = signed(&stranger, "/things/box-a/gasdetector", "{}", now);
        assert_eq!(
            verify(&parts, &body, &store, now).unwrap_err(),
            Refusal::InvalidToken
        );
        // No signature at all.
        let (mut bare, body) = signed(&box_a, "/things/box-a/gasdetector", "{}", now);
        bare.headers.remove(hyper::header::AUTHORIZATION);
        assert_eq!(
            verify(&bare, &body, &store, now).unwrap_err(),
            Refusal::Missing
        );
        assert_eq!(
            Refusal::Missing.body()["message"],
            "Missing Authentication Token"
        );
    }

    #[test]
    fn the_role_reaches_only_its_own_things_routes() {
        let store = IssuedCredentials::default();
        let box_a = session(&store, "box-a");
        let now = SystemTime::now();
        let (parts, body) = signed(&box_a, "/things/box-b/gasdetector", "{}", now);
        // The signature is good; the permission is not.
        let caller = verify(&parts, &body, &store, now).expect("valid signature");
        let refusal = authorize(&caller, "POST", "/things/box-b/gasdetector", "local").unwrap_err();
        let message = refusal.body()["Message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            message.contains("assumed-role/SensorBoxHttpsRole/box-a"),
            "{message}"
        );
        assert!(
            message.ends_with("local/local/POST/things/box-b/gasdetector"),
            "{message}"
        );
        for (method, path) in [
            ("GET", "/things/box-a/gasdetector"),
            ("POST", "/things/box-a/gasdetector/x"),
            ("POST", "/things/box-ab/gasdetector"),
            ("POST", "/gasdetector"),
        ] {
            assert!(
                authorize(&caller, method, path, "local").is_err(),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn malformed_authorization_names_what_is_missing() {
        for (value, expected) in [
            ("Basic abc", "algorithm"),
            ("AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00", "'Credential'"),
            ("AWS4-HMAC-SHA256 Credential=A/20260101/us-east-1/execute-api/aws4_request, Signature=00", "'SignedHeaders'"),
            ("AWS4-HMAC-SHA256 Credential=A/x, SignedHeaders=host, Signature=00", "<access key>"),
        ] {
            match parse_authorization(value) {
                Err(Refusal::Malformed(text)) => assert!(text.contains(expected), "{text}"),
                other => panic!("{value}: {:?}", other.map(|a| a.access_key_id)),
            }
        }
    }
}
