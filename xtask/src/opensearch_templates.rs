//! `cargo xtask opensearch-templates <url>`: applies the index templates (and optionally
//! the dashboards, the ISM policies and the rollup jobs) to an OpenSearch endpoint: plain
//! for a local server, SigV4-signed or with basic auth for an AWS domain.

use crate::http::{self, Auth, Endpoint, Reply, Request, JSON};
use crate::opensearch::{self, files_with_extension};
use crate::tools::Result;
use serde_json::{Map, Value};
use std::path::Path;

const USAGE: &str = "\
usage: cargo xtask opensearch-templates <url> [--dashboards] [--ism] [--rollups]
                                              [--large-fleet] [--shards <n>]
                                              [--warm-after <days>d] [--delete-after <days>d]
                                              [--sigv4 <region>] [--service es|aoss]
                                              [--user <name:password>]

PUTs every infra/opensearch/index-templates/<name>.json to <url>/_index_template/<name>.
--large-fleet  merges infra/opensearch/large-fleet.json (refresh_interval 30s) into every
               template first; --shards <n> sets index.number_of_shards (docs/scale.md).
--ism          also PUTs infra/opensearch/ism-policies/<name>.json to
               _plugins/_ism/policies/<name> (updating a policy that exists); dated indices
               (gasdetect-*, dust-*, temp-*) created afterwards are managed by it.
               --warm-after / --delete-after replace its ages (default 60d / 400d).
