//! The bit of hyper plumbing the HTTP servers share, and the reverse proxies' forwarding
//! (local-aws's fault proxy, fleetload's counting proxies).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub type HttpResponse = Response<Full<Bytes>>;

/// A bound HTTP server; stops accepting (and closes idle connections) when dropped.
pub struct Server {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Binds `addr` and serves HTTP/1.1 with `handler` on the current runtime.
pub async fn serve<H, F>(addr: SocketAddr, handler: H) -> io::Result<Server>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    serve_with(addr, None, move |request, peer, _| handler(request, peer)).await
}

/// The client certificate a mutual-TLS connection presented (its first, the leaf).
pub type ClientCertificate = Option<CertificateDer<'static>>;

/// Makes the TLS configuration for each new connection, so a changed revocation list
/// takes effect on the next handshake.
pub type TlsConfigSource = Arc<dyn Fn() -> Result<Arc<rustls::ServerConfig>, String> + Send + Sync>;

/// Like [`serve`], over TLS: each connection gets `tls()`'s configuration, and `handler`
/// is handed the client certificate. A refused handshake is logged and the connection
/// dropped, as a TLS server refuses a revoked certificate.
pub async fn serve_tls<H, F>(
    addr: SocketAddr,
    tls: TlsConfigSource,
    handler: H,
) -> io::Result<Server>
where
    H: Fn(Request<Incoming>, SocketAddr, ClientCertificate) -> F + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    serve_with(addr, Some(tls), handler).await
}

async fn serve_with<H, F>(
    addr: SocketAddr,
    tls: Option<TlsConfigSource>,
    handler: H,
) -> io::Result<Server>
where
    H: Fn(Request<Incoming>, SocketAddr, ClientCertificate) -> F + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    let handler = Arc::new(handler);
    accept_loop(addr, move |stream, peer, addr, stop| {
        let handler = handler.clone();
        let tls = tls.clone();
        async move {
            let service = |certificate: ClientCertificate| {
                service_fn(move |request| {
                    let response = handler(request, peer, certificate.clone());
                    async move { Ok::<_, Infallible>(response.await) }
                })
            };
            let Some(tls) = tls else {
                return run_connection(stream, service(None), stop).await;
            };
            let config = match tls() {
                Ok(config) => config,
                Err(why) => return eprintln!("local-aws: TLS on {addr}: {why}"),
            };
            match tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
                Ok(stream) => {
                    let certificate = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|leaf| leaf.clone().into_owned());
                    run_connection(stream, service(certificate), stop).await
                }
                // A client that closes before a handshake (a port probe) is no refusal.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
                Err(e) => {
                    eprintln!("local-aws: TLS handshake from {peer} on {addr} refused: {e}")
                }
            }
        }
    })
    .await
}

/// Like [`serve`], for a handler that may refuse to answer: its `Err` drops the connection
/// with a TCP reset (every connection lingers zero), as a failing peer would.
pub async fn serve_or_reset<H, F>(addr: SocketAddr, handler: H) -> io::Result<Server>
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = io::Result<HttpResponse>> + Send + 'static,
{
    let handler = Arc::new(handler);
    accept_loop(addr, move |stream, _peer, _addr, stop| {
        let handler = handler.clone();
        async move {
            // A connection closed on an `Err` is then reset (RST), not closed gracefully.
            let _ = stream.set_zero_linger();
            let service = service_fn(move |request| handler(request));
            run_connection(stream, service, stop).await
        }
    })
    .await
}

/// Binds `addr` and serves HTTP/1.1 with a ready-made hyper service (a clone per
/// connection), such as an embedded emulator's router wrapped in
/// `hyper_util::service::TowerToHyperService`.
pub async fn serve_service<S, B>(addr: SocketAddr, service: S) -> io::Result<Server>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    accept_loop(addr, move |stream, _peer, _addr, stop| {
        let service = service.clone();
        async move { run_connection(stream, service, stop).await }
    })
    .await
}

