//! `cargo xtask deny`: `cargo deny check bans licenses sources` against `deny.toml`
//! (works offline), then `advisories` only if the RustSec database can be fetched; an
//! unreachable network is reported, never a failure.
//!
//! Also the last step of `cargo xtask test`. Installing cargo-deny cold takes about 9
//! minutes on a 2-core machine, once per checkout (it lands in `target/tools`).

use crate::cargo_tools;
use crate::tools::{root, run, Result};
use std::process::Command;

pub fn check(_args: &[String]) -> Result {
    let deny = cargo_tools::ensure("cargo-deny", "cargo-deny")?;
    let cargo_deny = || {
        let mut c = Command::new(&deny);
        c.current_dir(root())
            .env("PATH", cargo_tools::path_with_tools())
            .arg("deny");
        c
    };
    run(cargo_deny().args(["--workspace", "check", "bans", "licenses", "sources"]))?;
    let fetched = cargo_deny()
        .args(["fetch", "db"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if fetched {
        run(cargo_deny().args(["--workspace", "check", "--disable-fetch", "advisories"]))
    } else {
        eprintln!(
            "xtask: the advisory database (github.com/rustsec/advisory-db) cannot be fetched \
             from here: advisories NOT checked; run `cargo xtask deny` where the network is reachable"
        );
        Ok(())
    }
}
