//! `fleet list`: every box with its group, its certificates' status and, from its classic
//! shadow (the connect report and the Last Will), whether it is connected and since when.

use crate::registry::{certificate_id, describe, Registry};
use serde_json::Value;

pub async fn run(registry: &Registry) -> Result<(), String> {
    let mut things = Vec::new();
    // Boxes `fleet revoke` retired (their certificates detached, so none shows).
    let mut revoked = Vec::new();
    let mut pages = registry.iot.list_things().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| describe("ListThings", e))?;
        for thing in page.things() {
            if let Some(name) = thing.thing_name() {
                let group = thing
                    .attributes()
                    .and_then(|a| a.get(crate::registry::GROUP_ATTRIBUTE))
                    .cloned();
                if thing
                    .attributes()
                    .is_some_and(|a| a.contains_key(crate::registry::REVOKED_ATTRIBUTE))
                {
                    revoked.push(name.to_string());
                }
                things.push((name.to_string(), group));
            }
        }
    }
    let shadows = registry.data_plane().await.ok();
    println!(
        "{:<32} {:<20} {:<22} {:<10} LAST CHANGE",
        "BOX", "GROUP", "CERTIFICATE", "CONNECTED"
    );
    for (name, group) in things {
        let Ok(thing) = sensor_model::domain::thing_name::ThingName::parse(&name) else {
            continue;
        };
        let certificates = registry.certificates(&thing).await?;
        let certificate = match certificates.first() {
            Some(arn) => format!(
                "{}.. {}",
                certificate_id(arn).chars().take(8).collect::<String>(),
                registry.certificate_status(arn).await?
            ),
            None if revoked.contains(&name) => "revoked".into(),
            None => "none".into(),
        };
        let (connected, since) = match &shadows {
            Some(client) => connection(client, &name).await,
            None => ("?".into(), "-".into()),
        };
        let group = group.unwrap_or_else(|| "(none)".into());
        println!("{name:<32} {group:<20} {certificate:<22} {connected:<10} {since}");
    }
    Ok(())
}

/// `state.reported.connected` and the time of its last change, from the thing's classic
/// shadow (what the connect and Last Will rules write).
async fn connection(client: &aws_sdk_iotdataplane::Client, thing: &str) -> (String, String) {
    let Ok(output) = client.get_thing_shadow().thing_name(thing).send().await else {
        return ("never".into(), "-".into());
    };
    let shadow: Value = output
        .payload()
        .and_then(|p| serde_json::from_slice(p.as_ref()).ok())
        .unwrap_or(Value::Null);
    let reported = &shadow["state"]["reported"];
    let connected = match reported["connected"].as_bool() {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    };
    let at = if connected == "yes" {
        &reported["connectedAt"]
    } else {
        &reported["lastWillAt"]
    };
    let since = at.as_i64().and_then(utc).unwrap_or_else(|| "-".into());
    (connected.into(), since)
}

/// Epoch milliseconds as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn epoch_milliseconds_print_as_utc() {
        assert_eq!(super::utc(0).as_deref(), Some("1970-01-01 00:00:00 UTC"));
        assert_eq!(
            super::utc(1_796_391_740_843).as_deref(),
            Some("2026-12-04 13:42:20 UTC")
        );
    }
}
