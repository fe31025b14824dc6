//! `cargo xtask test`: every check CI runs, installing what it needs.

use crate::tools::{self, root, Result};
use std::process::Command;

pub fn run(_args: &[String]) -> Result {
    let cargo = || {
        let mut c = Command::new("cargo");
        c.current_dir(root());
        c
    };
    tools::run(cargo().args(["fmt", "--all", "--check"]))?;
    tools::run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // tests/tests/schemathesis.rs fuzzes the local stack from api/openapi.yaml.
    tools::ensure_schemathesis()?;
    // The local MQTT broker of every stack the tests start.
    tools::ensure_mosquitto()?;
    // tests/tests/browser.rs drives the page in Debian's headless chromium with Playwright.
    tools::ensure_debian_package("/usr/bin/chromium", "chromium")?;
    tools::ensure_playwright()?;
    tools::run(cargo().args(["test", "--workspace"]))?;
    crate::infra::check(&[])?;
    // Licences, bans (one TLS stack) and sources, offline. The first run on a fresh
    // checkout installs cargo-deny into target/tools (about 9 minutes on 2 cores).
    crate::deny::check(&[])?;
    Ok(())
}
