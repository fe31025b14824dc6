//! The running agent: one reader task per sensor, one writer that validates lines and
//! commits them to the queue in batches, and the sender that drains it.
//!
//! Readings taken while the clock is unsynchronised are held in memory (bounded) with
//! their monotonic time and stamped once the clock is right (`now - elapsed`), so no
//! reading is filed under 1970 and none is dropped for want of a time.

use crate::clock::{self, ClockState};
use crate::config::{ClockPolicy, Config, SourceSpec, Transport};
use crate::credentials::{CredentialsCache, Provider};
use crate::mqtt::Link;
use crate::queue::Queue;
use crate::reading::{QueuedReading, ReadingBuilder};
use crate::sender::{Iam, Sender};
use crate::source::{AnySource, Source};
use chrono::Utc;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};

/// Readings held while the clock is wrong; beyond this the oldest go (counted).
const HELD_MAX: usize = 10_000;

struct Line {
    sensor: usize,
    text: String,
    at: Instant,
}

pub async fn run(config: Config) -> Result<(), String> {
    crate::mqtt::install_crypto_provider();
    let queue =
        Queue::open(&config.queue.path, config.queue.max_readings).map_err(|e| e.to_string())?;
    let queue = Arc::new(Mutex::new(queue));
    let wake = Arc::new(Notify::new());
    let (lines_tx, lines_rx) = mpsc::channel::<Line>(1024);
    for (index, sensor) in config.sensors.iter().enumerate() {
        let (spec, route, interval) = (sensor.source.clone(), sensor.route, sensor.interval);
        tokio::spawn(read_sensor(index, spec, route, interval, lines_tx.clone()));
    }
    drop(lines_tx);
    let builders: Vec<ReadingBuilder> = config
        .sensors
        .iter()
        .map(|s| {
            ReadingBuilder::new(
                config.group.clone(),
                config.gps.clone(),
                config.thing_name.clone(),
                s,
            )
        })
        .collect();
    tokio::spawn(write_readings(
        lines_rx,
        builders,
        config.clock,
        queue.clone(),
        wake.clone(),
    ));

    let client = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .connect_timeout(config.request_timeout)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let sender = Sender::new(
        client,
        config.api_url.clone(),
        config.api_key.clone(),
        queue.clone(),
    );
    // An unreadable certificate stops only the sender: readings are still taken and kept.
    let sender = match &config.iam {
        Some(iam) => Provider::new(iam, &config.thing_name, config.request_timeout).map(|p| {
            tracing::info!(
                credentials = %p.url(),
                region = iam.region,
                "HTTPS: per-box identity, posts SigV4-signed with this box's own credentials"
            );
            sender.with_iam(Iam {
                credentials: CredentialsCache::new(p),
                region: iam.region.clone(),
                thing: config.thing_name.clone(),
            })
        }),
        None => {
            if config.api_key.is_some() {
                tracing::info!(
                    "HTTPS: the legacy shared API key (weaker: [iam] gives the box its own identity)"
                );
            }
            Ok(sender)
        }
    };
    tracing::info!(
        group = config.group.as_str(),
        thing = config.thing_name,
        sensors = config.sensors.len(),
        queue = %config.queue.path.display(),
        api = %config.api_url,
        "sensorbox started"
    );
    if let Some(mqtt) = config.mqtt.clone() {
        let readings = (config.transport != Transport::Https).then(|| wake.clone());
        let mut link = Link::new(mqtt, config.thing_name.clone(), queue.clone(), readings);
        if config.transport == Transport::Stream {
            link = link.batched(config.group.as_str());
        }
        let queue = queue.clone();
        tokio::spawn(async move {
            let reason = link.run().await;
            tracing::error!("MQTT stopped: {reason}");
            if let Ok(mut q) = queue.lock() {
                let _ = q.set_status("mqtt", &format!("stopped: {reason}"));
            }
        });
    } else {
        tracing::info!("no [mqtt] section: no warnings are received on this box");
    }
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    if config.transport != Transport::Https {
        // Readings leave over MQTT (mqtt.rs); the HTTPS sender stays idle.
        shutdown.await;
    } else {
        let run = async {
            match sender {
                Ok(sender) => sender.run(wake).await,
                Err(reason) => reason,
            }
        };
        tokio::select! {
            reason = run => {
                tracing::error!("{reason}");
                if let Ok(mut q) = queue.lock() {
                    let _ = q.set_status("sender", &format!("stopped: {reason}"));
                }
                // Keep reading and queueing: nothing is lost while a person fixes the key.
                shutdown.await;
            }
            _ = &mut shutdown => {}
        }
    }
    tracing::info!("sensorbox stopping");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn read_sensor(
    index: usize,
    spec: SourceSpec,
    route: sensor_model::Sensor,
    interval: Duration,
    lines: mpsc::Sender<Line>,
) {
    loop {
        match AnySource::open(&spec, route, interval).await {
            Ok(mut source) => loop {
                match source.next_line().await {
                    Ok(Some(text)) if text.trim().is_empty() => continue,
                    Ok(Some(text)) => {
                        let line = Line {
                            sensor: index,
                            text,
                            at: Instant::now(),
                        };
                        if lines.send(line).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(sensor = index, route = route.name(), "source failed: {e}");
                        break;
                    }
                }
            },
            Err(e) => tracing::warn!(
                sensor = index,
                route = route.name(),
                "cannot open source: {e}"
            ),
        }
        if spec == SourceSpec::Stdin {
            tracing::info!(sensor = index, "stdin closed");
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

async fn write_readings(
    mut lines: mpsc::Receiver<Line>,
    builders: Vec<ReadingBuilder>,
    policy: ClockPolicy,
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
) {
    let mut held: VecDeque<Line> = VecDeque::new();
    let mut held_dropped = 0u64;
    // Built readings not yet committed (kept across a failed write, retried next tick).
    let mut pending: Vec<QueuedReading> = Vec::new();
    // The last time stamped per sensor: the document id includes the time, so two lines of
    // one sensor must never share a stamp (a fast script could print both at once).
    let mut last_stamp: Vec<Option<chrono::DateTime<Utc>>> = vec![None; builders.len()];
    let mut warned = false;
    loop {
        let received = tokio::time::timeout(Duration::from_secs(1), lines.recv()).await;
        let mut closed = false;
        match received {
            Ok(Some(line)) => held.push_back(line),
            Ok(None) => closed = true,
            Err(_) => {}
        }
        while let Ok(line) = lines.try_recv() {
            held.push_back(line);
        }
        while held.len() > HELD_MAX {
            held.pop_front();
            held_dropped += 1;
            tracing::warn!(
                held_dropped,
                "clock still unsynchronised: dropped the oldest held reading"
            );
        }
        let now = Utc::now();
        match clock::state(policy, now) {
            ClockState::Synced => warned = false,
            state => {
                if !warned && !held.is_empty() {
                    tracing::warn!(
                        ?state,
                        held = held.len(),
                        "clock not synchronised: holding readings until it is (set clock = \"system\" if this host keeps time without NTP)"
                    );
                    warned = true;
                }
                if closed && held.is_empty() {
                    return;
                }
                continue;
            }
        }
        let taken = Instant::now();
        for line in held.drain(..) {
            let Some(builder) = builders.get(line.sensor) else {
                continue;
            };
            let age = chrono::Duration::from_std(taken.saturating_duration_since(line.at))
                .unwrap_or_default();
            // Whole microseconds, as written into `createdtime`, before comparing.
            let taken_us = (now - age).timestamp_micros();
            let mut stamp = chrono::DateTime::<Utc>::from_timestamp_micros(taken_us).unwrap_or(now);
            if let Some(last) = last_stamp.get(line.sensor).copied().flatten() {
                if stamp <= last {
                    stamp = last + chrono::Duration::microseconds(1);
                }
            }
            if let Some(slot) = last_stamp.get_mut(line.sensor) {
                *slot = Some(stamp);
            }
            match builder.build(&line.text, stamp) {
                Ok(reading) => pending.push(reading),
                Err(e) => tracing::warn!(
                    sensor = line.sensor,
                    route = builder.route().name(),
                    field = e.field(),
                    "reading dropped, the API would refuse it: {}",
                    e.message()
                ),
            }
        }
        if !pending.is_empty() {
            let queue = queue.clone();
            let batch = std::mem::take(&mut pending);
            let result = tokio::task::spawn_blocking(move || {
                let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                let result = q.enqueue(&batch);
                (batch, result)
            })
            .await;
            match result {
                Ok((_, Ok(dropped))) => {
                    if dropped > 0 {
                        tracing::warn!(dropped, "queue full: dropped the oldest readings");
                    }
                    wake.notify_one();
                }
                Ok((batch, Err(e))) => {
                    tracing::error!(waiting = batch.len(), "{e}; retrying");
                    pending = batch;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => tracing::error!("queue task failed: {e}"),
            }
        }
        if closed && pending.is_empty() {
            return;
        }
    }
}
