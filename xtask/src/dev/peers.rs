//! Process supervision for `cargo xtask dev`: every peer in its own process group, waits
//! that give up when a peer dies or Ctrl-C comes, and every group stopped on the way out.

use crate::tools::{self, Result};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The started peers, each the leader of its own process group; dropping stops them all.
pub struct Peers {
    children: Vec<(&'static str, Child)>,
    /// A message per Ctrl-C or SIGTERM.
    stop: mpsc::Receiver<()>,
}

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn signal_group(pgid: u32, signal: i32) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        kill(-pgid, signal);
    }
}

/// A log file for a peer's output, appended to.
pub fn log_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

impl Peers {
    /// No peers yet; Ctrl-C / SIGTERM from here on tears everything down.
    pub fn new() -> Result<Peers> {
        let (stop_tx, stop) = mpsc::channel::<()>();
        ctrlc::set_handler(move || {
            let _ = stop_tx.send(());
        })
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
        Ok(Peers {
            children: Vec::new(),
            stop,
        })
    }

    pub fn spawn(&mut self, name: &'static str, command: &mut Command) -> Result {
        // Own process group: Ctrl-C reaches only xtask, which then stops each group whole
        // (cargo lambda watch's function processes included).
        command.process_group(0);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {name} (`{}`): {e}", tools::describe(command)))?;
        eprintln!("started {name} (pid {})", child.id());
        self.children.push((name, child));
        Ok(())
    }

    /// The stdout pipe of the peer spawned last, if it was piped.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.children.last_mut()?.1.stdout.take()
    }

    /// Polls `ready` until it holds, failing if the deadline passes, a peer exits or the
    /// user presses Ctrl-C.
    pub fn wait_until(
        &mut self,
        what: &str,
        deadline: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result {
        let start = Instant::now();
        loop {
            if ready() {
                eprintln!("{what} ready after {:.1} s", start.elapsed().as_secs_f64());
                return Ok(());
            }
            if let Some(dead) = self.exited() {
                return Err(format!("{dead} while waiting for {what}"));
            }
            if start.elapsed() > deadline {
                return Err(format!(
                    "{what} not ready after {} s (logs in target/dev/)",
                    deadline.as_secs()
                ));
            }
            if self.stop.recv_timeout(Duration::from_millis(100)).is_ok() {
                return Err("interrupted".into());
            }
        }
    }

    /// Serves until Ctrl-C (then stops every peer) or until a peer dies (an error).
    pub fn serve(&mut self) -> Result {
        loop {
            match self.stop.recv_timeout(Duration::from_millis(500)) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    eprintln!("\nstopping the local stack...");
                    self.stop_all();
                    eprintln!("stopped; ports freed");
                    return Ok(());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(dead) = self.exited() {
                        self.stop_all();
                        return Err(format!("{dead}; stopped the local stack"));
                    }
                }
            }
        }
    }

    /// The first peer that has exited, described.
    fn exited(&mut self) -> Option<String> {
        for (name, child) in &mut self.children {
            match child.try_wait() {
                Ok(Some(status)) => return Some(format!("{name} exited ({status})")),
                Ok(None) => {}
                Err(e) => return Some(format!("{name}: {e}")),
            }
        }
        None
    }

    /// SIGTERM to every group, up to 10 s grace, then SIGKILL to whatever is left.
    fn stop_all(&mut self) {
        for (_, child) in self.children.iter().rev() {
            signal_group(child.id(), SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (name, child) in self.children.iter_mut().rev() {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        eprintln!("{name} did not stop on SIGTERM: killing it");
                        signal_group(child.id(), SIGKILL);
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            // Stragglers in the group (e.g. a function process) go too.
            signal_group(child.id(), SIGKILL);
        }
        self.children.clear();
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        self.stop_all();
    }
}
