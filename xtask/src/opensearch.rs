//! OpenSearch for `dev`, `bench-cold` and `opensearch-templates`, done in one place: the
//! in-memory osmem-server (installed into target/venv, started, checked, warmed up) and
//! the project's index templates (infra/opensearch/index-templates) PUT to a server.

use crate::http::{self, Endpoint, Request, JSON};
use crate::tools::{self, root, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The osmem-server binary, installed into target/venv when missing. It ships a static
/// binary inside its wheel; there is no console script.
pub fn ensure_osmem_server() -> Result<PathBuf> {
    if let Some(binary) = find_osmem_server() {
        return Ok(binary);
    }
    tools::ensure_python_tools(&[("osmem-server", "osmem-server")])?;
    find_osmem_server().ok_or_else(|| {
        "osmem-server is installed but its binary (site-packages/osmem_server/bin/osmem-server) \
         is missing"
            .into()
    })
}

fn find_osmem_server() -> Option<PathBuf> {
    let script = tools::venv_bin("osmem-server");
    if script.exists() {
        return Some(script);
    }
    let lib = tools::venv_dir().join("lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| {
            e.path()
                .join("site-packages")
                .join("osmem_server")
                .join("bin")
                .join("osmem-server")
        })
        .find(|p| p.exists())
}

/// osmem-server listening on `addr` (`host:port`), not watching its stdin.
pub fn osmem_command(binary: &Path, addr: &str) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["-addr", addr, "-no-stdin-watch"])
        .stdin(Stdio::null());
    command
}

/// Whether the server on `addr` answers `GET /` with 200.
pub fn osmem_ready(addr: &str) -> bool {
    matches!(http::request(addr, "GET", "/", ""), Some((200, _)))
}

/// osmem-server spends ~0.8 s on the first index it creates (any index); pay that now
/// with a throwaway index (matched by no template, deleted at once), not in the first
/// reading after "ready".
pub fn warm_up_osmem(addr: &str) -> Result {
    const INDEX: &str = "/xtask-warm-up";
    for (method, expect) in [("PUT", 200), ("DELETE", 200)] {
        match http::request(addr, method, INDEX, "") {
            Some((status, _)) if status == expect => {}
            other => {
                return Err(format!(
                    "warming up osmem-server: {method} {INDEX} answered {other:?}"
                ))
            }
        }
    }
    Ok(())
}

/// `infra/opensearch`: the index templates and the dashboards.
pub fn opensearch_dir() -> PathBuf {
    root().join("infra").join("opensearch")
}

/// The `*.<extension>` files in `dir`, sorted; an error when there are none.
pub fn files_with_extension(dir: &Path, extension: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == extension))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no *.{extension} files in {}", dir.display()));
    }
    Ok(files)
}

/// Each `infra/opensearch/index-templates/<name>.json` as its API path
/// (`/_index_template/<name>`) and file.
pub fn index_templates() -> Result<Vec<(String, PathBuf)>> {
    files_with_extension(&opensearch_dir().join("index-templates"), "json")?
        .into_iter()
        .map(|file| {
            let name = file
                .file_stem()
                .and_then(|s| s.to_str())
                .ok_or_else(|| format!("bad file name {}", file.display()))?;
            Ok((format!("/_index_template/{name}"), file))
        })
        .collect()
}

/// PUTs one index template file to `path`; the server must acknowledge it.
pub fn put_index_template(endpoint: &Endpoint, path: &str, file: &Path) -> Result {
    let body = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let reply = endpoint.send(&Request {
        method: "PUT",
        path,
        headers: &[JSON],
        body: &body,
    })?;
    http::expect(reply, &format!("PUT {path}"), "\"acknowledged\":true")
}

/// PUTs every index template; how many there were.
pub fn apply_index_templates(endpoint: &Endpoint) -> Result<usize> {
    let templates = index_templates()?;
    for (path, file) in &templates {
        put_index_template(endpoint, path, file)?;
    }
    Ok(templates.len())
}
