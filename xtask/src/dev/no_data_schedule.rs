//! The scheduled no-data check, as EventBridge runs it on AWS: `nodata` invoked with a
//! scheduled event every minute.

use super::functions::invoke;
use crate::tools::root;
use std::time::Duration;

/// Invokes `nodata` every minute on a thread that ends with the process.
pub fn start(watch_port: u16) {
    let event = std::fs::read_to_string(root().join("events/nodata/scheduled.json"))
        .unwrap_or_else(|_| "{}".into());
    std::thread::spawn(move || {
        let mut failing = false;
        loop {
            std::thread::sleep(Duration::from_secs(60));
            match invoke(watch_port, "nodata", &event, Duration::from_secs(10)) {
                Some((200, _)) => failing = false,
                // Said once per failure streak, not every minute.
                other if !failing => {
                    failing = true;
                    eprintln!("note: the scheduled no-data check failed: {other:?}");
                }
                _ => {}
            }
        }
    });
}
