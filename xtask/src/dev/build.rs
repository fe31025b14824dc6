//! The builds before `cargo xtask dev` starts anything: local-aws, the functions exactly as
//! `cargo lambda watch` builds them, and sensorbox and fleet for `--box`.

use super::options::Options;
use super::{FUNCTIONS, QUERY};
use crate::tools::{self, root, Result};
use std::process::Command;

pub fn build(options: &Options) -> Result {
    let release = options.release_flag();
    tools::run(
        Command::new("cargo")
            .current_dir(root())
            .args(["build", "-p", "local-aws", "--bin", "local-aws"])
            .args(release),
    )?;
    // Exactly what `cargo lambda watch` runs (`cargo run --bin <fn>` at the root, so the
    // default members' feature set), so its first build of a function finds it fresh.
    // Building the functions together with local-aws would unify other features and
    // make watch recompile on the first request (~20 s).
    let mut functions = Command::new("cargo");
    functions.current_dir(root()).arg("build").args(release);
    // nodata too: watch serves it beside the ingest functions (the minute check invokes it),
    // and query (the page and the read API).
    for function in FUNCTIONS.iter().chain(&["nodata", QUERY]) {
        functions.args(["--bin", function]);
    }
    tools::run(&mut functions)?;
    if options.simulated_box {
        tools::run(
            Command::new("cargo")
                .current_dir(root())
                .args(["build", "-p", "sensorbox", "--bin", "sensorbox"])
                .args(["-p", "fleet", "--bin", "fleet"])
                .args(release),
        )?;
    }
    Ok(())
}
