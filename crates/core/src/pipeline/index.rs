//! Indexing: the request's documents as `_bulk` `create` requests of at most
//! `bulk_max_bytes` each (one request for an HTTP call's readings; a few for a stream
//! batch of thousands), retried per item through the one retry's [`Backoff`] (only the
//! items that can succeed later are sent again).

use super::check::Checked;
use crate::downstream::{self, Target};
use crate::ports::{DownstreamError, IndexOutcome, Indexer};
use crate::retry::{Backoff, RetryPolicy};
use sensor_model::document::Document;
use tokio::time::Instant;

/// The indexer of one pipeline, with its retry policy and bulk size bound.
pub(super) struct Indexing<'a, I> {
    pub indexer: &'a I,
    pub retry: RetryPolicy,
    /// Largest `_bulk` body to send, in bytes (one document is always sent, whatever its
    /// size).
    pub bulk_max_bytes: usize,
}

/// Splits `pending` (indexes into `checked`) into runs whose bulk bodies stay within
/// `max_bytes`, in order.
fn size_bounded(
    checked: &[(usize, Checked)],
    pending: &[usize],
    max_bytes: usize,
) -> Vec<Vec<usize>> {
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0usize;
    for &n in pending {
        let size = checked[n].1.document.bulk_bytes();
        if !current.is_empty() && bytes + size > max_bytes {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(n);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

impl<I: Indexer> Indexing<'_, I> {
    /// Size-bounded bulk `create`s for all documents; retries only the items that can
    /// succeed later.
    pub(super) async fn index_documents(
        &self,
        checked: &[(usize, Checked)],
        deadline: Instant,
    ) -> Vec<IndexOutcome> {
        let mut outcomes: Vec<Option<IndexOutcome>> = vec![None; checked.len()];
        if checked.is_empty() {
            return Vec::new();
        }
        let mut pending: Vec<usize> = (0..checked.len()).collect();
        let mut backoff = Backoff::new(self.retry, deadline);
        loop {
            let mut still_pending = Vec::new();
            let mut last_error = None;
            for chunk in size_bounded(checked, &pending, self.bulk_max_bytes) {
                let documents: Vec<&Document> =
                    chunk.iter().map(|&n| &checked[n].1.document).collect();
                let result = backoff
                    .attempt(
                        Target::OpenSearch,
                        "bulk request",
                        self.indexer.create_all(&documents),
                    )
                    .await;
                match result {
                    Ok(items) if items.len() == chunk.len() => {
                        for (&n, item) in chunk.iter().zip(items) {
                            match item {
                                IndexOutcome::Failed(e) if e.is_retryable() => {
                                    last_error = Some(e.clone());
                                    outcomes[n] = Some(IndexOutcome::Failed(e));
                                    still_pending.push(n);
                                }
                                IndexOutcome::Failed(e) => {
                                    tracing::error!(id = %checked[n].1.document.id.as_str(), reason = %e, "document not indexed, not retried");
                                    outcomes[n] = Some(IndexOutcome::Failed(e));
                                }
                                IndexOutcome::Rejected(reason) => {
                                    tracing::error!(id = %checked[n].1.document.id.as_str(), %reason, "document rejected for good");
                                    outcomes[n] = Some(IndexOutcome::Rejected(reason));
                                }
                                done => outcomes[n] = Some(done),
                            }
                        }
                    }
                    Ok(items) => {
                        let e = DownstreamError::Retryable(format!(
                            "bulk response has {} items for {} documents",
                            items.len(),
                            chunk.len()
                        ));
                        last_error = Some(e);
                        still_pending.extend(&chunk);
                    }
                    Err(e) if e.is_retryable() => {
                        last_error = Some(e);
                        still_pending.extend(&chunk);
                    }
                    Err(e) => {
                        tracing::error!(reason = %e, "bulk request rejected, not retried");
                        for &n in &chunk {
                            outcomes[n] = Some(IndexOutcome::Failed(e.clone()));
                        }
                    }
                }
            }
            if still_pending.is_empty() {
                break;
            }
            let error = last_error.unwrap_or_else(|| DownstreamError::Retryable("unknown".into()));
            tracing::warn!(pending = still_pending.len(), "documents not indexed yet");
            if !backoff
                .retry_after(Target::OpenSearch, "bulk request", &error)
                .await
            {
                for &n in &still_pending {
                    outcomes[n] = Some(IndexOutcome::Failed(error.clone()));
                }
                break;
            }
            pending = still_pending;
        }
        let outcomes: Vec<IndexOutcome> = outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or(IndexOutcome::Failed(DownstreamError::Retryable(
                    "not attempted".into(),
                )))
            })
            .collect();
        let failed = outcomes
            .iter()
            .filter(|o| matches!(o, IndexOutcome::Failed(_) | IndexOutcome::Rejected(_)))
            .count();
        downstream::failed(Target::OpenSearch, failed);
        outcomes
    }
}
