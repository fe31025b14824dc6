//! Cargo-installed tools (cargo-deny, cargo-fuzz) live in `target/tools/bin`, installed
//! with `cargo install --locked --root target/tools` only when missing.

use crate::tools::{root, run, Result};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

pub fn tools_root() -> PathBuf {
    root().join("target").join("tools")
}

/// The path of `bin` from crate `krate`, installing the crate first if needed.
pub fn ensure(krate: &str, bin: &str) -> Result<PathBuf> {
    let path = tools_root().join("bin").join(bin);
    if path.exists() {
        return Ok(path);
    }
    eprintln!(
        "xtask: installing {krate} into {} (once)",
        tools_root().display()
    );
    let start = Instant::now();
    run(Command::new("cargo")
        .current_dir(root())
        // Keep the build cache beside the tools, away from the workspace's target dir lock.
        .env("CARGO_TARGET_DIR", tools_root().join("build"))
        .args(["install", "--locked", krate, "--root"])
        .arg(tools_root()))?;
    eprintln!("xtask: installed {krate} in {:.0?}", start.elapsed());
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{krate} installed but {} is missing",
            path.display()
        ))
    }
}

/// PATH with `target/tools/bin` first, so `cargo <tool>` finds the installed tools.
pub fn path_with_tools() -> String {
    crate::tools::path_with(&tools_root().join("bin"))
}