/// Binds `addr` and hands each accepted connection to `connection` in its own task, until
/// the returned [`Server`] is dropped.
async fn accept_loop<C, F>(addr: SocketAddr, connection: C) -> io::Result<Server>
where
    C: Fn(tokio::net::TcpStream, SocketAddr, SocketAddr, watch::Receiver<bool>) -> F
        + Send
        + Sync
        + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (shutdown, mut stop) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.changed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        eprintln!("local-aws: accept on {addr}: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            tokio::spawn(connection(stream, peer, addr, stop.clone()));
        }
    });
    Ok(Server { addr, shutdown })
}

/// Serves one connection until it ends or the server stops (then gracefully).
async fn run_connection<IO, S, B>(io: IO, service: S, mut stop: watch::Receiver<bool>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B> + Send + 'static,
    S::Future: Send,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

pub enum BodyError {
    TooLarge,
    Read(String),
}

/// Reads a request body of at most `limit` bytes.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(BodyError::TooLarge)
            } else {
                Err(BodyError::Read(e.to_string()))
            }
        }
    }
}

/// A JSON response; `extra` headers are added as given.
pub fn json(status: u16, body: &serde_json::Value, extra: &[(&str, &str)]) -> HttpResponse {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| {
            let mut fallback = Response::new(Full::new(Bytes::from_static(b"{}")));
            *fallback.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            fallback
        })
}

/// A plain-text response (`status` 502 if it is no status code).
pub fn plain(status: u16, message: &str) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(message.to_owned())));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    response
}

/// The HTTP client a reverse proxy forwards with.
pub type ProxyClient = Client<HttpConnector, Full<Bytes>>;

pub fn proxy_client() -> ProxyClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Why a request could not be forwarded, and the status a proxy answers it with.
#[derive(Debug)]
pub struct ForwardError {
    /// 400 for a request that cannot be rebuilt for the upstream, 502 otherwise.
    pub status: u16,
    /// Nothing accepted the connection: the upstream never saw the request, so it can
    /// be tried again.
    pub refused: bool,
    pub message: String,
}

impl ForwardError {
    /// The proxy's answer for it, naming `proxy`.
    pub fn response(&self, proxy: &str) -> HttpResponse {
        plain(self.status, &format!("{proxy}: {}", self.message))
    }
}

/// Sends the request `parts` + `body` to `upstream` (`http://host:port`, no path) with
/// the same method, path, query and headers; the whole answer.
pub async fn forward(
    client: &ProxyClient,
    upstream: &str,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Result<HttpResponse, ForwardError> {
    let bad_request = |message: String| ForwardError {
        status: 400,
        refused: false,
        message,
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = format!("{}{path}", upstream.trim_end_matches('/'))
        .parse()
        .map_err(|e| bad_request(format!("bad path: {e}")))?;
    let mut request = Request::builder().method(parts.method.clone()).uri(uri);
    for (name, value) in &parts.headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| bad_request(e.to_string()))?;
    let response = client.request(request).await.map_err(|e| ForwardError {
        status: 502,
        refused: e.is_connect(),
        message: format!("upstream {upstream}: {e}"),
    })?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| ForwardError {
        status: 502,
        refused: false,
        message: format!("upstream body: {e}"),
    })?;
    Ok(Response::from_parts(parts, Full::new(body.to_bytes())))
}

/// Percent-decodes a URL component (`+` is kept: it is a literal in paths).
pub fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Query string pairs, decoded (`+` means space in query strings).
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                let s = s.replace('+', " ");
                percent_decode(&s).unwrap_or(s)
            };
            (decode(key), decode(value))
        })
        .collect()
}

/// A random request id shaped like AWS's (a UUID v4).
pub fn request_id() -> String {
    let a = fastrand::u64(..);
    let b = fastrand::u64(..);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("pi%2F2").as_deref(), Some("pi/2"));
        assert_eq!(percent_decode("a+b").as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(
            query_pairs(Some("qos=1&x=a+b%21&flag")),
            vec![
                ("qos".into(), "1".into()),
                ("x".into(), "a b!".into()),
                ("flag".into(), "".into())
            ]
        );
        assert_eq!(request_id().len(), 36);
    }
}
