//! The local stack's TCP ports: checked free before anything starts, probed until a peer
//! listens, and the watch port relayed from the IPv6 loopback for `cargo lambda invoke`.

use super::options::Ports;
use super::HOST;
use crate::tools::Result;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Fails early and clearly on a taken or doubly given port, before installing or
/// building anything (the osmem-server port only when osmem-server is started).
pub fn check_free(ports: &Ports, with_osmem: bool, with_stream: bool) -> Result {
    let mut wanted = vec![
        (ports.mqtt, "MQTT broker (--mqtt-port)"),
        (ports.mqtts, "MQTT broker, TLS (--mqtts-port)"),
        (ports.iot, "IoT data-plane endpoint (--iot-port)"),
        (ports.watch, "cargo lambda watch (--watch-port)"),
        (ports.gateway, "gateway (--gateway-port)"),
        (ports.registry, "IoT registry (--registry-port)"),
        (
            ports.credentials,
            "IoT credentials provider (--credentials-port)",
        ),
    ];
    if with_osmem {
        wanted.push((ports.opensearch, "osmem-server (--opensearch-port)"));
    }
    if with_stream {
        wanted.push((ports.kinesis, "Kinesis emulator (--kinesis-port)"));
    }
    for (i, (port, what)) in wanted.iter().enumerate() {
        if let Some((_, other)) = wanted[..i].iter().find(|(p, _)| p == port) {
            return Err(format!("port {port} is given to both {other} and {what}"));
        }
        if let Err(e) = TcpListener::bind((HOST, *port)) {
            return Err(format!(
                "port {port} for the {what} is not free on {HOST} ({e}); \
                 stop what uses it or pick another port"
            ));
        }
    }
    Ok(())
}

/// Whether something listens on `127.0.0.1:port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Listens on `[::1]:port` and pipes every connection to `127.0.0.1:port`, on threads that
/// end with the process.
pub fn forward_ipv6_loopback(port: u16) -> Result {
    let listener = TcpListener::bind(("::1", port))
        .map_err(|e| format!("cannot listen on [::1]:{port} ({e})"))?;
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(upstream) = TcpStream::connect((HOST, port)) else {
                    return;
                };
                let (Ok(mut client_read), Ok(mut upstream_read)) =
                    (client.try_clone(), upstream.try_clone())
                else {
                    return;
                };
                let (mut client_write, mut upstream_write) = (client, upstream);
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client_read, &mut upstream_write);
                    let _ = upstream_write.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut upstream_read, &mut client_write);
                let _ = client_write.shutdown(std::net::Shutdown::Write);
                let _ = up.join();
            });
        }
    });
    Ok(())
}
