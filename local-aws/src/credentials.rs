//! The AWS IoT credentials provider of the local stack: a box presents its device
//! certificate over mutual TLS and gets short-lived credentials for the role behind a role
//! alias, as `GET https://<endpoint>/role-aliases/<alias>/credentials` with the header
//! `x-amzn-iot-thingname` does on AWS.
//!
//! The certificate must chain to the local CA and not be on its revocation list (checked
//! at the handshake, as the broker checks it), be ACTIVE in the registry, and be attached
//! to the thing the header names (`ListThingPrincipals`, `DescribeCertificate` in moto).
//! The credentials are bound to that thing ([`crate::sts`]): the gateway lets them invoke
//! only `POST /things/<that thing>/*`, as the role's `${credentials-iot:ThingName}`
//! resource does.

use crate::certs::Certs;
use crate::http::{self, ClientCertificate, HttpResponse, Server, TlsConfigSource};
use crate::invoke::{self, InvokeClient};
use crate::moto;
use crate::sts::IssuedCredentials;
use crate::thing_name::valid_thing_name;
use chrono::{DateTime, SecondsFormat, Utc};
use hyper::body::Incoming;
use hyper::{Method, Request};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use serde_json::{json, Value};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The role alias's default credential duration (AWS: 3600 s, settable 900 to 43200).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// The header naming the thing the certificate must be attached to.
pub const THING_HEADER: &str = "x-amzn-iot-thingname";

#[derive(Clone, Debug)]
pub struct CredentialsProviderConfig {
    pub addr: SocketAddr,
    /// The local CA: server certificate, client trust and revocation list.
    pub certs: Certs,
    /// moto server (`http://host:port`), the registry.
    pub moto: String,
    /// The role alias boxes ask for (the stacks' `SensorBoxRoleAlias`).
    pub role_alias: String,
    pub lifetime: Duration,
    /// Where issued credentials are kept for the gateway.
    pub sessions: IssuedCredentials,
}

pub struct CredentialsProvider {
    server: Server,
}

struct State {
    config: CredentialsProviderConfig,
    client: InvokeClient,
}

