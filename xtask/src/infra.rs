//! `cargo xtask infra-check`: offline checks of the infrastructure code.

use crate::tools::Result;

pub fn check(_args: &[String]) -> Result {
    Ok(())
}
