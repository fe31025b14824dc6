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
    tools::run(cargo().args(["test", "--workspace"]))?;
    crate::infra::check(&[])?;
    Ok(())
}
