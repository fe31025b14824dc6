//! Indexes through the `opensearch` crate: one `_bulk` request of `create` ops, checked
//! item by item. SigV4-signed for AWS OpenSearch (`es`) or Serverless (`aoss`).

use chrono::{DateTime, Utc};
use opensearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use opensearch::http::transport::{SingleNodeConnectionPool, Transport, TransportBuilder};
use opensearch::http::Method;
use sensor_core::no_data::{Activity, LastSeen};
use sensor_core::ports::{DownstreamError, IndexOutcome, Indexer, Search};
use sensor_model::document::{Document, RECEIVED_FORMAT};
use sensor_model::domain::group_id::GroupId;
use sensor_model::domain::sensor::Sensor;
use serde::Deserialize;

pub use opensearch::http::Url;

/// Where OpenSearch is and how requests are signed (`OPENSEARCH_URL`, `OPENSEARCH_AUTH`,
/// `OPENSEARCH_SERVICE`, parsed by the Lambda boundary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSearchSettings {
    pub url: Url,
    pub auth: OpenSearchAuth,
    /// SigV4 service name: `es`, or `aoss` for OpenSearch Serverless.
    pub service: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenSearchAuth {
    /// Requests are SigV4-signed with the function's credentials (AWS OpenSearch).
    SigV4,
    /// Plain HTTP(S), for local servers.
    None,
}

#[derive(Debug, Clone)]
pub struct OpenSearchIndexer {
    transport: Transport,
}

#[derive(Debug)]
pub struct OpenSearchInitError(pub String);

impl std::fmt::Display for OpenSearchInitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenSearch client: {}", self.0)
    }
}

impl std::error::Error for OpenSearchInitError {}

impl OpenSearchIndexer {
    pub fn new(
        settings: &OpenSearchSettings,
        sdk_config: &aws_config::SdkConfig,
    ) -> Result<OpenSearchIndexer, OpenSearchInitError> {
        Ok(OpenSearchIndexer {
            transport: transport(settings, sdk_config)?,
        })
    }
}

/// The transport for `settings`: SigV4-signed unless `OPENSEARCH_AUTH=none`.
fn transport(
    settings: &OpenSearchSettings,
    sdk_config: &aws_config::SdkConfig,
) -> Result<Transport, OpenSearchInitError> {
    {
        // reqwest has no crypto provider of its own (one TLS stack: see adapters::tls).
        crate::tls::install_crypto_provider();
        let pool = SingleNodeConnectionPool::new(settings.url.clone());
        let mut builder = TransportBuilder::new(pool).disable_proxy();
        if settings.auth == OpenSearchAuth::SigV4 {
            let credentials = opensearch::auth::Credentials::try_from(sdk_config)
                .map_err(|e| OpenSearchInitError(format!("SigV4 credentials: {e}")))?;
            builder = builder.auth(credentials).service_name(&settings.service);
        }
        builder
            .build()
            .map_err(|e| OpenSearchInitError(e.to_string()))
    }
}

/// The no-data check's read-only view: per sensor index pattern, the newest receive time
/// (`date`) per group, from one aggregation search each.
#[derive(Debug, Clone)]
pub struct OpenSearchActivity {
    transport: Transport,
    indices: Vec<(Sensor, String)>,
}

impl OpenSearchActivity {
    /// `indices`: the index pattern of each sensor (e.g. `gasdetect*`).
    pub fn new(
        settings: &OpenSearchSettings,
        sdk_config: &aws_config::SdkConfig,
        indices: Vec<(Sensor, String)>,
    ) -> Result<OpenSearchActivity, OpenSearchInitError> {
        Ok(OpenSearchActivity {
            transport: transport(settings, sdk_config)?,
            indices,
        })
    }
}

/// The search body: groups with a reading received since `since`, each with its newest.
pub fn last_seen_query(since: DateTime<Utc>) -> serde_json::Value {
    serde_json::json!({
        "size": 0,
        "query": {"range": {"date": {"gte": since.format(RECEIVED_FORMAT).to_string()}}},
        "aggs": {"groups": {
            "terms": {"field": "groupid", "size": MAX_GROUPS},
            "aggs": {"last": {"max": {"field": "date"}}}
        }}
    })
}

