//! `sensorbox`: the box agent. See docs/box.md.

use sensorbox::{agent, config, enroll, queue};

use config::Config;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: sensorbox [--config PATH] [run | check-config | queue | status]
       sensorbox [--config PATH] enroll [--key PATH] [--csr PATH] [--force]

  run           read the sensors, queue every reading, send them (the default)
  check-config  validate the configuration and name the bad key
  queue         queue depth, oldest reading, dead letters
  status        last send, sender state (for a person at the box)
  enroll        a new private key for this box at [mqtt] key (mode 0600, it never
                leaves the box) and a CSR beside it for `fleet enroll`
                  --key PATH  where the key goes when the config has no [mqtt] key
                  --csr PATH  where the CSR goes (default: beside the key, NAME.csr.pem)
                  --force     replace an existing key (its certificate no longer matches)

--config defaults to /etc/sensorbox/config.toml; SENSORBOX_* variables override it
(SENSORBOX_API_URL, SENSORBOX_QUEUE__PATH, ...).
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut path = PathBuf::from(config::DEFAULT_PATH);
    let mut command = None;
    let (mut key, mut csr, mut force) = (None, None, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => match args.next() {
                Some(p) => path = PathBuf::from(p),
                None => return usage("--config needs a path"),
            },
            "--key" => match args.next() {
                Some(p) => key = Some(PathBuf::from(p)),
                None => return usage("--key needs a path"),
            },
            "--csr" => match args.next() {
                Some(p) => csr = Some(PathBuf::from(p)),
                None => return usage("--csr needs a path"),
            },
            "--force" => force = true,
            "-h" | "--help" | "help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other if command.is_none() && !other.starts_with('-') => {
                command = Some(other.to_string())
            }
            other => return usage(&format!("unexpected argument `{other}`")),
        }
    }
    let enrolling = command.as_deref() == Some("enroll");
    if !enrolling && (key.is_some() || csr.is_some() || force) {
        return usage("--key, --csr and --force go with `enroll`");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colour on a terminal only: journald keeps escape codes as they are.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    if enrolling {
        return run_enroll(&path, key, csr, force);
    }
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sensorbox: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let result = match command.as_deref().unwrap_or("run") {
        "run" => run(config),
        "check-config" => {
            println!(
                "{}: ok (group {}, thing {}, {} sensor(s), queue {})",
                path.display(),
                config.group.as_str(),
                config.thing_name,
                config.sensors.len(),
                config.queue.path.display()
            );
            Ok(())
        }
        "queue" => show_queue(&config),
        "status" => show_status(&config),
        other => return usage(&format!("unknown command `{other}`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sensorbox: {message}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("sensorbox: {problem}\n{USAGE}");
    ExitCode::from(2)
}

/// `enroll` reads only the identity from the config: the key and certificate it names do
/// not exist yet.
fn run_enroll(path: &Path, key: Option<PathBuf>, csr: Option<PathBuf>, force: bool) -> ExitCode {
    let identity = match config::Identity::load(path) {
        Ok(identity) => identity,
        Err(e) => {
            eprintln!("sensorbox: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let plan = match enroll::Plan::new(&identity, key, csr) {
        Ok(plan) => plan,
        Err(message) => {
            eprintln!("sensorbox: enroll: {message}");
            return ExitCode::from(2);
        }
    };
    match enroll::write(&plan, force) {
        Ok(()) => {
            print!("{}", enroll::next_steps(&plan, path));
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("sensorbox: enroll: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> Result<(), String> {
    limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(agent::run(config))
}

/// glibc gives each thread that allocates its own malloc arena (64 MiB reserved, pages
/// kept after free); the agent's handful of threads do little allocation, so two arenas
/// keep the RSS of a long-running box flat.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn show_queue(config: &Config) -> Result<(), String> {
    let queue = queue::Queue::open_read_only(&config.queue.path).map_err(|e| e.to_string())?;
    let stats = queue.stats().map_err(|e| e.to_string())?;
    println!("queue        {}", config.queue.path.display());
    println!(
        "depth        {} of at most {}",
        stats.depth, config.queue.max_readings
    );
    println!(
        "oldest       {}",
        stats
            .oldest
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "-".into())
    );
    println!("dropped      {} (queue full, oldest first)", stats.dropped);
    println!("dead letters {}", stats.dead_letters);
    for dead in queue.dead_letters(20).map_err(|e| e.to_string())? {
        println!(
            "  #{} {} {} HTTP {} at {}: {}",
            dead.seq,
            dead.route,
            dead.doc_id,
            dead.status,
            dead.moved_at.to_rfc3339(),
            dead.reason
        );
    }
    Ok(())
}

fn show_status(config: &Config) -> Result<(), String> {
    let queue = queue::Queue::open_read_only(&config.queue.path).map_err(|e| e.to_string())?;
    let stats = queue.stats().map_err(|e| e.to_string())?;
    println!(
        "group {} thing {}",
        config.group.as_str(),
        config.thing_name
    );
    println!("queued {} dead letters {}", stats.depth, stats.dead_letters);
    for (name, value) in queue.status().map_err(|e| e.to_string())? {
        println!("{name:<12} {value}");
    }
    Ok(())
}
