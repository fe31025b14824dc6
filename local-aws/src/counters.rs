//! Counters a running piece publishes (a `watch` channel) and tests wait on: the stream
//! rule's and the event source mappings'.

use std::time::Duration;
use tokio::sync::watch;

/// Waits until the counts in `counts` satisfy `done`; `None` after `wait`.
pub async fn wait_until<T: Copy>(
    counts: &watch::Sender<T>,
    done: impl Fn(&T) -> bool,
    wait: Duration,
) -> Option<T> {
    let mut seen = counts.subscribe();
    let counts = tokio::time::timeout(wait, seen.wait_for(|c| done(c)))
        .await
        .ok()?
        .ok()?;
    Some(*counts)
}
