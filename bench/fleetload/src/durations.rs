//! The function's own timing: each invocation's `request done` line (`duration_ms`, and
//! the readings it stored or found stored), from the JSON log `cargo lambda watch` writes
//! for the run. A stream invocation is one with a `stream batch` line of the same
//! `requestId`. Cold starts are left out. This is what Lambda would bill (before its
//! rounding up to the next ms), against this machine's downstreams: osmem-server and the
//! local IoT endpoint on loopback, on 2 cores shared with everything else. Pure.

use serde_json::Value;
use std::collections::HashSet;

/// One warm invocation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Invocation {
    pub readings: u64,
    pub ms: f64,
    pub stream: bool,
}

/// The warm invocations in `log` (one JSON object a line; other lines are skipped).
pub fn parse(log: &str) -> Vec<Invocation> {
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line.trim()).ok())
        .collect();
    let request_id = |line: &Value| line["requestId"].as_str().map(str::to_owned);
    let message = |line: &Value| line["message"].as_str().unwrap_or("").to_owned();
    let batches: HashSet<String> = lines
        .iter()
        .filter(|line| message(line) == "stream batch")
        .filter_map(request_id)
        .collect();
    lines
        .iter()
        .filter(|line| message(line) == "request done" && line["cold_start"] != true)
        .filter_map(|line| {
            let ms = line["duration_ms"].as_f64()?;
            let readings =
                line["stored"].as_u64().unwrap_or(0) + line["duplicate"].as_u64().unwrap_or(0);
            let stream = request_id(line).is_some_and(|id| batches.contains(&id));
            Some(Invocation {
                readings,
                ms,
                stream,
            })
        })
        .collect()
}

/// The invocations of one kind, summed up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Durations {
    pub invocations: usize,
    pub p50_ms: f64,
    pub mean_ms: f64,
    pub readings_per_invocation: f64,
    /// All their milliseconds over all their readings.
    pub ms_per_reading: f64,
    /// `ms = fixed + per_reading x readings` by Theil-Sen (the median of the pairwise
    /// slopes, then the median intercept), when the sizes vary: a few batches stalled on a
    /// slow `_bulk` would tilt a least-squares line anywhere.
    pub fit: Option<(f64, f64)>,
}

/// The stream invocations' figures when `stream`, else the others'; `None` without any.
pub fn summarize(invocations: &[Invocation], stream: bool) -> Option<Durations> {
    let chosen: Vec<&Invocation> = invocations.iter().filter(|i| i.stream == stream).collect();
    if chosen.is_empty() {
        return None;
    }
    let n = chosen.len() as f64;
    let ms: Vec<f64> = chosen.iter().map(|i| i.ms).collect();
    let total_ms: f64 = ms.iter().sum();
    let total_readings: f64 = chosen.iter().map(|i| i.readings as f64).sum();
    let mean_x = total_readings / n;
    let mean_y = total_ms / n;
    let mut slopes: Vec<f64> = Vec::new();
    for (i, a) in chosen.iter().enumerate() {
        for b in &chosen[i + 1..] {
            if a.readings != b.readings {
                slopes.push((b.ms - a.ms) / (b.readings as f64 - a.readings as f64));
            }
        }
    }
    let fit = median(slopes).map(|slope| {
        let intercepts = chosen
            .iter()
            .map(|i| i.ms - slope * i.readings as f64)
            .collect();
        (median(intercepts).unwrap_or(f64::NAN), slope)
    });
    Some(Durations {
        invocations: chosen.len(),
        p50_ms: median(ms).unwrap_or(f64::NAN),
        mean_ms: mean_y,
        readings_per_invocation: mean_x,
        ms_per_reading: if total_readings > 0.0 {
            total_ms / total_readings
        } else {
            f64::NAN
        },
        fit,
    })
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_invocations_are_told_apart_and_cold_starts_left_out() {
        let log = r#"
{"message":"request done","requestId":"a","duration_ms":9.0,"stored":1,"duplicate":0,"cold_start":true}
{"message":"stream batch","requestId":"b","records":3}
{"message":"request done","requestId":"b","duration_ms":12.5,"stored":2,"duplicate":1,"cold_start":false}
not json: watch's own line
{"message":"request done","requestId":"c","duration_ms":4.0,"stored":1,"duplicate":0,"cold_start":false}
"#;
        assert_eq!(
            parse(log),
            vec![
                Invocation {
                    readings: 3,
                    ms: 12.5,
                    stream: true
                },
                Invocation {
                    readings: 1,
                    ms: 4.0,
                    stream: false
                },
            ]
        );
    }

    #[test]
    fn the_fit_recovers_a_line() {
        let batches: Vec<Invocation> = [10u64, 100, 400, 1000]
            .iter()
            .map(|&r| Invocation {
                readings: r,
                ms: 20.0 + 0.05 * r as f64,
                stream: true,
            })
            .collect();
        let d = summarize(&batches, true).unwrap();
        let (fixed, per) = d.fit.unwrap();
        assert!((fixed - 20.0).abs() < 1e-9 && (per - 0.05).abs() < 1e-12);
        // One batch stalled for 3 s does not move the line.
        let mut stalled = batches.clone();
        stalled.push(Invocation {
            readings: 300,
            ms: 3000.0,
            stream: true,
        });
        let (fixed, per) = summarize(&stalled, true).unwrap().fit.unwrap();
        assert!(
            (fixed - 20.0).abs() < 1.0 && (per - 0.05).abs() < 0.01,
            "{fixed} {per}"
        );
        assert_eq!(d.invocations, 4);
        assert!(summarize(&batches, false).is_none());
        let one_size = [Invocation {
            readings: 1,
            ms: 3.0,
            stream: false,
        }];
        let direct = summarize(&one_size, false).unwrap();
        assert_eq!(direct.fit, None);
        assert_eq!(direct.ms_per_reading, 3.0);
    }
}