/// Groups one search reports at most (a fleet larger than this needs paging).
const MAX_GROUPS: usize = 10_000;

/// Reads the aggregation of [`last_seen_query`]; buckets that do not parse are skipped.
pub fn parse_last_seen(sensor: Sensor, body: &serde_json::Value) -> Vec<LastSeen> {
    let buckets = body["aggregations"]["groups"]["buckets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    buckets
        .iter()
        .filter_map(|b| {
            let group = match &b["key"] {
                serde_json::Value::String(s) => GroupId::parse(s).ok()?,
                other => GroupId::parse(&other.to_string()).ok()?,
            };
            let ms = b["last"]["value"].as_f64()?;
            let received = DateTime::<Utc>::from_timestamp_millis(ms as i64)?;
            Some(LastSeen {
                sensor,
                group,
                received,
            })
        })
        .collect()
}

impl Activity for OpenSearchActivity {
    async fn last_seen(&self, since: DateTime<Utc>) -> Result<Vec<LastSeen>, DownstreamError> {
        let mut all = Vec::new();
        for (sensor, pattern) in &self.indices {
            // None: no index for this sensor yet.
            if let Some(parsed) = search(&self.transport, pattern, &last_seen_query(since)).await? {
                all.extend(parse_last_seen(*sensor, &parsed));
            }
        }
        Ok(all)
    }
}

/// `POST /<indices>/_search` with `body`: the parsed answer, or `None` when no index
/// matches (servers that ignore `allow_no_indices` answer 404). 429/5xx are retryable.
async fn search(
    transport: &Transport,
    indices: &str,
    body: &serde_json::Value,
) -> Result<Option<serde_json::Value>, DownstreamError> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let response = transport
        .send(
            Method::Post,
            &format!("/{indices}/_search"),
            headers,
            Some(&[("ignore_unavailable", "true"), ("allow_no_indices", "true")]),
            Some(serde_json::to_vec(body).unwrap_or_default()),
            None,
        )
        .await
        .map_err(|e| DownstreamError::Retryable(format!("OpenSearch search: {e}")))?;
    let status = response.status_code().as_u16();
    let text = response.bytes().await.map_err(|e| {
        DownstreamError::Retryable(format!("OpenSearch search: reading response: {e}"))
    })?;
    if status == 404 {
        return Ok(None);
    }
    if status != 200 {
        return Err(http_failure(&format!("search {indices}"), status, &text));
    }
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        DownstreamError::Retryable(format!("OpenSearch search: unreadable response: {e}"))
    })
}

/// The read API's searches (`query::api`), on the same transport as the no-data check:
/// the query function's role may only `ESHttpGet`/`ESHttpPost` on `_search` paths.
#[derive(Debug, Clone)]
pub struct OpenSearchSearch {
    transport: Transport,
}

impl OpenSearchSearch {
    pub fn new(
        settings: &OpenSearchSettings,
        sdk_config: &aws_config::SdkConfig,
    ) -> Result<OpenSearchSearch, OpenSearchInitError> {
        Ok(OpenSearchSearch {
            transport: transport(settings, sdk_config)?,
        })
    }
}

