//! Indexing: one bulk `create` for the request's documents, retried per item through the
//! one retry's [`Backoff`] (only the items that can succeed later are sent again).

use super::check::Checked;
use crate::downstream::{self, Target};
use crate::ports::{DownstreamError, IndexOutcome, Indexer};
use crate::retry::{Backoff, RetryPolicy};
use sensor_model::document::Document;
use tokio::time::Instant;

/// The indexer of one pipeline, with its retry policy.
pub(super) struct Indexing<'a, I> {
    pub indexer: &'a I,
    pub retry: RetryPolicy,
}

impl<I: Indexer> Indexing<'_, I> {
    /// One bulk `create` for all documents; retries only the items that can succeed later.
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
            let documents: Vec<&Document> =
                pending.iter().map(|&n| &checked[n].1.document).collect();
            let result = backoff
                .attempt(
                    Target::OpenSearch,
                    "bulk request",
                    self.indexer.create_all(&documents),
                )
                .await;
            let mut still_pending = Vec::new();
            let mut last_error = None;
            match result {
                Ok(items) if items.len() == pending.len() => {
                    for (&n, item) in pending.iter().zip(items) {
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
                        pending.len()
                    ));
                    last_error = Some(e);
                    still_pending = pending.clone();
                }
                Err(e) if e.is_retryable() => {
                    last_error = Some(e);
                    still_pending = pending.clone();
                }
                Err(e) => {
                    tracing::error!(reason = %e, "bulk request rejected, not retried");
                    for &n in &pending {
                        outcomes[n] = Some(IndexOutcome::Failed(e.clone()));
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
