//! `cargo xtask dev`: the whole system on localhost.

use crate::tools::Result;

pub fn run(_args: &[String]) -> Result {
    Err("not implemented yet".into())
}
