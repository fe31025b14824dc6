//! Which group a box may write. The IoT registry binds each box (thing) to one group
//! through its `groupid` attribute; a reading that names another group is refused
//! (403 `forbidden`, field `groupid`) before anything is stored, published or applied to
//! alarm state. The thing comes from where AWS vouched for it: the MQTT topic the IoT
//! policy pins to the connected thing, or the IAM-checked path `/things/{thing}/...`.
//!
//! Lookups are cached per warm instance for `ttl` (default one minute), so a `fleet move`
//! takes effect within about a minute and a warm instance asks the registry about once a
//! minute per box. Only answers that bind a group are cached: an unknown thing or one
//! without a group is asked again next time, so a box enrolled a moment ago is not
//! refused for a minute.

use crate::downstream::Target;
use crate::ports::{DownstreamError, Registration, Registry};
use crate::retry::{self, RetryPolicy};
use sensor_model::domain::error::ValidationError;
use sensor_model::domain::group_id::GroupId;
use sensor_model::domain::thing_name::ThingName;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long a warm instance trusts a registry answer.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Entries a warm instance keeps; past this the expired ones are dropped, then all.
const MAX_ENTRIES: usize = 10_000;

/// Why a box's readings cannot be bound to a group.
#[derive(Debug, Clone, PartialEq)]
pub enum BindingError {
    /// The registry does not bind this thing to a group: final (403), the message says
    /// what the operator must fix.
    Refused(ValidationError),
    /// The registry could not be asked (after the retries): resend later (503).
    Unavailable(DownstreamError),
}

