//! Is the system clock right? A Raspberry Pi has no real-time clock: after boot the time
//! is whatever the last shutdown left (or 1970) until NTP syncs, and a reading stamped
//! then would be filed hours or decades away from where it belongs.

use crate::config::ClockPolicy;
use chrono::{DateTime, TimeZone, Utc};

/// No reading of this agent can be older than its build; a time before this is wrong.
pub fn floor() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockState {
    Synced,
    /// The kernel reports the clock unsynchronised (adjtimex `TIME_ERROR`).
    Unsynced,
    /// The time is before [`floor`]: certainly wrong, whatever the kernel says.
    BeforeFloor,
}

pub fn state(policy: ClockPolicy, now: DateTime<Utc>) -> ClockState {
    if now < floor() {
        return ClockState::BeforeFloor;
    }
    match policy {
        ClockPolicy::System => ClockState::Synced,
        ClockPolicy::Ntp if kernel_synced() => ClockState::Synced,
        ClockPolicy::Ntp => ClockState::Unsynced,
    }
}

/// `adjtimex(2)` with no modes only reads the kernel's clock state; `TIME_ERROR` means
/// "not synchronised" (STA_UNSYNC set, as systemd-timesyncd and chrony clear it once
/// they have disciplined the clock).
fn kernel_synced() -> bool {
    // SAFETY: a zeroed timex with modes = 0 is a valid read-only query; the kernel writes
    // only into the struct we own.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    state >= 0 && state != libc::TIME_ERROR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_the_floor_are_never_trusted() {
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(state(ClockPolicy::System, epoch), ClockState::BeforeFloor);
        assert_eq!(state(ClockPolicy::Ntp, epoch), ClockState::BeforeFloor);
        assert_eq!(
            state(ClockPolicy::System, floor() + chrono::Duration::days(1)),
            ClockState::Synced
        );
    }
}
