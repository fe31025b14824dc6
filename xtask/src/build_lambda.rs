//! `cargo xtask build-lambda`: `cargo lambda build --release` of the functions, with
//! cargo-lambda from the project virtualenv.

use crate::tools::{ensure_cargo_lambda, path_with_venv, root, run, Result};
use std::process::Command;

pub fn run_build(args: &[String]) -> Result {
    ensure_cargo_lambda()?;
    run(Command::new("cargo")
        .current_dir(root())
        .env("PATH", path_with_venv())
        .args(["lambda", "build", "--release"])
        .args(args))
}
