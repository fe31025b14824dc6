//! The local MQTT broker: Eclipse Mosquitto (Debian's `mosquitto`), run as a child process
//! with a plain listener (quick looks with `mosquitto_sub`) and, when asked, a TLS listener
//! that requires a client certificate from the local CA, as IoT Core's port 8883 does.
//!
//! A maintained broker rather than our own: persistent sessions (QoS 1 messages kept for a
//! disconnected `clean session = false` client), Last Will on an unclean disconnect,
//! retained messages and keep-alive are Mosquitto's, checked by `local-aws/tests/servers.rs`.
//!
//! In-process code publishes through [`MqttPublisher`], one MQTT connection (rumqttc) kept by
//! the broker handle; messages keep the order they were published in.

use crate::certs::Identity;
use crate::mqtt_publisher::MqttPublisher;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long Mosquitto may take to open its listeners.
const START: Duration = Duration::from_secs(10);
/// QoS 1 messages Mosquitto keeps for one disconnected persistent client (its default is
/// 1000); a box offline for a day of warnings must not lose them.
const MAX_QUEUED: u32 = 100_000;

/// Where Mosquitto is looked for when `MOSQUITTO` does not name it.
const CANDIDATES: [&str; 3] = [
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/opt/homebrew/sbin/mosquitto",
];

/// The command that installs the broker, for error messages.
pub const INSTALL_HINT: &str =
    "install Mosquitto: `sudo apt-get install mosquitto` (Debian/Ubuntu) or `brew install mosquitto`; \
     or set MOSQUITTO to its path";

/// The TLS listener: mutual TLS with certificates from [`crate::certs::Certs`].
#[derive(Clone, Debug)]
pub struct TlsListener {
    pub addr: SocketAddr,
    /// The CA that client certificates must chain to.
    pub ca: PathBuf,
    /// The broker's own certificate and key.
    pub server: Identity,
    /// The CA's revocation list: a revoked certificate is refused at the TLS handshake,
    /// as IoT Core refuses a certificate whose status is REVOKED or INACTIVE.
    pub crl: Option<PathBuf>,
}

impl TlsListener {
    /// The listener on `addr` with the local CA's certificates and revocation list.
    pub fn from_certs(addr: SocketAddr, certs: &crate::certs::Certs) -> TlsListener {
        TlsListener {
            addr,
            ca: certs.ca(),
            server: certs.server(),
            crl: Some(certs.crl()),
        }
    }
}

/// Listeners and where the broker keeps its configuration and log.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Plain MQTT (port 0 picks a free one).
    pub plain: SocketAddr,
    pub tls: Option<TlsListener>,
    /// Configuration and `mosquitto.log` go here; `None`: a fresh temporary directory,
    /// removed when the broker stops.
    pub dir: Option<PathBuf>,
}

/// A running Mosquitto; dropping it stops the process.
pub struct Broker {
    plain: SocketAddr,
    tls: Option<SocketAddr>,
    child: Child,
    dir: PathBuf,
    remove_dir: bool,
    publisher: MqttPublisher,
    publisher_task: Option<tokio::task::JoinHandle<()>>,
}

/// Finds the `mosquitto` executable.
pub fn executable() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("MOSQUITTO") {
        return Ok(PathBuf::from(path));
    }
    for candidate in CANDIDATES {
        if Path::new(candidate).is_file() {
            return Ok(candidate.into());
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("mosquitto");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("the MQTT broker `mosquitto` is not installed: {INSTALL_HINT}"),
    ))
}

/// Linux: the broker is killed when the thread that started it ends, so a `local-aws`
/// killed with SIGKILL (or a test process that exits) leaves no Mosquitto holding ports.
/// Elsewhere the handle's `Drop` is all there is.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent; it runs in
    // the child between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

/// The user this process runs as (Mosquitto's `user`: no switch when it is ours).
fn current_user() -> String {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } == 0 {
        return "root".into();
    }
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "mosquitto".into())
}

/// `addr` if nothing listens there now, or a free port for port 0 (Mosquitto cannot be
/// told to pick one itself). Checked before the start: a broker already on the port would
/// answer the readiness probe and hide that ours could not bind.
fn free_port(addr: SocketAddr) -> io::Result<SocketAddr> {
    TcpListener::bind(addr)?.local_addr()
}

