//! The IoT registry of the local stack: moto server's IoT control plane, behind a thin
//! front that makes the one call moto gets wrong for us faithful. `CreateCertificateFromCsr`
//! in moto signs a certificate for a key of its own (not the CSR's) with a throwaway
//! issuer, so a box could never connect with it. Here the local CA ([`Certs`]) signs the
//! CSR's own public key, as AWS's CA does, and the certificate is registered in moto
//! (`RegisterCertificateWithoutCA`, ACTIVE when asked) so every other call (`Describe*`,
//! `AttachThingPrincipal`, `UpdateCertificate`, `ListThingPrincipals`, ...) is moto's.
//! The answer has AWS's shape: `certificateArn`, `certificateId`, `certificatePem`.
//!
//! `UpdateCertificate` to REVOKED or INACTIVE also puts the certificate's serial on the
//! local CA's revocation list and has the broker reload it, so a revoked box is refused at
//! the TLS handshake, as IoT Core refuses it on connect.

use crate::aws_error::error;
use crate::certs::Certs;
use crate::http::{self, BodyError, HttpResponse, Server};
use crate::invoke::{self, InvokeClient};
use crate::moto::{fetch, UNSIGNED};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde_json::{json, Value};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

/// The largest control-plane request body relayed (a CSR or a policy is a few KB).
const MAX_BODY: usize = 256 * 1024;

pub struct RegistryFront {
    server: Server,
}

/// What makes the broker see a new revocation list (its reload).
pub type Reload = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

impl RegistryFront {
    /// Binds `addr` in front of moto at `moto` (`http://host:port`); certificates from
    /// CSRs are signed by `certs`' CA.
    pub async fn start(addr: SocketAddr, moto: String, certs: Certs) -> io::Result<RegistryFront> {
        RegistryFront::start_revoking(addr, moto, certs, None).await
    }

    /// Like [`RegistryFront::start`]; a revocation also calls `reload` (the broker's).
    pub async fn start_revoking(
        addr: SocketAddr,
        moto: String,
        certs: Certs,
        reload: Option<Reload>,
    ) -> io::Result<RegistryFront> {
        let client = invoke::client();
        let server = http::serve(addr, move |request, _peer| {
            let (client, moto, certs, reload) =
                (client.clone(), moto.clone(), certs.clone(), reload.clone());
            async move { handle(request, &client, &moto, &certs, reload.as_ref()).await }
        })
        .await?;
        Ok(RegistryFront { server })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The value for `AWS_ENDPOINT_URL_IOT` (functions and `fleet`).
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }
}

async fn handle(
    request: Request<Incoming>,
    client: &InvokeClient,
    moto: &str,
    certs: &Certs,
    reload: Option<&Reload>,
) -> HttpResponse {
    let (mut parts, body) = request.into_parts();
    // moto tells the services apart by the credential scope of the signature (it checks
    // no signature); an unsigned call (curl, xtask) is the IoT control plane's too.
    if !parts.headers.contains_key(hyper::header::AUTHORIZATION) {
        parts.headers.insert(
            hyper::header::AUTHORIZATION,
            hyper::header::HeaderValue::from_static(UNSIGNED),
        );
    }
    let body = match http::read_body(body, MAX_BODY).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return error(413, "RequestEntityTooLarge", "request too large")
        }
        Err(BodyError::Read(e)) => return error(400, "InvalidRequestException", &e.to_string()),
    };
    if parts.method == Method::POST && parts.uri.path() == "/certificates" {
        let set_as_active = http::query_pairs(parts.uri.query())
            .iter()
            .any(|(k, v)| k == "setAsActive" && v == "true");
        // The registration carries the caller's credential scope (see above).
        let authorization = parts.headers.get(hyper::header::AUTHORIZATION).cloned();
        return certificate_from_csr(&body, set_as_active, authorization, client, moto, certs)
            .await;
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut forward = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{moto}{path_and_query}"));
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST {
            forward = forward.header(name, value);
        }
    }
    let revoking = parts.method == Method::PUT
        && parts.uri.path().starts_with("/certificates/")
        && http::query_pairs(parts.uri.query())
            .iter()
            .any(|(k, v)| k == "newStatus" && (v == "REVOKED" || v == "INACTIVE"));
    let answer = match forward.body(Full::new(body)) {
        Ok(forward) => relay(client, forward).await,
        Err(e) => return error(400, "InvalidRequestException", &e.to_string()),
    };
    if revoking && answer.status() == 200 {
        let id = parts.uri.path().trim_start_matches("/certificates/");
        let authorization = parts.headers.get(hyper::header::AUTHORIZATION).cloned();
        if let Err(why) = refuse_on_connect(client, moto, certs, reload, id, authorization).await {
            // Moto holds the status; the broker would still let the box in.
            eprintln!("registry: certificate {id} revoked, but not on the broker's list: {why}");
            return error(500, "InternalFailureException", &why);
        }
    }
    answer
}

