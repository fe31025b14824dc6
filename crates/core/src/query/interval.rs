//! The bucket width of `/api/readings`: given (`interval=30s`, `5m`, `1h`, `1d`) or chosen
//! so the range fits in at most [`MAX_BUCKETS`] buckets. The bound protects OpenSearch
//! (a month at 1 s would be 2.6 million buckets, over its `search.max_buckets`) and the
//! page (a chart cannot show more points than it has pixels).

use crate::query::params::ParamError;
use chrono::Duration;

pub const MAX_BUCKETS: i64 = 2_000;

/// A whole number of seconds, at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    seconds: i64,
}

/// The widths the automatic choice picks from: round numbers a reader recognises on an
/// axis, from the boxes' fastest cadence up to a week.
const LADDER: [i64; 19] = [
    1,
    5,
    10,
    30,
    60,
    2 * 60,
    5 * 60,
    10 * 60,
    15 * 60,
    30 * 60,
    3600,
    2 * 3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86_400,
    2 * 86_400,
    3 * 86_400,
    7 * 86_400,
];

/// Widest interval accepted: a year (one bucket for a year's range).
const MAX_SECONDS: i64 = 366 * 86_400;

impl Interval {
    /// `<n><unit>` with unit `s`, `m`, `h` or `d`; checked against `span` so the result
    /// has at most [`MAX_BUCKETS`] buckets.
    pub fn parse(text: &str, span: Duration) -> Result<Interval, ParamError> {
        let bad = |message: String| ParamError::new("interval", message);
        let split = text.len().saturating_sub(1);
        let (number, unit) = (text.get(..split), text.get(split..));
        let unit_seconds = match unit {
            Some("s") => 1,
            Some("m") => 60,
            Some("h") => 3600,
            Some("d") => 86_400,
            _ => {
                return Err(bad(
                    "must be a whole number and a unit s, m, h or d, e.g. 30s, 5m, 1h".into(),
                ))
            }
        };
        let n: i64 = number
            .filter(|n| !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                bad("must be a whole number and a unit s, m, h or d, e.g. 30s, 5m, 1h".into())
            })?;
        let seconds = n.saturating_mul(unit_seconds);
        if !(1..=MAX_SECONDS).contains(&seconds) {
            return Err(bad("must be from 1s to 366d".into()));
        }
        let interval = Interval { seconds };
        let buckets = interval.buckets(span);
        if buckets > MAX_BUCKETS {
            return Err(bad(format!(
                "{text} over this range makes {buckets} buckets, at most {MAX_BUCKETS}; \
                 use a wider interval or leave it out"
            )));
        }
        Ok(interval)
    }

    /// The narrowest width of the ladder that keeps `span` within [`MAX_BUCKETS`].
    pub fn auto(span: Duration) -> Interval {
        LADDER
            .iter()
            .map(|&seconds| Interval { seconds })
            .find(|i| i.buckets(span) <= MAX_BUCKETS)
            .unwrap_or(Interval {
                seconds: MAX_SECONDS,
            })
    }

    /// The most buckets a range of `span` can touch at this width, wherever it starts:
    /// bucket edges are aligned to the epoch, not to `from`, so a range that starts
    /// mid-bucket touches one more than span / width.
    pub fn buckets(self, span: Duration) -> i64 {
        let last = span.num_seconds() - 1; // the range is [from, to)
        if last < 0 {
            return 1;
        }
        last / self.seconds + 1 + i64::from(last % self.seconds != 0)
    }

    pub fn seconds(self) -> i64 {
        self.seconds
    }

    /// OpenSearch's `fixed_interval` spelling.
    pub fn fixed_interval(self) -> String {
        format!("{}s", self.seconds)
    }

    /// The shortest spelling in the API's own units (`30s`, `5m`, `1h`, `1d`).
    pub fn label(self) -> String {
        let s = self.seconds;
        if s % 86_400 == 0 {
            format!("{}d", s / 86_400)
        } else if s % 3600 == 0 {
            format!("{}h", s / 3600)
        } else if s % 60 == 0 {
            format!("{}m", s / 60)
        } else {
            format!("{s}s")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_the_narrowest_ladder_step_within_the_bound() {
        let cases = [
            (Duration::minutes(10), "1s"),
            (Duration::hours(1), "5s"),
            (Duration::hours(24), "1m"),
            (Duration::days(7), "10m"),
            (Duration::days(31), "30m"),
            (Duration::days(366), "6h"),
        ];
        for (span, want) in cases {
            let i = Interval::auto(span);
            assert_eq!(i.label(), want, "{span:?}");
            assert!(i.buckets(span) <= MAX_BUCKETS, "{span:?}");
        }
    }

    #[test]
    fn auto_never_exceeds_the_bound() {
        for days in [1, 2, 3, 10, 30, 100, 200, 365, 400] {
            for extra_s in [0, 1, 59, 3599] {
                let span = Duration::days(days) + Duration::seconds(extra_s);
                assert!(Interval::auto(span).buckets(span) <= MAX_BUCKETS);
            }
        }
    }

    #[test]
    fn parse_units_and_bounds() {
        let day = Duration::hours(12);
        assert_eq!(Interval::parse("30s", day).unwrap().seconds(), 30);
        assert_eq!(Interval::parse("5m", day).unwrap().seconds(), 300);
        assert_eq!(Interval::parse("1h", day).unwrap().seconds(), 3600);
        assert_eq!(
            Interval::parse("1d", day).unwrap().fixed_interval(),
            "86400s"
        );
        for bad in [
            "",
            "s",
            "0s",
            "30",
            "30x",
            "-5m",
            "1.5h",
            "367d",
            "9999999999d",
            "五m",
            "+1h",
        ] {
            let e = Interval::parse(bad, day).unwrap_err();
            assert_eq!(e.parameter, "interval", "{bad}");
        }
    }

    #[test]
    fn too_many_buckets_names_interval() {
        let e = Interval::parse("1s", Duration::days(1)).unwrap_err();
        assert_eq!(e.parameter, "interval");
        assert!(e.message.contains("2000"), "{e}");
        assert!(Interval::parse("1m", Duration::days(1)).is_ok());
    }

    #[test]
    fn buckets_count_partial_edges() {
        let i = Interval { seconds: 60 };
        // [00:30, 01:30) touches two minute buckets; [00:00, 01:01) two as well.
        assert_eq!(i.buckets(Duration::seconds(60)), 2);
        assert_eq!(i.buckets(Duration::seconds(61)), 2);
        assert_eq!(i.buckets(Duration::seconds(1)), 1);
        assert_eq!(i.buckets(Duration::seconds(0)), 1);
        assert_eq!(
            Interval { seconds: 1 }.buckets(Duration::seconds(2000)),
            2000
        );
    }
}