--rollups      also PUTs infra/opensearch/rollups/<name>.json to _plugins/_rollup/jobs/<name>.
--dashboards   also imports infra/opensearch/dashboards/*.ndjson into OpenSearch Dashboards
               at <url>/_dashboards (overwriting objects with the same ids).
ISM and rollups need the Index Management plugin: an OpenSearch Service domain has it; the
local osmem-server and OpenSearch Serverless (aoss) do not.
--sigv4 signs the requests (curl --aws-sigv4) with the credentials in AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, e.g. after
  eval \"$(aws configure export-credentials --format env)\"
--user sends HTTP basic auth instead (fine-grained access control master user).
";

/// What to apply besides the index templates, and how.
#[derive(Debug, Default, PartialEq)]
struct Options {
    dashboards: bool,
    ism: bool,
    rollups: bool,
    large_fleet: bool,
    shards: Option<u32>,
    warm_after: Option<u32>,
    delete_after: Option<u32>,
}

pub fn run(args: &[String]) -> Result {
    let mut url = None;
    let mut region = None;
    let mut service = String::from("es");
    let mut user = None;
    let mut options = Options::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| USAGE.to_string());
        match arg.as_str() {
            "--sigv4" => region = Some(value()?),
            "--service" => service = value()?,
            "--user" => user = Some(value()?),
            "--dashboards" => options.dashboards = true,
            "--ism" => options.ism = true,
            "--rollups" => options.rollups = true,
            "--large-fleet" => options.large_fleet = true,
            "--shards" => options.shards = Some(parse_shards(&value()?)?),
            "--warm-after" => options.warm_after = Some(parse_days("--warm-after", &value()?)?),
            "--delete-after" => {
                options.delete_after = Some(parse_days("--delete-after", &value()?)?)
            }
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
    if (options.warm_after.is_some() || options.delete_after.is_some()) && !options.ism {
        return Err("--warm-after and --delete-after change the ISM policy: add --ism".into());
    }
    if service == "aoss" && (options.ism || options.rollups) {
        return Err(
            "OpenSearch Serverless (--service aoss) has no ISM policies or index \
                    rollups; it expires data with its own data lifecycle policies. Leave out \
                    --ism and --rollups for a collection."
                .into(),
        );
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

    // Read and check every file first: nothing is sent when one of them is wrong.
    let templates = index_templates(&options)?;
    let policies = if options.ism {
        ism_policies(options.warm_after, options.delete_after)?
    } else {
        Vec::new()
    };
    let rollups = if options.rollups {
        rollup_jobs()?
    } else {
        Vec::new()
    };

    for (path, body) in &templates {
        eprintln!("PUT {}{path}", endpoint.url);
        put_acknowledged(&endpoint, path, body)?;
    }
    for (path, body) in &policies {
        eprintln!("PUT {}{path}", endpoint.url);
        put_plugin_object(&endpoint, path, body, Plugin::Ism)?;
    }
    if !policies.is_empty() {
        eprintln!(
            "The ISM policy manages dated indices created from now on. Indices that already \
             exist join it with POST _plugins/_ism/add/<index> {{\"policy_id\": \"<name>\"}}; \
             indices managed by an older version of the policy keep it until \
             POST _plugins/_ism/change_policy/<index>."
        );
    }
    for (path, body) in &rollups {
        eprintln!("PUT {}{path}", endpoint.url);
        put_plugin_object(&endpoint, path, body, Plugin::Rollup)?;
    }
    if options.dashboards {
        import_dashboards(&endpoint)?;
    }
    eprintln!("OpenSearch set up at {}", endpoint.url);
    Ok(())
}

fn parse_shards(text: &str) -> Result<u32> {
    match text.parse::<u32>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!(
            "--shards must be a whole number from 1 to 1024, not `{text}`"
        )),
    }
}

/// `<n>d`, a whole number of days (what ISM's `min_index_age` takes).
fn parse_days(flag: &str, text: &str) -> Result<u32> {
    text.strip_suffix('d')
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("{flag} takes a number of days such as 30d, not `{text}`"))
}

fn read_json(file: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not valid JSON: {e}", file.display()))
}

fn stem(file: &Path) -> Result<&str> {
    file.file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("bad file name {}", file.display()))
}

/// Each index template as its API path and the body to send: the file as it is, or with
/// the large-fleet settings and the shard count merged into `template.settings.index`.
fn index_templates(options: &Options) -> Result<Vec<(String, Vec<u8>)>> {
    let overlay = if options.large_fleet {
        let file = opensearch::opensearch_dir().join("large-fleet.json");
        let value = read_json(&file)?;
        Some(
            value
                .pointer("/settings/index")
                .and_then(Value::as_object)
                .cloned()
                .ok_or_else(|| format!("{} has no settings.index object", file.display()))?,
        )
    } else {
        None
    };
    opensearch::index_templates()?
        .into_iter()
        .map(|(path, file)| {
            if overlay.is_none() && options.shards.is_none() {
                let body = std::fs::read(&file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                return Ok((path, body));
            }
            let mut template = read_json(&file)?;
            with_index_settings(&mut template, overlay.as_ref(), options.shards)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            Ok((path, template.to_string().into_bytes()))
        })
        .collect()
}

/// Merges `overlay` (and `number_of_shards`) into the template's `template.settings.index`.
fn with_index_settings(
    template: &mut Value,
    overlay: Option<&Map<String, Value>>,
    shards: Option<u32>,
) -> Result {
    let settings = template
        .pointer_mut("/template/settings")
        .and_then(Value::as_object_mut)
        .ok_or("no template.settings object")?;
    let index = settings
        .entry("index")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or("template.settings.index is not an object")?;
    if let Some(overlay) = overlay {
        for (key, value) in overlay {
            index.insert(key.clone(), value.clone());
        }
    }
    if let Some(shards) = shards {
        index.insert("number_of_shards".into(), Value::from(shards));
    }
    Ok(())
}

/// Each ISM policy as its API path and body, its ages replaced when asked.
fn ism_policies(
    warm_after: Option<u32>,
    delete_after: Option<u32>,
) -> Result<Vec<(String, Vec<u8>)>> {
    let dir = opensearch::opensearch_dir().join("ism-policies");
    files_with_extension(&dir, "json")?
        .into_iter()
        .map(|file| {
            let mut policy = read_json(&file)?;
            with_ages(&mut policy, warm_after, delete_after)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let path = format!("/_plugins/_ism/policies/{}", stem(&file)?);
            Ok((path, policy.to_string().into_bytes()))
        })
        .collect()
}

/// The `min_index_age` of the transition into `state`, as a mutable value.
fn transition_age<'a>(policy: &'a mut Value, state: &str) -> Option<&'a mut Value> {
    policy
        .pointer_mut("/policy/states")?
        .as_array_mut()?
        .iter_mut()
        .filter_map(|s| s.get_mut("transitions")?.as_array_mut())
        .flatten()
        .find(|t| t.get("state_name").and_then(Value::as_str) == Some(state))?
        .pointer_mut("/conditions/min_index_age")
}

fn days_of(age: &Value) -> Option<u32> {
    age.as_str()?.strip_suffix('d')?.parse().ok()
}

/// Replaces the ages of the transitions into `warm` and `delete`; warm must come first.
fn with_ages(policy: &mut Value, warm_after: Option<u32>, delete_after: Option<u32>) -> Result {
    for (state, days) in [("warm", warm_after), ("delete", delete_after)] {
        let age = transition_age(policy, state)
            .ok_or_else(|| format!("no transition into `{state}` with a min_index_age"))?;
        if let Some(days) = days {
            *age = Value::from(format!("{days}d"));
        }
    }
    let warm = transition_age(policy, "warm").and_then(|a| days_of(a));
    let delete = transition_age(policy, "delete").and_then(|a| days_of(a));
    match (warm, delete) {
        (Some(w), Some(d)) if w < d => Ok(()),
        (Some(w), Some(d)) => Err(format!(
            "the warm age ({w}d) must be less than the delete age ({d}d)"
        )),
        _ => Err("min_index_age must be a number of days such as 60d".into()),
    }
}

/// Each rollup job as its API path and body.
fn rollup_jobs() -> Result<Vec<(String, Vec<u8>)>> {
    let dir = opensearch::opensearch_dir().join("rollups");
    files_with_extension(&dir, "json")?
        .into_iter()
        .map(|file| {
            let job = read_json(&file)?;
            let path = format!("/_plugins/_rollup/jobs/{}", stem(&file)?);
            Ok((path, job.to_string().into_bytes()))
        })
        .collect()
}

fn put_acknowledged(endpoint: &Endpoint, path: &str, body: &[u8]) -> Result {
    let reply = endpoint.send(&Request {
        method: "PUT",
        path,
        headers: &[JSON],
        body,
    })?;
    http::expect(reply, &format!("PUT {path}"), "\"acknowledged\":true")
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Plugin {
    Ism,
    Rollup,
}

impl Plugin {
    fn what(self) -> &'static str {
        match self {
            Plugin::Ism => "Index State Management (ISM)",
            Plugin::Rollup => "index rollup",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Plugin::Ism => "--ism",
            Plugin::Rollup => "--rollups",
        }
    }
}

/// PUTs an ISM policy or a rollup job: creates it, or, when it exists (409), reads its
/// sequence number and primary term and updates it with them.
fn put_plugin_object(endpoint: &Endpoint, path: &str, body: &[u8], plugin: Plugin) -> Result {
    let put = |path: &str| {
        endpoint.send(&Request {
            method: "PUT",
            path,
            headers: &[JSON],
            body,
        })
    };
    let (status, text) = put(path)?;
    match status {
        200..=299 => Ok(()),
        409 => {
            let current = endpoint.send(&Request {
                method: "GET",
                path,
                headers: &[JSON],
                body: b"",
            })?;
            let (seq_no, primary_term) = versions(&current).ok_or_else(|| {
                format!(
                    "{path} exists, but GET {path} answered {}: {}",
                    current.0, current.1
                )
            })?;
            let update = format!("{path}?if_seq_no={seq_no}&if_primary_term={primary_term}");
            match put(&update)? {
                (200..=299, _) => Ok(()),
                (status, text) => Err(format!(
                    "updating {path} answered {status}: {text}{}",
                    if plugin == Plugin::Rollup {
                        " (a rollup job's source and target index cannot change: delete the \
                         job, DELETE _plugins/_rollup/jobs/<name>, and apply again)"
                    } else {
                        ""
                    }
                )),
            }
        }
        _ if no_plugin(status, &text) => Err(format!(
            "{} has no {} API: PUT {path} answered {status}: {}. The local osmem-server and \
             OpenSearch Serverless have none; apply {} to an OpenSearch Service domain (or an \
             OpenSearch with the Index Management plugin), or leave it out.",
            endpoint.url,
            plugin.what(),
            text.trim(),
            plugin.flag()
        )),
        _ => Err(format!("PUT {path} answered {status}: {text}")),
    }
}

/// Whether an answer says the route does not exist on this server.
fn no_plugin(status: u16, body: &str) -> bool {
    matches!(status, 400 | 404 | 405) && body.contains("no handler found for uri")
}

/// `_seq_no` and `_primary_term` of a GET answer (the rollup API spells them `_seqNo`
/// and `_primaryTerm`).
fn versions(reply: &Reply) -> Option<(u64, u64)> {
    let (status, body) = reply;
    if !(200..300).contains(status) {
        return None;
    }
    let value: Value = serde_json::from_str(body).ok()?;
    let field = |a: &str, b: &str| value.get(a).or_else(|| value.get(b))?.as_u64();
    Some((
        field("_seq_no", "_seqNo")?,
        field("_primary_term", "_primaryTerm")?,
    ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    fn dir_json(dir: &str) -> Vec<(String, Value)> {
        let dir = opensearch::opensearch_dir().join(dir);
        files_with_extension(&dir, "json")
            .unwrap()
            .into_iter()
            .map(|f| (stem(&f).unwrap().to_string(), read_json(&f).unwrap()))
            .collect()
    }

    fn strings(value: &Value) -> Vec<String> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    /// Patterns of the form `<prefix>*`, as every pattern here is.
    fn prefix(pattern: &str) -> &str {
        let prefix = pattern.strip_suffix('*').unwrap_or_else(|| {
            panic!("pattern `{pattern}` is not of the form <prefix>*");
        });
        assert!(!prefix.contains('*'), "pattern `{pattern}`");
        prefix
    }

    fn matches(pattern: &str, index: &str) -> bool {
        index.starts_with(prefix(pattern))
    }

    fn template_patterns() -> Vec<(String, Value)> {
        dir_json("index-templates")
            .into_iter()
            .flat_map(|(_, t)| {
                let patterns = strings(&t["index_patterns"]);
                patterns.into_iter().map(move |p| (p, t.clone()))
            })
            .collect()
    }

    /// The mapping of a dotted field (`co.value`) in an index template.
    fn mapping<'a>(template: &'a Value, field: &str) -> Option<&'a Value> {
        let mut node = template.pointer("/template/mappings")?;
        for part in field.split('.') {
            node = node.get("properties")?.get(part)?;
        }
        Some(node)
    }

    #[test]
    fn every_opensearch_json_file_parses() {
        for dir in ["index-templates", "ism-policies", "rollups"] {
            assert!(!dir_json(dir).is_empty(), "{dir}");
        }
        read_json(&opensearch::opensearch_dir().join("large-fleet.json")).unwrap();
    }

    #[test]
    fn the_ism_policy_manages_dated_sensor_indices_only() {
        let templates = template_patterns();
        let policies = dir_json("ism-policies");
        assert!(!policies.is_empty());
        for (name, policy) in policies {
            let ism = &policy["policy"]["ism_template"];
            let patterns: Vec<String> = ism
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|t| strings(&t["index_patterns"]))
                .collect();
            assert!(!patterns.is_empty(), "{name}");
            for pattern in &patterns {
                // Every index the policy takes gets one of our index templates.
                assert!(
                    templates
                        .iter()
                        .any(|(t, _)| prefix(pattern).starts_with(prefix(t))),
                    "{name}: `{pattern}` is covered by no index template"
                );
                // Never the undated index (the stacks' default, IndexSuffix empty): ISM
                // would delete it whole. A dated name is.
                for plain in ["gasdetect", "dust", "temp"] {
                    assert!(
                        !matches(pattern, plain),
                        "{name}: `{pattern}` takes `{plain}`"
                    );
                }
            }
            for dated in ["gasdetect-2026.12", "dust-2026.12.01", "temp-2026.12.31"] {
                assert!(
                    patterns.iter().any(|p| matches(p, dated)),
                    "{name}: `{dated}` is managed by no pattern"
                );
            }
            // Read-only only after the box's backlog could still arrive, and before delete.
            let mut policy = policy.clone();
            with_ages(&mut policy, None, None).unwrap();
        }
    }

    #[test]
    fn rollups_read_the_sensor_indices_and_write_where_nothing_else_looks() {
        let templates = template_patterns();
        let policies = dir_json("ism-policies");
        let ism_patterns: Vec<String> = policies
            .iter()
            .flat_map(|(_, p)| p["policy"]["ism_template"].as_array().unwrap().clone())
            .flat_map(|t| strings(&t["index_patterns"]))
            .collect();
        // The read API and the no-data check search these (crates/core/src/query/api.rs).
        let searched = ["gasdetect*", "dust*", "temp*"];
        let jobs = dir_json("rollups");
        assert_eq!(jobs.len(), 3, "one job per sensor");
        for (name, job) in jobs {
            let job = &job["rollup"];
            let source = job["source_index"].as_str().unwrap();
            let target = job["target_index"].as_str().unwrap();
            let (_, template) = templates
                .iter()
                .find(|(t, _)| t == source)
                .unwrap_or_else(|| panic!("{name}: no index template has the pattern {source}"));
            for pattern in templates.iter().map(|(t, _)| t.as_str()).chain(searched) {
                assert!(
                    !matches(pattern, target),
                    "{name}: {target} matches {pattern}"
                );
            }
            for pattern in &ism_patterns {
                assert!(
                    !matches(pattern, target),
                    "{name}: ISM would manage {target}"
                );
            }
            assert_eq!(job["continuous"], true, "{name}");
            for dimension in job["dimensions"].as_array().unwrap() {
                let (kind, spec) = dimension.as_object().unwrap().iter().next().unwrap();
                let field = spec["source_field"].as_str().unwrap();
                let wanted = if kind == "date_histogram" {
                    "date"
                } else {
                    "keyword"
                };
                assert_eq!(
                    mapping(template, field).map(|m| &m["type"]),
                    Some(&Value::from(wanted)),
                    "{name}: dimension {field}"
                );
            }
            let metrics = job["metrics"].as_array().unwrap();
            let measures = template["template"]["mappings"]["properties"]
                .as_object()
                .unwrap()
                .values()
                .filter(|v| v.pointer("/properties/value/type") == Some(&Value::from("float")))
                .count();
            assert_eq!(metrics.len(), measures, "{name}: one metric per measure");
            for metric in metrics {
                let field = metric["source_field"].as_str().unwrap();
                assert_eq!(
                    mapping(template, field).map(|m| &m["type"]),
                    Some(&Value::from("float")),
                    "{name}: metric {field}"
                );
            }
        }
    }

    #[test]
    fn large_fleet_settings_are_merged_into_every_template() {
        let options = Options {
            large_fleet: true,
            shards: Some(5),
            ..Options::default()
        };
        let templates = index_templates(&options).unwrap();
        assert_eq!(templates.len(), 3);
        for (path, body) in templates {
            let template: Value = serde_json::from_slice(&body).unwrap();
            let index = &template["template"]["settings"]["index"];
            assert_eq!(index["refresh_interval"], "30s", "{path}");
            assert_eq!(index["number_of_shards"], 5, "{path}");
            assert_eq!(index["auto_expand_replicas"], "0-1", "{path}: kept");
            assert!(template["template"]["mappings"]["properties"]["groupid"].is_object());
        }
        // Without the flags the files go out byte for byte.
        for (path, body) in index_templates(&Options::default()).unwrap() {
            let name = path.rsplit('/').next().unwrap();
            let file = opensearch::opensearch_dir()
                .join("index-templates")
                .join(format!("{name}.json"));
            assert_eq!(body, std::fs::read(file).unwrap());
        }
    }

    #[test]
    fn the_shipped_templates_keep_the_default_refresh_interval() {
        // The local stack and the tests read readings back within a second or two.
        for (name, template) in dir_json("index-templates") {
            assert!(
                template
                    .pointer("/template/settings/index/refresh_interval")
                    .is_none(),
                "{name}: set refresh_interval with --large-fleet, not in the file"
            );
        }
    }

    #[test]
    fn ages_are_replaced_and_checked() {
        let (_, policy) = dir_json("ism-policies").remove(0);
        let mut p = policy.clone();
        with_ages(&mut p, Some(14), Some(30)).unwrap();
        assert_eq!(transition_age(&mut p, "warm").unwrap(), "14d");
        assert_eq!(transition_age(&mut p, "delete").unwrap(), "30d");
        let mut p = policy.clone();
        assert!(with_ages(&mut p, Some(30), Some(30))
            .unwrap_err()
            .contains("less than"));
        let mut p = policy.clone();
        assert!(
            with_ages(&mut p, Some(500), None).is_err(),
            "past the default 400d"
        );
        assert_eq!(parse_days("--x", "30d").unwrap(), 30);
        for bad in ["30", "d", "0d", "-3d", "1.5d", "30h"] {
            assert!(parse_days("--x", bad).is_err(), "{bad}");
        }
        assert_eq!(parse_shards("6").unwrap(), 6);
        for bad in ["0", "-1", "x", "5000"] {
            assert!(parse_shards(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ism_and_rollups_are_refused_for_serverless_and_ages_need_ism() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let err = run(&args(&["http://127.0.0.1:9", "--service", "aoss", "--ism"])).unwrap_err();
        assert!(err.contains("Serverless"), "{err}");
        let err = run(&args(&["http://127.0.0.1:9", "--warm-after", "7d"])).unwrap_err();
        assert!(err.contains("--ism"), "{err}");
    }

    /// A server answering `answers` in turn, one connection each; the request lines it
    /// got come back on join.
    fn serve(answers: Vec<&'static str>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut first = String::new();
                reader.read_line(&mut first).unwrap();
                let mut length = 0;
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 2 {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    line.clear();
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                reader.get_mut().write_all(answer.as_bytes()).unwrap();
                seen.push(first.trim_end().to_owned());
            }
            seen
        });
        (addr, server)
    }

    fn endpoint(addr: &str) -> Endpoint {
        Endpoint {
            url: format!("http://{addr}"),
            auth: Auth::None,
            insecure: false,
        }
    }

    #[test]
    fn an_existing_policy_is_updated_with_its_sequence_number() {
        let (addr, server) = serve(vec![
            "HTTP/1.1 409 Conflict\r\n\r\n{\"error\":{\"type\":\"version_conflict_engine_exception\"},\"status\":409}",
            "HTTP/1.1 200 OK\r\n\r\n{\"_id\":\"p\",\"_version\":2,\"_seq_no\":7,\"_primary_term\":3,\"policy\":{}}",
            "HTTP/1.1 200 OK\r\n\r\n{\"_id\":\"p\",\"_version\":3}",
        ]);
        let path = "/_plugins/_ism/policies/p";
        put_plugin_object(&endpoint(&addr), path, b"{}", Plugin::Ism).unwrap();
        assert_eq!(
            server.join().unwrap(),
            [
                "PUT /_plugins/_ism/policies/p HTTP/1.1",
                "GET /_plugins/_ism/policies/p HTTP/1.1",
                "PUT /_plugins/_ism/policies/p?if_seq_no=7&if_primary_term=3 HTTP/1.1",
            ]
        );
    }

    #[test]
    fn a_rollup_job_version_is_read_in_the_rollup_apis_spelling() {
        let reply = (
            200,
            r#"{"_id":"j","_seqNo":4,"_primaryTerm":1,"rollup":{}}"#.into(),
        );
        assert_eq!(versions(&reply), Some((4, 1)));
        assert_eq!(versions(&(404, "{}".into())), None);
    }

    #[test]
    fn a_server_without_the_plugin_gets_a_clear_error() {
        // What osmem-server (and OpenSearch without the plugin) answers.
        let (addr, server) = serve(vec![
            "HTTP/1.1 400 Bad Request\r\n\r\n{\"error\":\"no handler found for uri [/_plugins/_rollup/jobs/j] and method [PUT]\"}",
        ]);
        let err = put_plugin_object(
            &endpoint(&addr),
            "/_plugins/_rollup/jobs/j",
            b"{}",
            Plugin::Rollup,
        )
        .unwrap_err();
        server.join().unwrap();
        assert!(err.contains("has no index rollup API"), "{err}");
        assert!(err.contains("--rollups"), "{err}");
        assert!(err.contains("osmem-server"), "{err}");
    }
}
