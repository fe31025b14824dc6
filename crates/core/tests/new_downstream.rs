//! CONTRIBUTING.md, "A new downstream": one adapter of a port, nothing else. This test adds
//! one (an archive that keeps every document, standing in for, say, S3) and runs the
//! unchanged pipeline over it, retries and all. If adding a downstream ever needs a change
//! in the pipeline, this file stops compiling or passing.

use sensor_core::pipeline::{Outcome, Pipeline, PipelineSettings};
use sensor_core::ports::{DownstreamError, IndexOutcome, Indexer, Message, Publisher};
use sensor_model::document::Document;
use sensor_model::Sensor;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The new downstream: keeps documents in memory; its first call is throttled.
#[derive(Clone, Default)]
struct Archive {
    kept: Arc<Mutex<Vec<String>>>,
    calls: Arc<Mutex<u32>>,
}

impl Indexer for Archive {
    async fn create_all(
        &self,
        documents: &[&Document],
    ) -> Result<Vec<IndexOutcome>, DownstreamError> {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        *calls += 1;
        if *calls == 1 {
            return Err(DownstreamError::Retryable("429 slow down".into()));
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.extend(documents.iter().map(|d| d.id.as_str().to_string()));
        Ok(documents.iter().map(|_| IndexOutcome::Created).collect())
    }
}

/// Publishes nowhere (the new downstream here is the indexer).
struct Nowhere;

impl Publisher for Nowhere {
    async fn publish(&self, _message: &Message) -> Result<(), DownstreamError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_new_downstream_is_one_adapter_of_a_port() {
    let archive = Archive::default();
    let pipeline = Pipeline::new(
        &PipelineSettings::new(Sensor::Temp),
        Nowhere,
        archive.clone(),
    );
    let reading = json!({"groupid": "7", "temperature": {"sensorid": "1", "sensortype": "1",
        "value": "21.5", "createdtime": "2021-09-03 18:14:49"}});
    let outcomes = pipeline
        .ingest(
            vec![pipeline.validate(reading)],
            Instant::now() + Duration::from_secs(10),
        )
        .await;
    let [Outcome::Stored { id, .. }] = outcomes.as_slice() else {
        panic!("stored after one retry: {outcomes:?}");
    };
    assert_eq!(*archive.kept.lock().unwrap(), std::slice::from_ref(id));
    assert_eq!(
        *archive.calls.lock().unwrap(),
        2,
        "the one retry tried again"
    );
}
