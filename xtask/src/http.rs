//! The one HTTP client of xtask: HTTP/1.1 over std `TcpStream` for plain `http://` (no
//! dependency), curl for `https://`, SigV4-signed and authenticated requests.

use crate::tools::Result;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The status and the body of an answer.
pub type Reply = (u16, String);

/// The content type of every JSON request.
pub const JSON: (&str, &str) = ("Content-Type", "application/json");

/// How long a request to an [`Endpoint`] may take (curl `--max-time`).
const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(60);

/// A JSON request to `addr` (`host:port`, plain HTTP), answered within 10 s or `None`.
pub fn request(addr: &str, method: &str, path: &str, body: &str) -> Option<Reply> {
    request_with_timeout(addr, method, path, body, Duration::from_secs(10))
}

/// [`request`] with its own deadline for the answer.
pub fn request_with_timeout(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Option<Reply> {
    let request = Request {
        method,
        path,
        headers: &[JSON],
        body: body.as_bytes(),
    };
    exchange(addr, "", &request, timeout)
}

/// One request: the method, the path (and query), headers and the body.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// `request` on a fresh connection to `addr` (`Connection: close`), its path under
/// `base`: status and body.
fn exchange(addr: &str, base: &str, request: &Request, timeout: Duration) -> Option<Reply> {
    let (method, path, body) = (request.method, request.path, request.body);
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let mut head = format!("{method} {base}{path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Some((status, body.to_owned()))
}

/// Fails unless the answer is a 2xx whose body (white space removed) contains `wanted`.
pub fn expect(reply: Reply, what: &str, wanted: &str) -> Result {
    let (status, body) = reply;
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    if (200..300).contains(&status) && compact.contains(wanted) {
        Ok(())
    } else {
        Err(format!("{what} answered {status}: {body}"))
    }
}

/// How requests to an [`Endpoint`] authenticate.
pub enum Auth {
    None,
    /// HTTP basic auth, `name:password`.
    Basic(String),
    /// Signed with the credentials in AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
    /// AWS_SESSION_TOKEN (curl `--aws-sigv4`).
    SigV4 {
        region: String,
        service: String,
    },
}

/// A server by URL (`http://host:port` or `https://...`, no trailing slash).
pub struct Endpoint {
    pub url: String,
    pub auth: Auth,
    /// Accept any certificate (local containers use a demo certificate).
    pub insecure: bool,
}

impl Endpoint {
    /// Sends `body` to `path` under the URL: over std for plain `http://` without
    /// credentials, with curl otherwise. Credentials never reach the log.
    pub fn send(&self, request: &Request) -> Result<Reply> {
        match self.plain_http() {
            Some((addr, base)) => exchange(addr, base, request, ENDPOINT_TIMEOUT)
                .ok_or_else(|| format!("no answer from {}", self.url)),
            None => self.curl(request),
        }
    }

    /// `host:port` and the base path of a plain `http://` URL that needs no credentials.
    fn plain_http(&self) -> Option<(&str, &str)> {
        if !matches!(self.auth, Auth::None) {
            return None;
        }
        let rest = self.url.strip_prefix("http://")?;
        let (addr, base) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        (!addr.contains('@')).then_some((addr, base))
    }

    fn curl(&self, request: &Request) -> Result<Reply> {
        let (method, path, body) = (request.method, request.path, request.body);
        let mut curl = Command::new("curl");
        curl.args(["--silent", "--show-error", "--retry", "3", "--max-time"])
            .arg(ENDPOINT_TIMEOUT.as_secs().to_string())
            .args(["-X", method, "-w", "\n%{http_code}"]);
        if self.insecure {
            curl.arg("--insecure");
        }
        match &self.auth {
            Auth::None => {}
            Auth::Basic(user) => {
                curl.arg("--user").arg(user);
            }
            Auth::SigV4 { region, service } => {
                let key = env_var("AWS_ACCESS_KEY_ID")?;
                let secret = env_var("AWS_SECRET_ACCESS_KEY")?;
                curl.arg("--aws-sigv4")
                    .arg(format!("aws:amz:{region}:{service}"))
                    .arg("--user")
                    .arg(format!("{key}:{secret}"));
                if let Ok(token) = std::env::var("AWS_SESSION_TOKEN") {
                    curl.arg("-H").arg(format!("x-amz-security-token: {token}"));
                }
            }
        }
        for (name, value) in request.headers {
            curl.arg("-H").arg(format!("{name}: {value}"));
        }
        if !body.is_empty() {
            // Read whole before sending, so --aws-sigv4 signs the real payload.
            curl.args(["--data-binary", "@-"]);
        }
        curl.arg(format!("{}{path}", self.url))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = curl
            .spawn()
            .map_err(|e| format!("cannot start curl: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(body)
                .map_err(|e| format!("cannot write to curl: {e}"))?;
        }
        let output = child.wait_with_output().map_err(|e| format!("curl: {e}"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let (reply, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        match code.trim().parse() {
            Ok(status) if status != 0 => Ok((status, reply.to_owned())),
            _ => Err(format!(
                "curl failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )),
        }
    }
}

fn env_var(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| format!("--sigv4 needs {name} in the environment"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    /// A one-shot server answering `answer`; the request line it got comes back on join.
    fn serve_once(answer: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut first = String::new();
            reader.read_line(&mut first).unwrap();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            reader.get_mut().write_all(answer.as_bytes()).unwrap();
            first.trim_end().to_owned()
        });
        (addr, server)
    }

    #[test]
    fn a_plain_request_gives_status_and_body() {
        let (addr, server) = serve_once("HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(
            request(&addr, "PUT", "/index", ""),
            Some((201, "ok".to_owned()))
        );
        assert_eq!(server.join().unwrap(), "PUT /index HTTP/1.1");
    }

    #[test]
    fn an_endpoint_url_with_a_path_prefixes_the_request_path() {
        let (addr, server) = serve_once("HTTP/1.1 200 OK\r\n\r\n{ \"acknowledged\": true }");
        let endpoint = Endpoint {
            url: format!("http://{addr}/base"),
            auth: Auth::None,
            insecure: false,
        };
        let request = Request {
            method: "PUT",
            path: "/_index_template/x",
            headers: &[JSON],
            body: b"{}",
        };
        let reply = endpoint.send(&request).unwrap();
        expect(reply, "PUT", "\"acknowledged\":true").unwrap();
        assert_eq!(
            server.join().unwrap(),
            "PUT /base/_index_template/x HTTP/1.1"
        );
    }

    #[test]
    fn expect_refuses_an_error_status_or_a_missing_marker() {
        assert!(expect(
            (500, "\"acknowledged\":true".into()),
            "PUT",
            "\"acknowledged\":true"
        )
        .is_err());
        assert!(expect((200, "{}".into()), "PUT", "\"acknowledged\":true").is_err());
    }
}