impl Broker {
    /// A broker with only the plain listener on `addr` (port 0 picks a free port).
    pub async fn start(addr: SocketAddr) -> io::Result<Broker> {
        Broker::start_with(BrokerConfig {
            plain: addr,
            tls: None,
            dir: None,
        })
        .await
    }

    /// Starts Mosquitto and waits until its listeners accept connections; the error names
    /// what failed (not installed, a port taken, a certificate it refused) with its log.
    pub async fn start_with(config: BrokerConfig) -> io::Result<Broker> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let program = executable()?;
        let plain = free_port(config.plain)?;
        let tls = match &config.tls {
            Some(listener) => Some((free_port(listener.addr)?, listener)),
            None => None,
        };
        let (dir, remove_dir) = match config.dir {
            Some(dir) => (dir, false),
            None => (
                std::env::temp_dir().join(format!(
                    "local-aws-mosquitto-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                )),
                true,
            ),
        };
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("mosquitto.log");
        let _ = std::fs::remove_file(&log);
        let mut text = format!(
            "# Written by local-aws (broker.rs) at every start.\n\
             per_listener_settings false\n\
             # As root Mosquitto would switch to the `mosquitto` user, which clears the\n\
             # parent-death signal (die_with_parent) and may not read target/dev.\n\
             user {user}\n\
             allow_anonymous true\n\
             persistence false\n\
             max_queued_messages {MAX_QUEUED}\n\
             max_keepalive 65535\n\
             log_dest file {log}\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             connection_messages true\n\
             listener {port} {host}\n",
            log = log.display(),
            user = current_user(),
            port = plain.port(),
            host = plain.ip(),
        );
        if let Some((addr, listener)) = &tls {
            text.push_str(&format!(
                "listener {port} {host}\n\
                 cafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
                 require_certificate true\n\
                 use_identity_as_username true\n\
                 tls_version tlsv1.2\n",
                port = addr.port(),
                host = addr.ip(),
                ca = listener.ca.display(),
                cert = listener.server.cert.display(),
                key = listener.server.key.display(),
            ));
            if let Some(crl) = &listener.crl {
                text.push_str(&format!("crlfile {}\n", crl.display()));
            }
        }
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, text)?;
        let mut command = Command::new(&program);
        command
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut command);
        let child = command.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot run {}: {e}", program.display()))
        })?;
        let mut broker = Broker {
            plain,
            tls: tls.as_ref().map(|(addr, _)| *addr),
            child,
            dir,
            remove_dir,
            publisher: MqttPublisher::disconnected(),
            publisher_task: None,
        };
        broker.wait_until_listening().await?;
        let (publisher, task) = MqttPublisher::connect(plain);
        broker.publisher = publisher;
        broker.publisher_task = Some(task);
        Ok(broker)
    }

    async fn wait_until_listening(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START;
        let addrs: Vec<SocketAddr> = std::iter::once(self.plain).chain(self.tls).collect();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "mosquitto exited ({status}) at start: {}",
                    self.log_tail()
                )));
            }
            if addrs
                .iter()
                .all(|addr| TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "mosquitto did not open {addrs:?} within {START:?}: {}",
                        self.log_tail()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines Mosquitto logged (for error messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        if tail.is_empty() {
            "(nothing logged)".into()
        } else {
            tail
        }
    }

    /// The plain listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.plain
    }

    /// The mutual-TLS listener, when configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls
    }

    /// Mosquitto's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("mosquitto.log")
    }

    /// A cheap handle that publishes into this broker from in-process code.
    pub fn publisher(&self) -> MqttPublisher {
        self.publisher.clone()
    }

    /// Stops the broker: every client sees its connection drop.
    /// A function that makes Mosquitto reload its listeners' certificates and revocation
    /// list (SIGHUP, Mosquitto 2.0 and later): new connections see a revocation at once;
    /// connections already open stay until they reconnect.
    pub fn reloader(&self) -> impl Fn() -> Result<(), String> + Send + Sync + 'static {
        let pid = self.child.id();
        move || {
            let status = std::process::Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .map_err(|e| format!("cannot signal mosquitto ({pid}): {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("kill -HUP {pid}: {status}"))
            }
        }
    }

    pub fn shutdown(&mut self) {
        if let Some(task) = self.publisher_task.take() {
            task.abort();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.shutdown();
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
