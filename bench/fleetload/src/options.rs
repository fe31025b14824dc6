//! The command line: every flag checked before anything starts, errors naming the flag.

use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
usage: fleetload [options]   (or: cargo xtask bench-fleet [options])

  --boxes LIST            fleet sizes, comma-separated (default 50,200,500)
  --paths LIST            direct,stream (default both; each size runs each path, one stack at a time)
  --interval SECS         seconds between a box's readings, at least 1 (default 1: the real 10 s, accelerated)
  --duration SECS         how long the boxes publish (default 30)
  --seed N                seed of the readings and of the alarm schedule (default 22)
  --shards N              stream shards (default 2)
  --batch-size N          event source mapping BatchSize (default 1000)
  --window SECS           MaximumBatchingWindowInSeconds (default 1)
  --stream-max-retries N  MaximumRetryAttempts of the mappings (default 5)
  --concurrency N         instances per function under `cargo lambda watch` (default 1, watch's own)
  --fault KIND            none | kill-consumer | opensearch-down (default none)
  --fault-at FRACTION     when the fault starts, as a fraction of --duration (default 0.4)
  --outage SECS           how long OpenSearch is down for opensearch-down (default 60)
  --no-baseline           with --fault: skip the fault-free run of the same seed it is compared with
  --sample N              time 1 in N readings from publish to searchable (default 10)
  --drain-timeout SECS    longest wait for everything to be searchable after the last publish (default 300)
  --debug-functions       run the functions in debug mode (default: release, `cargo lambda watch --release`)
  --verbose               the event source mappings log every invocation (stderr)
  --out DIR               where report.md and report.json go (default target/fleetload)
";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IngestPath {
    /// `devices/<thing>/data/gasdetector`: the MQTT data rule invokes the function per message.
    Direct,
    /// Basic Ingest -> stream rule -> Kinesis -> event source mapping batches.
    Stream,
}

impl IngestPath {
    pub fn name(self) -> &'static str {
        match self {
            IngestPath::Direct => "direct",
            IngestPath::Stream => "stream",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// SIGKILL the gasdetector process once, while it runs an invocation.
    KillConsumer,
    /// The OpenSearch proxy answers 503 to everything for `--outage`.
    OpenSearchDown,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::KillConsumer => "kill-consumer",
            Fault::OpenSearchDown => "opensearch-down",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub boxes: Vec<usize>,
    pub paths: Vec<IngestPath>,
    pub interval: Duration,
    pub duration: Duration,
    pub seed: u64,
    pub shards: u32,
    pub batch_size: usize,
    pub window: Duration,
    pub max_retries: u32,
    pub concurrency: u32,
    pub fault: Fault,
    pub fault_at: f64,
    pub outage: Duration,
    pub baseline: bool,
    pub sample: usize,
    pub drain_timeout: Duration,
    pub release: bool,
    pub verbose: bool,
    pub out: PathBuf,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            boxes: vec![50, 200, 500],
            paths: vec![IngestPath::Direct, IngestPath::Stream],
            interval: Duration::from_secs(1),
            duration: Duration::from_secs(30),
            seed: 22,
            shards: 2,
            batch_size: 1000,
            window: Duration::from_secs(1),
            max_retries: 5,
            concurrency: 1,
            fault: Fault::None,
            fault_at: 0.4,
            outage: Duration::from_secs(60),
            baseline: true,
            sample: 10,
            drain_timeout: Duration::from_secs(300),
            release: true,
            verbose: false,
            out: PathBuf::from("target/fleetload"),
        }
    }
}

/// What the command line asks for: a run, or the usage.
#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Options),
    Help,
}

fn seconds(flag: &str, text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{flag}: {text:?} is not a number of seconds"))?;
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{flag}: {text:?} must be 0 to 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn whole<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag}: {text:?} is not a whole number"))
}

pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--boxes" => {
                let text = value()?;
                o.boxes = text
                    .split(',')
                    .map(|n| whole::<usize>("--boxes", n.trim()))
                    .collect::<Result<_, _>>()?;
                if o.boxes.iter().any(|&n| n == 0 || n > 5_000) {
                    return Err(format!("--boxes: {text:?}: each size must be 1 to 5000"));
                }
            }
            "--paths" => {
                let text = value()?;
                o.paths = Vec::new();
                for name in text.split(',') {
                    let path = match name.trim() {
                        "direct" => IngestPath::Direct,
                        "stream" => IngestPath::Stream,
                        other => return Err(format!("--paths: {other:?} is not direct or stream")),
                    };
                    if !o.paths.contains(&path) {
                        o.paths.push(path);
                    }
                }
            }
            "--interval" => o.interval = seconds(flag, &value()?)?,
            "--duration" => o.duration = seconds(flag, &value()?)?,
            "--seed" => o.seed = whole(flag, &value()?)?,
            "--shards" => o.shards = whole(flag, &value()?)?,
            "--batch-size" => o.batch_size = whole(flag, &value()?)?,
            "--window" => o.window = seconds(flag, &value()?)?,
            "--stream-max-retries" => o.max_retries = whole(flag, &value()?)?,
            "--concurrency" => o.concurrency = whole(flag, &value()?)?,
            "--fault" => {
                o.fault = match value()?.as_str() {
                    "none" => Fault::None,
                    "kill-consumer" => Fault::KillConsumer,
                    "opensearch-down" => Fault::OpenSearchDown,
                    other => {
                        return Err(format!(
                            "--fault: {other:?} is not none, kill-consumer or opensearch-down"
                        ))
                    }
                }
            }
            "--fault-at" => {
                let text = value()?;
                o.fault_at = text
                    .parse()
                    .map_err(|_| format!("--fault-at: {text:?} is not a number"))?;
            }
            "--outage" => o.outage = seconds(flag, &value()?)?,
            "--no-baseline" => o.baseline = false,
            "--sample" => o.sample = whole(flag, &value()?)?,
            "--drain-timeout" => o.drain_timeout = seconds(flag, &value()?)?,
            "--debug-functions" => o.release = false,
            "--verbose" => o.verbose = true,
            "--out" => o.out = PathBuf::from(value()?),
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    check(&o)?;
    Ok(Command::Run(o))
}

fn check(o: &Options) -> Result<(), String> {
    if o.paths.is_empty() {
        return Err("--paths: name at least one of direct, stream".into());
    }
    // A box's readings are a second apart or more, so (box, createdtime) never repeats.
    if o.interval < Duration::from_secs(1) {
        return Err("--interval must be at least 1 s: createdtime has whole seconds, and a box's readings must not share one".into());
    }
    if o.duration < o.interval {
        return Err("--duration must be at least one --interval".into());
    }
    if !(1..=64).contains(&o.shards) {
        return Err("--shards must be 1 to 64".into());
    }
    if !(1..=10_000).contains(&o.batch_size) {
        return Err("--batch-size must be 1 to 10000 (Kinesis mappings' range)".into());
    }
    if o.window > Duration::from_secs(300) {
        return Err("--window must be at most 300 s (Lambda's maximum)".into());
    }
    if o.max_retries > 10_000 {
        return Err("--stream-max-retries must be at most 10000".into());
    }
    if !(1..=16).contains(&o.concurrency) {
        return Err("--concurrency must be 1 to 16".into());
    }
    if o.sample == 0 {
        return Err("--sample must be at least 1".into());
    }
    if !(0.0..1.0).contains(&o.fault_at) {
        return Err("--fault-at must be in [0, 1)".into());
    }
    if o.fault == Fault::OpenSearchDown {
        let end = o.duration.as_secs_f64() * o.fault_at + o.outage.as_secs_f64();
        if end > o.duration.as_secs_f64() {
            return Err(format!(
                "--fault opensearch-down: the outage ends {end:.0} s into the run, after the boxes stop ({} s): use --duration {:.0} or more, so the run recovers while the boxes still publish",
                o.duration.as_secs(),
                (o.outage.as_secs_f64() / (1.0 - o.fault_at)).ceil()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn defaults_are_the_benchmark_set() {
        let Ok(Command::Run(o)) = parse(&[]) else {
            panic!("no arguments is a run");
        };
        assert_eq!(o, Options::default());
        assert_eq!(o.boxes, vec![50, 200, 500]);
        assert_eq!(o.paths, vec![IngestPath::Direct, IngestPath::Stream]);
    }

    #[test]
    fn flags_are_read() {
        let Ok(Command::Run(o)) = parse(&args(
            "--boxes 10,20 --paths stream --fault opensearch-down --duration 120 --outage 60 --window 0.5 --stream-max-retries 50",
        )) else {
            panic!("a run");
        };
        assert_eq!(o.boxes, vec![10, 20]);
        assert_eq!(o.paths, vec![IngestPath::Stream]);
        assert_eq!(o.fault, Fault::OpenSearchDown);
        assert_eq!(o.window, Duration::from_millis(500));
        assert_eq!(o.max_retries, 50);
    }

    #[test]
    fn bad_input_names_the_flag() {
        for (line, flag) in [
            ("--boxes 10,x", "--boxes"),
            ("--boxes 0", "--boxes"),
            ("--paths direct,sideways", "--paths"),
            ("--interval 0.5", "--interval"),
            ("--fault unplug", "--fault"),
            ("--fault opensearch-down", "--duration"),
            ("--sample 0", "--sample"),
            ("--batch-size", "--batch-size"),
            ("--frobnicate", "--frobnicate"),
        ] {
            let error = parse(&args(line)).expect_err(line);
            assert!(error.contains(flag), "{line}: {error}");
        }
    }
}
