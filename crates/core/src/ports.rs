//! The things the pipeline needs from the outside world: publishing, indexing, the
//! alarm state and the registry of boxes, and for the read API, searching. The IoT, OpenSearch and shadow adapters
//! implement them; tests swap in fakes ([`MemoryAlarmStore`] is also the store of
//! `ALARM_MODE=every`, which needs none).

use sensor_model::alarms::state::GroupAlarms;
use sensor_model::document::Document;
use sensor_model::domain::group_id::GroupId;
use sensor_model::domain::thing_name::ThingName;
use sensor_model::topic::Topic;
use std::future::Future;

/// One MQTT message, published with QoS 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: Topic,
    pub payload: Vec<u8>,
}

/// Why a downstream call failed; the one retry ([`crate::retry`]) branches on the kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownstreamError {
    /// Throttling, a timeout, a 5xx: the same call may succeed later.
    #[error("{0} (retryable)")]
    Retryable(String),
    /// The service refused the call itself (a 4xx): retrying cannot help.
    #[error("{0}")]
    Permanent(String),
}

impl DownstreamError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, DownstreamError::Retryable(_))
    }

    /// The reason without the "(retryable)" suffix.
    pub fn reason(&self) -> &str {
        match self {
            DownstreamError::Retryable(r) | DownstreamError::Permanent(r) => r,
        }
    }
}

/// What became of one document of a bulk `create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOutcome {
    Created,
    /// 409: a document with this id exists, so this reading is already stored.
    AlreadyStored,
    /// OpenSearch refused this document for good (a 4xx item other than 409 and 429,
    /// such as a mapping conflict): the reading can never be stored as it is, so it is
    /// answered `rejected` and the box dead-letters it instead of resending it forever.
    Rejected(String),
    /// Not stored now: retried, then answered `retry` when the retries run out.
    Failed(DownstreamError),
}

pub trait Publisher: Send + Sync {
    fn publish(
        &self,
        message: &Message,
    ) -> impl Future<Output = Result<(), DownstreamError>> + Send;
}

pub trait Indexer: Send + Sync {
    /// Creates every document (never overwrites); one outcome per document, in order.
    fn create_all(
        &self,
        documents: &[&Document],
    ) -> impl Future<Output = Result<Vec<IndexOutcome>, DownstreamError>> + Send;
}

/// The read API's one need: run a search body (built by `query::search`) over an index
/// pattern list (from the configuration, e.g. `gasdetect*,dust*`) and hand back the JSON
/// answer. A pattern matching no index is an empty answer, not an error.
pub trait Search: Send + Sync {
    fn search(
        &self,
        indices: &str,
        body: &serde_json::Value,
    ) -> impl Future<Output = Result<serde_json::Value, DownstreamError>> + Send;
}

/// A group's alarm state and the version it was read at (`None`: no state stored yet).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Versioned {
    pub state: GroupAlarms,
    pub version: Option<u64>,
}

/// What became of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Written; the new version.
    Stored(u64),
    /// The stored version is not the expected one: read again and recompute.
    Conflict,
}

/// Per-group alarm state with optimistic concurrency (a named IoT shadow on AWS).
pub trait AlarmStore: Send + Sync {
    fn load(
        &self,
        group: &GroupId,
    ) -> impl Future<Output = Result<Versioned, DownstreamError>> + Send;

    /// Writes `state` only if the stored version is still `expected`.
    fn store(
        &self,
        group: &GroupId,
        state: &GroupAlarms,
        expected: Option<u64>,
    ) -> impl Future<Output = Result<StoreOutcome, DownstreamError>> + Send;
}

/// An in-memory [`AlarmStore`] with the same version semantics as a shadow: for one
/// process (tests, `ALARM_MODE=every`), never shared between instances.
#[derive(Debug, Default, Clone)]
pub struct MemoryAlarmStore {
    groups:
        std::sync::Arc<std::sync::Mutex<std::collections::HashMap<GroupId, (GroupAlarms, u64)>>>,
}

impl MemoryAlarmStore {
    fn groups(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<GroupId, (GroupAlarms, u64)>> {
        // A panic elsewhere while holding the lock leaves plain data: keep using it.
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored state of `group` (tests).
    pub fn get(&self, group: &GroupId) -> Versioned {
        match self.groups().get(group) {
            Some((state, version)) => Versioned {
                state: state.clone(),
                version: Some(*version),
            },
            None => Versioned::default(),
        }
    }
}

impl AlarmStore for MemoryAlarmStore {
    async fn load(&self, group: &GroupId) -> Result<Versioned, DownstreamError> {
        Ok(self.get(group))
    }

    async fn store(
        &self,
        group: &GroupId,
        state: &GroupAlarms,
        expected: Option<u64>,
    ) -> Result<StoreOutcome, DownstreamError> {
        let mut groups = self.groups();
        let current = groups.get(group).map(|(_, v)| *v);
        if current != expected {
            return Ok(StoreOutcome::Conflict);
        }
        let version = current.unwrap_or(0) + 1;
        groups.insert(group.clone(), (state.clone(), version));
        Ok(StoreOutcome::Stored(version))
    }
}

/// What the IoT registry says of a box (a thing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// The thing's `groupid` attribute: the one group its readings may carry.
    Group(GroupId),
    /// No such thing: never enrolled, or deleted.
    Unknown,
    /// The thing exists but has no `groupid` attribute.
    NoGroup,
    /// The thing's `groupid` attribute is not a valid groupid (set outside `fleet`).
    BadGroup(String),
    /// `fleet revoke` retired the box (its `revoked` attribute, with when): refused even
    /// while credentials issued before the revocation are still valid.
    Revoked(String),
}

/// The registry of boxes: thing -> group (`DescribeThing` on AWS). The one source of truth
/// for which group a box may write.
pub trait Registry: Send + Sync {
    fn lookup(
        &self,
        thing: &ThingName,
    ) -> impl Future<Output = Result<Registration, DownstreamError>> + Send;
}

/// An in-memory [`Registry`] (tests, and functions that are never sent a thing).
#[derive(Debug, Default, Clone)]
pub struct MemoryRegistry {
    things: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<ThingName, Registration>>>,
}

impl MemoryRegistry {
    fn things(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<ThingName, Registration>> {
        self.things.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers (or moves) `thing` as `registration` says.
    pub fn set(&self, thing: &ThingName, registration: Registration) {
        self.things().insert(thing.clone(), registration);
    }
}

impl Registry for MemoryRegistry {
    async fn lookup(&self, thing: &ThingName) -> Result<Registration, DownstreamError> {
        Ok(self
            .things()
            .get(thing)
            .cloned()
            .unwrap_or(Registration::Unknown))
    }
}