impl CredentialsProvider {
    pub async fn start(config: CredentialsProviderConfig) -> io::Result<CredentialsProvider> {
        // Fail at start on a broken CA rather than on the first box.
        tls_config(&config.certs).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let certs = config.certs.clone();
        let tls: TlsConfigSource = Arc::new(move || tls_config(&certs));
        let addr = config.addr;
        let state = Arc::new(State {
            config,
            client: invoke::client(),
        });
        let server = http::serve_tls(addr, tls, move |request, _peer, certificate| {
            let state = state.clone();
            async move { handle(request, certificate, &state).await }
        })
        .await?;
        Ok(CredentialsProvider { server })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// What a box configures as `[iam] credentials_endpoint` (`host:port`).
    pub fn endpoint(&self) -> String {
        format!("localhost:{}", self.server.addr.port())
    }
}

/// The server side of mutual TLS, read afresh (a new revocation list counts at once).
fn tls_config(certs: &Certs) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let read_err =
        |path: &std::path::Path, e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(certs.ca()).map_err(|e| read_err(&certs.ca(), &e))? {
        let ca = ca.map_err(|e| read_err(&certs.ca(), &e))?;
        roots.add(ca).map_err(|e| read_err(&certs.ca(), &e))?;
    }
    let crls = CertificateRevocationListDer::pem_file_iter(certs.crl())
        .map_err(|e| read_err(&certs.crl(), &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(&certs.crl(), &e))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .with_crls(crls)
    .only_check_end_entity_revocation()
    .build()
    .map_err(|e| format!("client verifier: {e}"))?;
    let server = certs.server();
    let chain = CertificateDer::pem_file_iter(&server.cert)
        .map_err(|e| read_err(&server.cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(&server.cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(&server.key).map_err(|e| read_err(&server.key, &e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("server certificate: {e}"))?;
    Ok(Arc::new(config))
}

fn answer(status: u16, message: &str) -> HttpResponse {
    http::json(
        status,
        &json!({ "message": message }),
        &[("x-amzn-RequestId", &http::request_id())],
    )
}

async fn handle(
    request: Request<Incoming>,
    certificate: ClientCertificate,
    state: &State,
) -> HttpResponse {
    let config = &state.config;
    let path = request.uri().path();
    let Some(alias) = path
        .strip_prefix("/role-aliases/")
        .and_then(|rest| rest.strip_suffix("/credentials"))
    else {
        return answer(404, "not found: GET /role-aliases/<alias>/credentials");
    };
    if request.method() != Method::GET {
        return answer(
            405,
            "method not allowed: GET /role-aliases/<alias>/credentials",
        );
    }
    if alias != config.role_alias {
        return answer(404, &format!("role alias {alias} does not exist"));
    }
    let Some(certificate) = certificate else {
        return answer(403, "a client certificate is required");
    };
    let Some(thing) = request
        .headers()
        .get(THING_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
    else {
        return answer(
            400,
            &format!("the {THING_HEADER} header is required: the role's policy names the thing"),
        );
    };
    match attached(&state.client, &config.moto, thing, &certificate).await {
        Ok(Attachment::Active) => {}
        Ok(refused) => {
            eprintln!("credentials provider: {thing}: {}", refused.reason(thing));
            return answer(403, "Access Denied");
        }
        Err(why) => {
            eprintln!("credentials provider: {thing}: {why}");
            return answer(503, &why);
        }
    }
    let issued = config
        .sessions
        .issue(thing, config.lifetime, SystemTime::now());
    let expiration =
        DateTime::<Utc>::from(issued.expires).to_rfc3339_opts(SecondsFormat::Secs, true);
    http::json(
        200,
        &json!({"credentials": {
            "accessKeyId": issued.access_key_id,
            "secretAccessKey": issued.secret_access_key,
            "sessionToken": issued.session_token,
            "expiration": expiration,
        }}),
        &[],
    )
}

/// What the registry says of a certificate and a thing.
#[derive(Debug, PartialEq)]
enum Attachment {
    Active,
    /// Attached, but REVOKED, INACTIVE, ...
    Status(String),
    NotAttached,
    UnknownThing,
}

impl Attachment {
    fn reason(&self, thing: &str) -> String {
        match self {
            Attachment::Active => "active".into(),
            Attachment::Status(status) => format!("the certificate is {status}"),
            Attachment::NotAttached => format!("the certificate is not attached to {thing}"),
            Attachment::UnknownThing => format!("no thing named {thing}"),
        }
    }
}

/// Whether `certificate` is attached to `thing` in the registry, and its status.
async fn attached(
    client: &InvokeClient,
    moto: &str,
    thing: &str,
    certificate: &CertificateDer<'_>,
) -> Result<Attachment, String> {
    if !valid_thing_name(thing) {
        return Ok(Attachment::UnknownThing);
    }
    let (status, principals) =
        moto::get(client, moto, &format!("/things/{thing}/principals")).await?;
    match status {
        200 => {}
        404 => return Ok(Attachment::UnknownThing),
        other => return Err(format!("ListThingPrincipals answered {other}")),
    }
    let arns = principals["principals"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for arn in arns.iter().filter_map(Value::as_str) {
        let Some((_, id)) = arn.rsplit_once("cert/") else {
            continue;
        };
        let (status, description) = moto::get(client, moto, &format!("/certificates/{id}")).await?;
        if status != 200 {
            continue;
        }
        let description = &description["certificateDescription"];
        let pem = description["certificatePem"].as_str().unwrap_or_default();
        let Ok(der) = CertificateDer::from_pem_slice(pem.as_bytes()) else {
            continue;
        };
        if der.as_ref() == certificate.as_ref() {
            return Ok(match description["status"].as_str() {
                Some("ACTIVE") => Attachment::Active,
                other => Attachment::Status(other.unwrap_or("of unknown status").to_owned()),
            });
        }
    }
    Ok(Attachment::NotAttached)
}
