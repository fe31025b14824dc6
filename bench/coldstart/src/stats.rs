//! Medians and percentiles of the timings.

use crate::cold::Sample;
use std::time::Duration;

/// One timing of every sample, in ascending order (what [`median`] and [`percentile`] take).
pub fn sorted<'a>(
    samples: impl IntoIterator<Item = &'a Sample>,
    timing: fn(&Sample) -> Duration,
) -> Vec<Duration> {
    let mut v: Vec<Duration> = samples.into_iter().map(timing).collect();
    v.sort();
    v
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
