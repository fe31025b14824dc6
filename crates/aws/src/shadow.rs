//! Alarm state in a named shadow per group (`GetThingShadow` / `UpdateThingShadow` of
//! `aws-sdk-iotdataplane`): thing from `ALARM_THING_TEMPLATE`, shadow `ALARM_SHADOW`.
//! The state is `state.reported`; writes carry the `version` read, and IoT answers 409
//! `ConflictException` when another writer got there first.

use crate::iot::classify;
use aws_sdk_iotdataplane::error::SdkError;
use aws_sdk_iotdataplane::operation::get_thing_shadow::GetThingShadowError;
use aws_sdk_iotdataplane::operation::update_thing_shadow::UpdateThingShadowError;
use aws_sdk_iotdataplane::primitives::Blob;
use aws_sdk_iotdataplane::Client;
use sensor_core::ports::{AlarmStore, DownstreamError, StoreOutcome, Versioned};
use sensor_model::alarms::settings::ThingTemplate;
use sensor_model::alarms::state::GroupAlarms;
use sensor_model::domain::group_id::GroupId;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct ShadowAlarmStore {
    client: Client,
    thing: ThingTemplate,
    shadow: String,
}

impl ShadowAlarmStore {
    pub fn new(client: Client, thing: ThingTemplate, shadow: String) -> ShadowAlarmStore {
        ShadowAlarmStore {
            client,
            thing,
            shadow,
        }
    }
}

impl AlarmStore for ShadowAlarmStore {
    async fn load(&self, group: &GroupId) -> Result<Versioned, DownstreamError> {
        let answer = self
            .client
            .get_thing_shadow()
            .thing_name(self.thing.thing(group))
            .shadow_name(&self.shadow)
            .send()
            .await;
        match answer {
            Ok(output) => {
                let document: Value = output
                    .payload()
                    .and_then(|p| serde_json::from_slice(p.as_ref()).ok())
                    .unwrap_or(Value::Null);
                Ok(Versioned {
                    state: GroupAlarms::from_reported(&document["state"]["reported"]),
                    version: document["version"].as_u64(),
                })
            }
            // No shadow yet: the group never had state.
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), GetThingShadowError::ResourceNotFoundException(_)) =>
            {
                Ok(Versioned::default())
            }
            Err(e) => Err(classify("shadow read", e)),
        }
    }

    async fn store(
        &self,
        group: &GroupId,
        state: &GroupAlarms,
        expected: Option<u64>,
    ) -> Result<StoreOutcome, DownstreamError> {
        let thing = self.thing.thing(group);
        let version = match expected {
            Some(version) => version,
            None => {
                // No shadow yet, and an update without a version cannot be conditional.
                // So create it with a field that changes nothing if another instance
                // already wrote real state. Version 1 means this create was the first
                // write: the shadow holds exactly the empty state the caller computed
                // on, so write conditionally on it. A later version means another writer
                // was first: report a conflict, so the caller reads and recomputes.
                let touch = json!({"state": {"reported": {"schema": 1}}});
                match self.update(&thing, &touch).await? {
                    StoreOutcome::Stored(1) => 1,
                    _ => return Ok(StoreOutcome::Conflict),
                }
            }
        };
        let document = json!({"state": {"reported": state.to_reported()}, "version": version});
        self.update(&thing, &document).await
    }
}

impl ShadowAlarmStore {
    async fn update(&self, thing: &str, document: &Value) -> Result<StoreOutcome, DownstreamError> {
        let answer = self
            .client
            .update_thing_shadow()
            .thing_name(thing)
            .shadow_name(&self.shadow)
            .payload(Blob::new(serde_json::to_vec(document).unwrap_or_default()))
            .send()
            .await;
        match answer {
            Ok(output) => {
                let reply: Value = output
                    .payload()
                    .and_then(|p| serde_json::from_slice(p.as_ref()).ok())
                    .unwrap_or(Value::Null);
                match reply["version"].as_u64() {
                    Some(version) => Ok(StoreOutcome::Stored(version)),
                    // Without the new version the next write cannot be conditional:
                    // read it back instead.
                    None => Ok(StoreOutcome::Conflict),
                }
            }
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateThingShadowError::ConflictException(_)) =>
            {
                Ok(StoreOutcome::Conflict)
            }
            Err(e) => Err(classify("shadow update", e)),
        }
    }
}
