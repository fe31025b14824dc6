//! `fleet`: the operator's commands for the boxes' identities in the IoT registry, which
//! is the one source of truth for a box's group (DESIGN.md, "Identity: one per box").
//!
//! ```text
//! fleet enroll --csr box.csr.pem --thing pi-19 --group site-7 --policy <SensorBoxPolicyName>
//! fleet move pi-19 site-8
//! fleet list
//! fleet revoke pi-19
//! ```
//!
//! Every input is checked before the first call, so bad input changes nothing. The
//! registry is AWS's (the SDK's default credentials and region) or the one in
//! `AWS_ENDPOINT_URL_IOT` (the local stack's); a box's connection state comes from its
//! classic shadow on the data endpoint (`AWS_ENDPOINT_URL_IOT_DATA_PLANE`, or looked up).

mod cli;
mod csr;
mod enroll;
mod list;
mod move_box;
mod registry;
mod revoke;

use cli::Command;
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(Some(command)) => command,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet: {e}");
            return ExitCode::from(2);
        }
    };
    let registry = registry::Registry::connect(command.options()).await;
    let done = match command {
        Command::Enroll(args, _) => enroll::run(&registry, args).await,
        Command::Move(args, _) => move_box::run(&registry, args).await,
        Command::List(_) => list::run(&registry).await,
        Command::Revoke(args, _) => revoke::run(&registry, args).await,
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet: {e}");
            ExitCode::FAILURE
        }
    }
}
