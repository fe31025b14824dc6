//! When a request arrived, and how far a reading's own `createdtime` is believed.
//!
//! The box's clock orders its readings only as far as our clock can vouch for it: nothing
//! can be taken after it arrived, so a reading's *effective time* is
//! `min(createdtime, received + tolerance)`. Alarm staleness, the indexed `@timestamp` and
//! everything the read API sorts or filters by use the effective time; the `createdtime`
//! the box sent is kept as received. The tolerance (`CLOCK_AHEAD_TOLERANCE`) lets a box
//! whose clock is a little ahead of ours keep its own order between readings sent in
//! quick succession; it bounds how long a corrected clock's first live reading can be
//! judged stale (a reading that arrives more than the tolerance after a future-dated one
//! is never older than it).

use chrono::{DateTime, Duration, Utc};

/// Default `CLOCK_AHEAD_TOLERANCE`: 2 s, above any NTP-synchronised offset and well below
/// the seconds between a box's readings.
pub const DEFAULT_AHEAD_TOLERANCE_S: i64 = 2;
/// Most `CLOCK_AHEAD_TOLERANCE` accepts: a larger one lets a clock that ran ahead
/// silence that many seconds of live readings after it is corrected.
pub const MAX_AHEAD_TOLERANCE_S: i64 = 60;

/// How far ahead of our clock a reading's own time is still believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AheadTolerance(Duration);

impl Default for AheadTolerance {
    fn default() -> Self {
        AheadTolerance(Duration::seconds(DEFAULT_AHEAD_TOLERANCE_S))
    }
}

impl AheadTolerance {
    /// 0 to [`MAX_AHEAD_TOLERANCE_S`] seconds (the text is read by the configuration's
    /// one seconds parser, `alarms::settings::parse_seconds`).
    pub fn from_seconds(seconds: i64) -> Result<AheadTolerance, String> {
        if !(0..=MAX_AHEAD_TOLERANCE_S).contains(&seconds) {
            return Err(format!(
                "must be 0 to {MAX_AHEAD_TOLERANCE_S} seconds, got {seconds}"
            ));
        }
        Ok(AheadTolerance(Duration::seconds(seconds)))
    }

    pub fn seconds(&self) -> i64 {
        self.0.num_seconds()
    }
}

/// One request's arrival: our receive time and the tolerance for clocks ahead of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    received: DateTime<Utc>,
    tolerance: AheadTolerance,
}

impl Arrival {
    pub fn new(received: DateTime<Utc>, tolerance: AheadTolerance) -> Arrival {
        Arrival {
            received,
            tolerance,
        }
    }

    /// Our clock when the request arrived.
    pub fn received(&self) -> DateTime<Utc> {
        self.received
    }

    /// The latest time a reading of this request can be believed to have: arrival plus
    /// the tolerance.
    pub fn latest_believable(&self) -> DateTime<Utc> {
        self.received + self.tolerance.0
    }

    /// `created` as far as our clock vouches for it: never after [`Self::latest_believable`].
    pub fn effective(&self, created: DateTime<Utc>) -> DateTime<Utc> {
        created.min(self.latest_believable())
    }

    /// Whether `created` lies after what this arrival can vouch for.
    pub fn is_future(&self, created: DateTime<Utc>) -> bool {
        created > self.latest_believable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn received() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn effective_time_is_never_after_arrival_plus_tolerance() {
        let arrival = Arrival::new(received(), AheadTolerance::default());
        let s = Duration::seconds;
        let far = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap();
        let old = Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 0).unwrap();
        let cases = [
            (old, old, false),
            (received() - s(1), received() - s(1), false),
            (received() + s(2), received() + s(2), false),
            (received() + s(3), received() + s(2), true),
            (received() + Duration::hours(3), received() + s(2), true),
            (far, received() + s(2), true),
        ];
        for (created, effective, future) in cases {
            assert_eq!(arrival.effective(created), effective, "{created}");
            assert_eq!(arrival.is_future(created), future, "{created}");
        }
    }

    #[test]
    fn tolerance_is_within_bounds() {
        assert_eq!(AheadTolerance::from_seconds(0).map(|t| t.seconds()), Ok(0));
        assert_eq!(
            AheadTolerance::from_seconds(60).map(|t| t.seconds()),
            Ok(60)
        );
        for bad in [-1, 61, i64::MIN, i64::MAX] {
            assert!(AheadTolerance::from_seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(
            AheadTolerance::default().seconds(),
            DEFAULT_AHEAD_TOLERANCE_S
        );
    }
}