/// Puts certificate `id`'s serial on the CA's revocation list and reloads the broker.
async fn refuse_on_connect(
    client: &InvokeClient,
    moto: &str,
    certs: &Certs,
    reload: Option<&Reload>,
    id: &str,
    authorization: Option<hyper::header::HeaderValue>,
) -> Result<(), String> {
    let mut request = Request::get(format!("{moto}/certificates/{id}"));
    if let Some(authorization) = authorization {
        request = request.header(hyper::header::AUTHORIZATION, authorization);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let (parts, body) = fetch(client, request)
        .await
        .map_err(|_| "DescribeCertificate: moto did not answer".to_string())?;
    if parts.status != 200 {
        return Err(format!("DescribeCertificate answered {}", parts.status));
    }
    let description: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let pem = description["certificateDescription"]["certificatePem"]
        .as_str()
        .ok_or("DescribeCertificate gave no certificatePem")?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("certificate PEM: {e}"))?;
    let certificate = pem.parse_x509().map_err(|e| format!("certificate: {e}"))?;
    certs.revoke(certificate.raw_serial())?;
    match reload {
        Some(reload) => reload(),
        None => Ok(()),
    }
}

/// Sends `request` to moto and hands its answer back as it came.
async fn relay(client: &InvokeClient, request: Request<Full<Bytes>>) -> HttpResponse {
    match fetch(client, request).await {
        Ok((parts, body)) => hyper::Response::from_parts(parts, Full::new(body)),
        Err(unavailable) => unavailable,
    }
}

/// `CreateCertificateFromCsr`: the local CA signs the CSR's key; moto registers the result.
async fn certificate_from_csr(
    body: &[u8],
    set_as_active: bool,
    authorization: Option<hyper::header::HeaderValue>,
    client: &InvokeClient,
    moto: &str,
    certs: &Certs,
) -> HttpResponse {
    let csr = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["certificateSigningRequest"].as_str().map(str::to_string));
    let Some(csr) = csr else {
        return error(
            400,
            "InvalidRequestException",
            "certificateSigningRequest is required",
        );
    };
    let pem = match certs.sign_csr(&csr) {
        Ok(pem) => pem,
        Err(why) => {
            eprintln!("registry: CreateCertificateFromCsr: {why}");
            return error(400, "InvalidRequestException", &why);
        }
    };
    let register = json!({
        "certificatePem": pem,
        "status": if set_as_active { "ACTIVE" } else { "INACTIVE" },
    });
    let mut request = Request::post(format!("{moto}/certificate/register-no-ca"))
        .header("content-type", "application/json");
    if let Some(authorization) = authorization {
        request = request.header(hyper::header::AUTHORIZATION, authorization);
    }
    let request = request.body(Full::new(Bytes::from(register.to_string())));
    let Ok(request) = request else {
        return error(500, "InternalFailureException", "bad registry URL");
    };
    let (parts, answer) = match fetch(client, request).await {
        Ok(fetched) => fetched,
        Err(unavailable) => return unavailable,
    };
    if parts.status != 200 {
        eprintln!(
            "registry: RegisterCertificateWithoutCA answered {}: {}",
            parts.status,
            String::from_utf8_lossy(&answer)
                .chars()
                .take(300)
                .collect::<String>()
        );
        return hyper::Response::from_parts(parts, Full::new(answer));
    }
    let registered: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    http::json(
        200,
        &json!({
            "certificateArn": registered["certificateArn"],
            "certificateId": registered["certificateId"],
            "certificatePem": pem,
        }),
        &[],
    )
}
