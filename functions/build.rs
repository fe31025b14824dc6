//! Build script shared by the function crates (`build = "../build.rs"`).
//!
//! Links the Lambda bootstrap as a position-dependent executable (`-no-pie`). A PIE of this
//! size carries ~44,000 relative relocations that the dynamic loader applies at every cold
//! start, and each touched page of `.data.rel.ro` becomes a private copy: measured here that
//! is ~0.8 ms of a ~2 ms init and ~2 MiB of RSS (BENCHMARKS.md). The price: the executable's
//! own code and data load at a fixed address (shared libraries, stack and heap are still
//! randomised), which weakens ASLR as a second line of defence against a memory-safety bug;
//! in safe Rust, with no `unsafe` of ours on the request path, we take that trade for a
//! function billed by init time.
//!
//! Only the binaries are affected (`rustc-link-arg-bins`): the library, tests and build
//! tools keep their defaults. Applies to Linux GNU targets (x86_64 here, aarch64 on AWS),
//! with the system linker or cargo-lambda's `zig cc`.
fn main() {
    println!("cargo:rerun-if-changed=../build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
