//! Where readings come from, behind one small trait: each source yields lines of the
//! line protocol (see `reading.rs`). A source that ends or fails is reopened by the agent
//! after a pause, so an unplugged serial cable or a crashing script never stops the box.

use crate::config::SourceSpec;
use sensor_model::rules::Rules;
use sensor_model::Sensor;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// A stream of lines; `Ok(None)` when it ended (the agent reopens it).
pub trait Source: Send {
    fn next_line(&mut self) -> impl Future<Output = std::io::Result<Option<String>>> + Send;
}

pub enum AnySource {
    Command(CommandSource),
    Serial(Lines<BufReader<tokio::fs::File>>),
    Simulate(Simulated),
    Stdin(Lines<BufReader<tokio::io::Stdin>>),
}

impl AnySource {
    pub async fn open(
        spec: &SourceSpec,
        route: Sensor,
        interval: Duration,
    ) -> std::io::Result<AnySource> {
        Ok(match spec {
            SourceSpec::Command { command } => AnySource::Command(CommandSource::spawn(command)?),
            SourceSpec::Serial { path } => {
                AnySource::Serial(BufReader::new(tokio::fs::File::open(path).await?).lines())
            }
            SourceSpec::Simulate { seed } => {
                AnySource::Simulate(Simulated::new(route, *seed, interval))
            }
            SourceSpec::Stdin => AnySource::Stdin(BufReader::new(tokio::io::stdin()).lines()),
        })
    }
}

impl Source for AnySource {
    async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        match self {
            AnySource::Command(c) => c.next_line().await,
            AnySource::Serial(lines) => lines.next_line().await,
            AnySource::Simulate(s) => s.next_line().await,
            AnySource::Stdin(lines) => lines.next_line().await,
        }
    }
}

/// An executable printing one JSON object per line. A script that prints one line and
/// exits is simply run again by the agent at the sensor's interval.
pub struct CommandSource {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl CommandSource {
    fn spawn(command: &[String]) -> std::io::Result<CommandSource> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| std::io::Error::other("empty command"))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        Ok(CommandSource {
            _child: child,
            lines: BufReader::new(stdout).lines(),
        })
    }
}

impl Source for CommandSource {
    async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        self.lines.next_line().await
    }
}

/// A deterministic random walk per measure of the route, over a range that reaches past
/// each default threshold, so demos and tests see warnings now and then.
pub struct Simulated {
    rng: fastrand::Rng,
    interval: Duration,
    walks: Vec<(&'static str, f64, f64, f64)>,
    first: bool,
}

impl Simulated {
    pub fn new(route: Sensor, seed: u64, interval: Duration) -> Simulated {
        let rules = Rules::default();
        let walks = route
            .measures()
            .iter()
            .map(|&m| {
                let rule = rules.rule(m);
                let high = rule.high().unwrap_or(100.0);
                let low = rule.low().map(|l| l - (high - l) * 0.1).unwrap_or(0.0);
                let top = high + (high - low) * 0.15;
                (m.name(), low, top, low + (top - low) * 0.5)
            })
            .collect();
        Simulated {
            rng: fastrand::Rng::with_seed(seed),
            interval,
            walks,
            first: true,
        }
    }

    /// The next line without waiting (tests, benchmarks).
    pub fn step(&mut self) -> String {
        let mut line = serde_json::Map::new();
        for (name, low, top, value) in &mut self.walks {
            let step = (*top - *low) * 0.12 * (self.rng.f64() * 2.0 - 1.0);
            let mut next = *value + step;
            if next > *top {
                next = 2.0 * *top - next;
            }
            if next < *low {
                next = 2.0 * *low - next;
            }
            *value = next;
            let rounded = (next * 100.0).round() / 100.0;
            line.insert((*name).to_string(), serde_json::json!(rounded));
        }
        serde_json::Value::Object(line).to_string()
    }
}

impl Source for Simulated {
    async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        if !self.first {
            tokio::time::sleep(self.interval).await;
        }
        self.first = false;
        Ok(Some(self.step()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_is_deterministic_and_crosses_the_threshold() {
        let mut a = Simulated::new(Sensor::Gasdetector, 3, Duration::from_secs(1));
        let mut b = Simulated::new(Sensor::Gasdetector, 3, Duration::from_secs(1));
        let lines: Vec<String> = (0..400).map(|_| a.step()).collect();
        assert_eq!(lines, (0..400).map(|_| b.step()).collect::<Vec<_>>());
        let no2: Vec<f64> = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["no2"].as_f64())
            .collect();
        assert_eq!(no2.len(), 400);
        assert!(no2.iter().any(|v| *v >= 88.0), "crosses the no2 threshold");
        assert!(no2.iter().any(|v| *v < 88.0), "and comes back");
    }
}
