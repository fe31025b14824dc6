//! The command line: `--fn` targets and the options of a run.

use crate::Result;
use bytes::Bytes;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: coldstart [options] --fn 'NAME|EVENT_FILE|COMMAND [ARGS..]' ...

  --fn SPEC            a function to measure (repeat; KEY=VALUE words before COMMAND set
                       that target's environment); NAME `hello` is the floor baseline,
                       `hello-io` the floor plus the same two HTTP requests, `python` the
                       Python baseline
  --runs N             cold starts per function (default 15)
  --osmem PATH         start this osmem-server for OpenSearch (or --opensearch URL)
  --opensearch URL     an OpenSearch-compatible server already running
  --env KEY=VALUE      extra environment for every function (repeat)
  --warm N             then N warm requests per warm target through the local gateway
  --warm-fn NAME       warm target (repeat; default gasdetector and python)
  --concurrency C      concurrent clients in the warm test (default 1)
  --out FILE           write the markdown report there too
  --logs DIR           functions' stdout/stderr (default target/bench/logs)
  --note TEXT          a line for the report (toolchain, versions)
";

pub struct Target {
    pub name: String,
    pub event: Bytes,
    pub program: String,
    pub args: Vec<String>,
    /// `KEY=VALUE` words before the program in `--fn`: this target's own environment.
    pub env: Vec<(String, String)>,
}

pub struct Options {
    pub targets: Vec<Target>,
    pub runs: usize,
    pub osmem: Option<PathBuf>,
    pub opensearch: Option<String>,
    pub env: Vec<(String, String)>,
    pub warm: usize,
    pub warm_fns: Vec<String>,
    pub concurrency: usize,
    pub out: Option<PathBuf>,
    pub logs: PathBuf,
    pub notes: Vec<String>,
}

pub fn parse_args() -> Result<Options> {
    let mut o = Options {
        targets: Vec::new(),
        runs: 15,
        osmem: None,
        opensearch: None,
        env: Vec::new(),
        warm: 0,
        warm_fns: Vec::new(),
        concurrency: 1,
        out: None,
        logs: PathBuf::from("target/bench/logs"),
        notes: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--fn" => {
                let spec = value()?;
                let mut parts = spec.splitn(3, '|');
                let (Some(name), Some(event), Some(command)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(format!("--fn {spec:?}: expected NAME|EVENT|COMMAND"));
                };
                let event = std::fs::read(event).map_err(|e| format!("{event}: {e}"))?;
                let mut words = command.split_whitespace().map(str::to_string).peekable();
                let mut env = Vec::new();
                while let Some((k, v)) = words.peek().and_then(|w| w.split_once('=')) {
                    env.push((k.to_string(), v.to_string()));
                    words.next();
                }
                let program = words
                    .next()
                    .ok_or_else(|| format!("--fn {spec:?}: empty command"))?;
                o.targets.push(Target {
                    name: name.to_string(),
                    event: Bytes::from(event),
                    program,
                    args: words.collect(),
                    env,
                });
            }
            "--runs" => o.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--osmem" => o.osmem = Some(PathBuf::from(value()?)),
            "--opensearch" => o.opensearch = Some(value()?),
            "--env" => {
                let kv = value()?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("--env {kv:?}: expected KEY=VALUE"))?;
                o.env.push((k.to_string(), v.to_string()));
            }
            "--warm" => o.warm = value()?.parse().map_err(|e| format!("--warm: {e}"))?,
            "--warm-fn" => o.warm_fns.push(value()?),
            "--concurrency" => {
                o.concurrency = value()?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            "--out" => o.out = Some(PathBuf::from(value()?)),
            "--logs" => o.logs = PathBuf::from(value()?),
            "--note" => o.notes.push(value()?),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.targets.is_empty() {
        return Err(format!("no --fn given\n{USAGE}"));
    }
    if o.warm_fns.is_empty() {
        o.warm_fns = vec!["gasdetector".into(), "python".into()];
    }
    o.concurrency = o.concurrency.max(1);
    Ok(o)
}
