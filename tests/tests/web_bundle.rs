//! web/dist/index.html (committed, embedded into the query function at compile time) is
//! exactly what web/src builds, and its script and style stay under the 150 KB gzip
//! budget. dist/ is committed so a clone builds the functions with cargo alone (SAM, CDK
//! and `cargo lambda build` need no Node step); this test is what keeps it honest.
//! Installs the page's build tools from the committed lockfile (`npm ci`) when needed.

use integration_tests::root;
use std::process::Command;

fn run(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({e}): install Node.js with npm"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn the_committed_page_is_what_the_sources_build_and_within_budget() {
    let web = root().join("web");
    let installed = web.join("node_modules/.package-lock.json");
    let stale = match (
        std::fs::metadata(&installed).and_then(|m| m.modified()),
        std::fs::metadata(web.join("package-lock.json")).and_then(|m| m.modified()),
    ) {
        (Ok(installed), Ok(lock)) => installed < lock,
        _ => true,
    };
    if stale {
        run(
            Command::new("npm")
                .current_dir(&web)
                .args(["ci", "--no-audit", "--no-fund"]),
            "npm ci in web/",
        );
    }
    let report = run(
        Command::new("node")
            .current_dir(&web)
            .args(["build.mjs", "--check"]),
        "node build.mjs --check (web/dist/index.html out of date? run `npm run build` in web/)",
    );
    eprintln!("web bundle: {}", report.trim());
}
