//! `cargo xtask dev`: the whole system on localhost.
//!
//! Installs what is missing (cargo-lambda and osmem-server into `target/venv`), then starts
//! osmem-server (unless `OPENSEARCH_URL` is set) with the index templates applied, the IoT
//! registry (moto's control plane, the simulated box registered in it), the
//! `local-aws` binary (MQTT broker, IoT data-plane endpoint, API Gateway emulator) and
//! `cargo lambda watch` serving the three ingest functions, the no-data check and the
//! `query` function (the read API and the page on http://127.0.0.1:3000/). Each peer runs in its own process
//! group; Ctrl-C (or SIGTERM, or any peer dying) stops every group and frees the ports.
//!
//! This file only orders the steps; each step is a submodule.

mod build;
mod functions;
mod local_aws;
mod no_data_schedule;
mod opensearch_peer;
mod options;
mod peers;
mod ports;
mod registry;
mod simulated_box;
mod summary;

use crate::opensearch::ensure_osmem_server;
use crate::tools::{self, root, Result};
use opensearch_peer::Source;
use peers::Peers;

const HOST: &str = "127.0.0.1";
/// The simulated box's IoT thing (its device certificate is issued by local-aws).
const BOX_THING: &str = "sensorbox-box-1";
/// The simulated box's group: its `groupid` attribute in the registry.
const BOX_GROUP: &str = "box-1";
/// The role alias of the local credentials provider (the stacks' `SensorBoxRoleAlias`).
const ROLE_ALIAS: &str = "local-sensor-box";
/// The Lambda functions `cargo lambda watch` serves (binary = function name).
const FUNCTIONS: [&str; 3] = ["gasdetector", "dust", "temp"];
/// The read API and the page (`GET /`, `GET /api/...` through the gateway).
const QUERY: &str = "query";

pub fn run(args: &[String]) -> Result {
    let Some(options) = options::parse(args)? else {
        return Ok(());
    };
    let ports = &options.ports;
    let user_opensearch = std::env::var("OPENSEARCH_URL")
        .ok()
        .filter(|url| !url.trim().is_empty());

    ports::check_free(ports, user_opensearch.is_none(), options.stream)?;
    let mut peers = Peers::new()?;

    let cargo_lambda = tools::ensure_cargo_lambda()?;
    tools::ensure_mosquitto()?;
    // The "try it" lines below subscribe with `mosquitto_sub` (Debian's
    // mosquitto-clients): installed as root, otherwise named; the stack runs without it.
    if let Err(e) = tools::ensure_debian_package("/usr/bin/mosquitto_sub", "mosquitto-clients") {
        eprintln!("note: {e}");
    }
    let opensearch = match user_opensearch {
        Some(url) => Source::User(url),
        None => Source::Osmem(ensure_osmem_server()?),
    };
    build::build(&options)?;

    let logs = root().join("target").join("dev");
    std::fs::create_dir_all(&logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
    let opensearch_url = opensearch_peer::start(&mut peers, &opensearch, ports.opensearch, &logs)?;
    let moto = registry::start(&mut peers, &logs)?;
    functions::start_watch(&mut peers, &cargo_lambda, &options, &opensearch_url, &logs)?;
    functions::warm_up_all(&mut peers, ports.watch)?;
    // The broker, the IoT endpoint and the gateway last: the gateway's port opens only
    // once every function behind it answers.
    local_aws::start(&mut peers, &options, &logs, &moto)?;

    // `cargo lambda invoke` sends to [::1] by default; watch listens on 127.0.0.1 only
    // (loopback, never the LAN), so relay the IPv6 loopback port to it.
    let invoke_flag = match ports::forward_ipv6_loopback(ports.watch) {
        Ok(()) => "",
        Err(e) => {
            eprintln!("note: {e}; pass -A {HOST} to cargo lambda invoke");
            " -A 127.0.0.1"
        }
    };

    summary::print(&options, &opensearch_url, invoke_flag);
    no_data_schedule::start(ports.watch);
    if options.simulated_box {
        simulated_box::start(&mut peers, &options, &logs)?;
    }
    peers.serve()
}
