//! Finding and installing the tools the project runs: a project-local Python virtualenv
//! under `target/venv` (cargo-lambda, osmem-server, moto, cfn-lint, aws-sam-cli,
//! schemathesis, playwright) and npm
//! packages from committed lockfiles.

use std::path::{Path, PathBuf};
use std::process::Command;

pub type Result<T = ()> = std::result::Result<T, String>;

/// The workspace root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

pub fn venv_dir() -> PathBuf {
    root().join("target").join("venv")
}

/// Path of an executable installed in the project virtualenv.
pub fn venv_bin(name: &str) -> PathBuf {
    venv_dir().join("bin").join(name)
}

/// The value after a command-line flag (`--runs 5` gives `5`), or an error naming the flag.
pub fn flag_value(
    args: &mut std::slice::Iter<'_, String>,
    flag: &str,
    usage: &str,
) -> Result<String> {
    args.next()
        .cloned()
        .ok_or(format!("{flag} needs a value\n{usage}"))
}

/// Runs a command to completion, failing with its name if it does not exit 0.
pub fn run(command: &mut Command) -> Result {
    eprintln!("$ {}", describe(command));
    let status = command
        .status()
        .map_err(|e| format!("cannot start `{}`: {e}", describe(command)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed with {status}", describe(command)))
    }
}

pub fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Makes sure the project virtualenv exists and holds `packages` (pip requirement
/// specifiers). Only missing executables trigger a pip run, so repeated calls are cheap.
/// `wanted_bins` names one executable per package that proves it is installed.
pub fn ensure_python_tools(packages: &[(&str, &str)]) -> Result {
    let venv = venv_dir();
    if !venv_bin("python").exists() {
        let python = find_python()?;
        run(Command::new(python).arg("-m").arg("venv").arg(&venv))?;
    }
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, bin)| !venv_bin(bin).exists())
        .map(|(spec, _)| *spec)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new(venv_bin("python"))
        .args(["-m", "pip", "install", "--quiet"])
        .args(&missing))
}

fn find_python() -> Result<&'static str> {
    for candidate in ["python3", "python"] {
        if Command::new(candidate)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
        {
            return Ok(candidate);
        }
    }
    Err("no python3 on PATH: install Python 3 with pip".into())
}

/// The contract fuzzer run by tests/tests/schemathesis.rs (which pins the same version).
pub const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// schemathesis from PyPI into the project virtualenv.
pub fn ensure_schemathesis() -> Result {
    ensure_python_tools(&[(SCHEMATHESIS, "schemathesis")])
}

/// The browser driver of tests/tests/browser.rs (which pins the same version); the
/// browser itself is Debian's chromium (the test installs it with apt-get as root).
pub const PLAYWRIGHT: &str = "playwright==1.56.0";

/// Playwright for Python into the project virtualenv (no browser download: the test
/// drives /usr/bin/chromium).
pub fn ensure_playwright() -> Result {
    ensure_python_tools(&[(PLAYWRIGHT, "playwright")])
}

/// cargo-lambda from PyPI into the project virtualenv.
pub fn ensure_cargo_lambda() -> Result<PathBuf> {
    ensure_python_tools(&[("cargo-lambda", "cargo-lambda")])?;
    Ok(venv_bin("cargo-lambda"))
}

/// A PATH with the virtualenv's bin first, so `cargo lambda` finds the venv's cargo-lambda.
pub fn path_with_venv() -> String {
    path_with(&venv_dir().join("bin"))
}

/// The current PATH with `dir` in front.
pub fn path_with(dir: &Path) -> String {
    let mut path = dir.to_string_lossy().into_owned();
    if let Ok(existing) = std::env::var("PATH") {
        path.push(':');
        path.push_str(&existing);
    }
    path
}

/// Whether this process runs as root (then apt-get may install system packages).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A Debian package that provides `binary`: installed with apt-get when running as root,
/// otherwise an error giving the one command to run (never a silent skip).
pub fn ensure_debian_package(binary: &str, package: &str) -> Result {
    if Path::new(binary).exists() {
        return Ok(());
    }
    let hint = format!(
        "`sudo apt-get install -y --no-install-recommends {package}` (or your system's package)"
    );
    if !is_root() || !Path::new("/usr/bin/apt-get").exists() {
        return Err(format!("{binary} is missing: install it with {hint}"));
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    eprintln!("$ apt-get install -y {package}");
    let install = ["install", "-y", "-q", "--no-install-recommends", package];
    if !apt(&install) {
        // A fresh machine may have no package lists yet.
        if !apt(&["update", "-q"]) || !apt(&install) {
            return Err(format!("apt-get could not install {package}; try {hint}"));
        }
    }
    if Path::new(binary).exists() {
        Ok(())
    } else {
        Err(format!("{package} installed but {binary} is not there"))
    }
}

/// The local MQTT broker (local-aws/src/broker.rs runs it).
pub fn ensure_mosquitto() -> Result {
    let on_path = Command::new("mosquitto")
        .arg("-h")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("mosquitto"))
        .unwrap_or(false);
    let elsewhere = ["/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto"]
        .iter()
        .any(|p| Path::new(p).exists());
    if std::env::var_os("MOSQUITTO").is_some() || on_path || elsewhere {
        return Ok(());
    }
    ensure_debian_package("/usr/sbin/mosquitto", "mosquitto")
}