impl Search for OpenSearchSearch {
    async fn search(
        &self,
        indices: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, DownstreamError> {
        // No index for this pattern yet: an empty result.
        Ok(search(&self.transport, indices, body)
            .await?
            .unwrap_or_else(|| serde_json::json!({"hits": {"hits": []}})))
    }
}

/// A non-200 answer as an error: 429/5xx retryable, other statuses final; the reason
/// carries the start of the body.
fn http_failure(what: &str, status: u16, body: &[u8]) -> DownstreamError {
    let reason = format!(
        "OpenSearch {what}: HTTP {status}: {}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    if super::is_retryable_status(status) {
        DownstreamError::Retryable(reason)
    } else {
        DownstreamError::Permanent(reason)
    }
}

/// `_bulk` body: a `create` action line and the document, per document.
pub fn bulk_body(documents: &[&Document]) -> Vec<u8> {
    let mut body = Vec::with_capacity(documents.len() * 768);
    for doc in documents {
        let action = serde_json::json!({"create": {"_index": doc.index, "_id": doc.id.as_str()}});
        // Serializing a Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut body, &action);
        body.push(b'\n');
        let _ = serde_json::to_writer(&mut body, &doc.body);
        body.push(b'\n');
    }
    body
}

#[derive(Deserialize)]
struct BulkResponse {
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// Per-item outcome: 201/200 created, 409 already stored, 429/5xx retryable, any other
/// status rejected for good (the reason names the status and the error type, never the
/// value, which OpenSearch quotes).
pub fn parse_bulk_response(body: &[u8]) -> Result<Vec<IndexOutcome>, DownstreamError> {
    let parsed: BulkResponse = serde_json::from_slice(body).map_err(|e| {
        DownstreamError::Retryable(format!("OpenSearch bulk: unreadable response: {e}"))
    })?;
    Ok(parsed
        .items
        .into_iter()
        .map(|item| match item.into_values().next() {
            None => IndexOutcome::Failed(DownstreamError::Retryable(
                "OpenSearch bulk: empty item".into(),
            )),
            Some(BulkItem {
                status: 200 | 201, ..
            }) => IndexOutcome::Created,
            Some(BulkItem { status: 409, .. }) => IndexOutcome::AlreadyStored,
            Some(BulkItem { status, error }) => {
                let kind = error
                    .as_ref()
                    .and_then(|e| e.get("type"))
                    .and_then(|t| t.as_str())
                    .unwrap_or("unknown");
                let reason = format!("OpenSearch bulk item: {status} {kind}");
                if crate::is_retryable_status(status) {
                    IndexOutcome::Failed(DownstreamError::Retryable(reason))
                } else {
                    // The item's own 4xx: this document can never be stored as it is.
                    IndexOutcome::Rejected(reason)
                }
            }
        })
        .collect())
}

impl Indexer for OpenSearchIndexer {
    async fn create_all(
        &self,
        documents: &[&Document],
    ) -> Result<Vec<IndexOutcome>, DownstreamError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        let response = self
            .transport
            .send(
                Method::Post,
                "/_bulk",
                headers,
                Option::<&()>::None,
                Some(bulk_body(documents)),
                None,
            )
            .await
            .map_err(|e| DownstreamError::Retryable(format!("OpenSearch bulk: {e}")))?;
        let status = response.status_code().as_u16();
        let body = response.bytes().await.map_err(|e| {
            DownstreamError::Retryable(format!("OpenSearch bulk: reading response: {e}"))
        })?;
        if status != 200 {
            return Err(http_failure("bulk", status, &body));
        }
        parse_bulk_response(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_items_map_to_outcomes() {
        let body = br#"{"took":1,"errors":true,"items":[
            {"create":{"_id":"a","status":201}},
            {"create":{"_id":"b","status":409,"error":{"type":"version_conflict_engine_exception"}}},
            {"create":{"_id":"c","status":429,"error":{"type":"es_rejected_execution_exception"}}},
            {"create":{"_id":"d","status":400,"error":{"type":"mapper_parsing_exception"}}},
            {"create":{"_id":"e","status":503}}]}"#;
        let outcomes = parse_bulk_response(body).unwrap();
        assert_eq!(outcomes[0], IndexOutcome::Created);
        assert_eq!(outcomes[1], IndexOutcome::AlreadyStored);
        assert!(matches!(&outcomes[2], IndexOutcome::Failed(e) if e.is_retryable()));
        assert!(
            matches!(&outcomes[3], IndexOutcome::Rejected(reason) if reason.contains("mapper_parsing"))
        );
        assert!(matches!(&outcomes[4], IndexOutcome::Failed(e) if e.is_retryable()));
    }

    #[test]
    fn unreadable_bulk_response_is_retryable() {
        assert!(parse_bulk_response(b"<html>").unwrap_err().is_retryable());
    }
}
