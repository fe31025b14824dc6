//! `cargo xtask fuzz [seconds]`: runs the `parse_validate` libFuzzer target (fuzz/) for
//! the given time (default 60 s) on the committed corpus, then minimizes the corpus so it
//! stays small. Needs cargo-fuzz (installed into target/tools when missing); the stable
//! toolchain builds it with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly-only flags).
//! Not part of `cargo xtask test`.

use crate::cargo_tools;
use crate::tools::{root, run, Result};
use std::process::Command;

const TARGET: &str = "parse_validate";

pub fn run_fuzz(args: &[String]) -> Result {
    let seconds: u64 = match args.first() {
        Some(s) => s
            .parse()
            .map_err(|_| format!("fuzz: {s:?} is not a number of seconds"))?,
        None => 60,
    };
    cargo_tools::ensure("cargo-fuzz", "cargo-fuzz")?;
    let corpus = format!("fuzz/corpus/{TARGET}");
    let cargo_fuzz = || {
        let mut c = Command::new("cargo");
        c.current_dir(root())
            .env("PATH", cargo_tools::path_with_tools())
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_DIR", root().join("target").join("fuzz"))
            .arg("fuzz");
        c
    };
    run(cargo_fuzz().args(["run", TARGET, &corpus, "--"]).args([
        format!("-max_total_time={seconds}"),
        "-max_len=16384".into(),
        "-timeout=10".into(),
        "-print_final_stats=1".into(),
    ]))?;
    run(cargo_fuzz().args(["cmin", TARGET, &corpus]))
}
