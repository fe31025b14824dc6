//! `cargo xtask opensearch-templates <url>`: applies the index templates (and optionally
//! the dashboards) to an OpenSearch endpoint: plain for a local server, SigV4-signed or
//! with basic auth for an AWS domain.

use crate::http::{self, Auth, Endpoint, Request};
use crate::opensearch::{self, files_with_extension};
use crate::tools::Result;

const USAGE: &str = "\
usage: cargo xtask opensearch-templates <url> [--dashboards] [--sigv4 <region>] [--service es|aoss]
                                              [--user <name:password>]

PUTs every infra/opensearch/index-templates/<name>.json to <url>/_index_template/<name>.
With --dashboards, also imports infra/opensearch/dashboards/*.ndjson into OpenSearch
Dashboards at <url>/_dashboards (overwriting objects with the same ids).
--sigv4 signs the requests (curl --aws-sigv4) with the credentials in AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, e.g. after
  eval \"$(aws configure export-credentials --format env)\"
--user sends HTTP basic auth instead (fine-grained access control master user).
";

pub fn run(args: &[String]) -> Result {
    let mut url = None;
    let mut region = None;
    let mut service = String::from("es");
    let mut user = None;
    let mut dashboards = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--sigv4" => region = Some(it.next().ok_or(USAGE)?.clone()),
            "--service" => service = it.next().ok_or(USAGE)?.clone(),
            "--user" => user = Some(it.next().ok_or(USAGE)?.clone()),
            "--dashboards" => dashboards = true,
            "-h" | "--help" => {
                eprint!("{USAGE}");
                return Ok(());
            }
            other if url.is_none() && !other.starts_with('-') => url = Some(other.to_string()),
            other => return Err(format!("unexpected argument `{other}`\n{USAGE}")),
        }
    }
    let url = url.ok_or(USAGE)?.trim_end_matches('/').to_string();
    if service != "es" && service != "aoss" {
        return Err(format!("--service must be es or aoss, not `{service}`"));
    }
    let auth = match (region, user) {
        (Some(region), _) => Auth::SigV4 { region, service },
        (None, Some(user)) => Auth::Basic(user),
        (None, None) => Auth::None,
    };
    let endpoint = Endpoint {
        url,
        auth,
        insecure: false,
    };

    for (path, file) in opensearch::index_templates()? {
        eprintln!("PUT {}{path}", endpoint.url);
        opensearch::put_index_template(&endpoint, &path, &file)?;
    }
    if dashboards {
        import_dashboards(&endpoint)?;
    }
    eprintln!("OpenSearch set up at {}", endpoint.url);
    Ok(())
}

/// Imports each `infra/opensearch/dashboards/*.ndjson` through the saved-objects API.
fn import_dashboards(endpoint: &Endpoint) -> Result {
    let dir = opensearch::opensearch_dir().join("dashboards");
    for file in files_with_extension(&dir, "ndjson")? {
        // curl --aws-sigv4 signs a wrong payload hash for -F/--form bodies (curl
        // #13351), so the multipart body is built here and sent as plain bytes.
        let boundary = "sensor-ingest-saved-objects-8d1f4c2a";
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("bad file name {}", file.display()))?;
        let content =
            std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
             Content-Type: application/ndjson\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(&content);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

        let path = "/_dashboards/api/saved_objects/_import?overwrite=true";
        eprintln!("POST {}{path} ({name})", endpoint.url);
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let headers = [
            ("osd-xsrf", "true"),
            ("content-type", content_type.as_str()),
        ];
        let reply = endpoint.send(&Request {
            method: "POST",
            path,
            headers: &headers,
            body: &body,
        })?;
        http::expect(reply, &format!("import {name}"), "\"success\":true")?;
    }
    Ok(())
}
