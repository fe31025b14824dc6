//! OpenSearch for the local stack: osmem-server started as a peer (or the user's own
//! `OPENSEARCH_URL`), with the index templates applied either way.

use super::peers::{log_file, Peers};
use super::HOST;
use crate::http::{Auth, Endpoint};
use crate::opensearch;
use crate::tools::Result;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the functions reach OpenSearch.
pub enum Source {
    /// `OPENSEARCH_URL` as the user set it.
    User(String),
    /// osmem-server in memory, this binary.
    Osmem(PathBuf),
}

/// Starts osmem-server on `port` (logs in `logs/osmem-server.log`) unless the user gave
/// a URL, applies the index templates and returns the URL the functions use.
pub fn start(peers: &mut Peers, source: &Source, port: u16, logs: &Path) -> Result<String> {
    let url = match source {
        Source::User(url) => url.trim_end_matches('/').to_owned(),
        Source::Osmem(binary) => {
            let addr = format!("{HOST}:{port}");
            let log = logs.join("osmem-server.log");
            let mut command = opensearch::osmem_command(binary, &addr);
            command.stdout(log_file(&log)?).stderr(log_file(&log)?);
            peers.spawn("osmem-server", &mut command)?;
            peers.wait_until("osmem-server", Duration::from_secs(30), || {
                opensearch::osmem_ready(&addr)
            })?;
            opensearch::warm_up_osmem(&addr)?;
            format!("http://{addr}")
        }
    };
    let endpoint = Endpoint {
        url,
        auth: Auth::None,
        // Local containers use a demo certificate.
        insecure: true,
    };
    match opensearch::apply_index_templates(&endpoint) {
        Ok(count) => eprintln!("applied {count} index templates to {}", endpoint.url),
        Err(e) if matches!(source, Source::Osmem(_)) => {
            return Err(format!("applying the index templates: {e}"))
        }
        Err(e) => eprintln!(
            "warning: could not apply the index templates to {}: {e}\n\
             (apply them by hand: cargo xtask opensearch-templates <url>)",
            endpoint.url
        ),
    }
    Ok(endpoint.url)
}