/// The registry behind a per-instance cache.
pub struct Binding<R> {
    registry: R,
    ttl: Duration,
    retry: RetryPolicy,
    cache: Mutex<HashMap<ThingName, (GroupId, Instant)>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Cache hits and misses since the instance started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheCounts {
    pub hits: u64,
    pub misses: u64,
}

impl<R: Registry> Binding<R> {
    pub fn new(registry: R, ttl: Duration) -> Binding<R> {
        Binding {
            registry,
            ttl,
            retry: RetryPolicy::default(),
            cache: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The same TTL and retry policy over another registry, with an empty cache.
    pub fn with_registry<S: Registry>(self, registry: S) -> Binding<S> {
        Binding::new(registry, self.ttl).with_retry_policy(self.retry)
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How long an answer is trusted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn registry(&self) -> &R {
        &self.registry
    }

    pub fn cache_counts(&self) -> CacheCounts {
        CacheCounts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// The group `thing` may write, from the cache or the registry.
    pub async fn group_of(
        &self,
        thing: &ThingName,
        deadline: Instant,
    ) -> Result<GroupId, BindingError> {
        if let Some(group) = self.cached(thing) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(group);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let registration = retry::call(
            self.retry,
            deadline,
            Target::Registry,
            "registry lookup",
            || self.registry.lookup(thing),
        )
        .await
        .map_err(BindingError::Unavailable)?;
        let group = bound_group(thing, registration).map_err(BindingError::Refused)?;
        self.remember(thing, &group);
        Ok(group)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<ThingName, (GroupId, Instant)>> {
        // A panic elsewhere while holding the lock leaves plain data: keep using it.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self, thing: &ThingName) -> Option<GroupId> {
        let cache = self.cache();
        let (group, at) = cache.get(thing)?;
        (at.elapsed() < self.ttl).then(|| group.clone())
    }

    fn remember(&self, thing: &ThingName, group: &GroupId) {
        let mut cache = self.cache();
        if cache.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            cache.retain(|_, (_, at)| at.elapsed() < ttl);
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(thing.clone(), (group.clone(), Instant::now()));
    }
}

/// The group a registration binds, or the refusal naming what to fix.
fn bound_group(thing: &ThingName, registration: Registration) -> Result<GroupId, ValidationError> {
    let refused = |message: String| ValidationError::new("thing", message);
    match registration {
        Registration::Group(group) => Ok(group),
        Registration::Unknown => Err(refused(format!(
            "box \"{thing}\" is not in the IoT registry; enrol it with `fleet enroll`"
        ))),
        Registration::NoGroup => Err(refused(format!(
            "box \"{thing}\" has no groupid attribute in the IoT registry; set it with `fleet move {thing} <groupid>`"
        ))),
        Registration::BadGroup(value) => Err(refused(format!(
            "box \"{thing}\" has groupid attribute {value:?} in the IoT registry, which is not a valid groupid; set it with `fleet move {thing} <groupid>`"
        ))),
        Registration::Revoked(when) => Err(refused(format!(
            "box \"{thing}\" was revoked ({when}); a revoked box is refused until it is enrolled again"
        ))),
    }
}

/// The refusal of a reading that names another group than its box's.
pub fn other_group(thing: &ThingName, bound: &GroupId, claimed: &GroupId) -> ValidationError {
    ValidationError::new(
        "groupid",
        format!(
            "is \"{claimed}\", but box \"{thing}\" belongs to group \"{bound}\" in the IoT registry; a box may send only its own group's readings"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::MemoryRegistry;

    fn thing(name: &str) -> ThingName {
        ThingName::parse(name).expect("thing name")
    }

    fn group(name: &str) -> GroupId {
        GroupId::parse(name).expect("groupid")
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test(start_paused = true)]
    async fn a_bound_group_is_cached_for_the_ttl_then_asked_again() {
        let registry = MemoryRegistry::default();
        registry.set(&thing("pi-1"), Registration::Group(group("A")));
        let binding = Binding::new(registry.clone(), Duration::from_secs(60));
        assert_eq!(
            binding.group_of(&thing("pi-1"), soon()).await,
            Ok(group("A"))
        );
        // Moved: the instance keeps the old answer until the TTL runs out.
        registry.set(&thing("pi-1"), Registration::Group(group("B")));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(
            binding.group_of(&thing("pi-1"), soon()).await,
            Ok(group("A"))
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            binding.group_of(&thing("pi-1"), soon()).await,
            Ok(group("B"))
        );
        assert_eq!(binding.cache_counts(), CacheCounts { hits: 1, misses: 2 });
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_name_the_thing_and_are_not_cached() {
        let registry = MemoryRegistry::default();
        let binding = Binding::new(registry.clone(), DEFAULT_TTL);
        let refused = |r: Result<GroupId, BindingError>| match r {
            Err(BindingError::Refused(e)) => (e.field().to_string(), e.message().to_string()),
            other => panic!("expected a refusal, got {other:?}"),
        };
        let (field, message) = refused(binding.group_of(&thing("ghost"), soon()).await);
        assert_eq!(field, "thing");
        assert!(
            message.contains("\"ghost\"") && message.contains("fleet enroll"),
            "{message}"
        );

        registry.set(&thing("ghost"), Registration::NoGroup);
        let (_, message) = refused(binding.group_of(&thing("ghost"), soon()).await);
        assert!(message.contains("no groupid"), "{message}");

        registry.set(&thing("ghost"), Registration::BadGroup("a/b".into()));
        let (_, message) = refused(binding.group_of(&thing("ghost"), soon()).await);
        assert!(message.contains("\"a/b\""), "{message}");

        registry.set(
            &thing("ghost"),
            Registration::Revoked("2026-12-04T16:00:00Z".into()),
        );
        let (_, message) = refused(binding.group_of(&thing("ghost"), soon()).await);
        assert!(
            message.contains("revoked (2026-12-04T16:00:00Z)"),
            "{message}"
        );

        // Enrolled a moment later: taken at once, not a minute later.
        registry.set(&thing("ghost"), Registration::Group(group("A")));
        assert_eq!(
            binding.group_of(&thing("ghost"), soon()).await,
            Ok(group("A"))
        );
    }

    struct Down;

    impl Registry for Down {
        async fn lookup(&self, _: &ThingName) -> Result<Registration, DownstreamError> {
            Err(DownstreamError::Retryable("HTTP 503".into()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_registry_is_unavailable_not_a_refusal() {
        let binding = Binding::new(Down, DEFAULT_TTL);
        assert!(matches!(
            binding.group_of(&thing("pi-1"), soon()).await,
            Err(BindingError::Unavailable(e)) if e.is_retryable()
        ));
    }

    #[test]
    fn the_refusal_of_another_group_says_both_groups() {
        let e = other_group(&thing("pi-1"), &group("A"), &group("B"));
        assert_eq!(e.field(), "groupid");
        assert_eq!(
            e.message(),
            "is \"B\", but box \"pi-1\" belongs to group \"A\" in the IoT registry; a box may send only its own group's readings"
        );
    }
}
