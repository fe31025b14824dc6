//! `fleet move`: a box's group is its `groupid` attribute; change it, conditional on the
//! version read, so two operators cannot silently overwrite each other.

use crate::cli::MoveArgs;
use crate::registry::{describe, group_of, Registry, GROUP_ATTRIBUTE};
use aws_sdk_iot::types::AttributePayload;

pub async fn run(registry: &Registry, args: MoveArgs) -> Result<(), String> {
    let MoveArgs { thing, group } = args;
    let current = registry.known_thing(&thing).await?;
    let from = group_of(&current).unwrap_or("none").to_string();
    if from == group.as_str() {
        println!("box {thing} is already in group {group}; nothing changed");
        return Ok(());
    }
    let mut update = registry
        .iot
        .update_thing()
        .thing_name(thing.as_str())
        .attribute_payload(
            AttributePayload::builder()
                .attributes(GROUP_ATTRIBUTE, group.as_str())
                .merge(true)
                .build(),
        );
    if current.version() > 0 {
        update = update.expected_version(current.version());
    }
    update
        .send()
        .await
        .map_err(|e| describe(&format!("UpdateThing {thing}"), e))?;
    println!(
        "moved box {thing} from group {from} to {group}: the functions take its readings for {group} \
         (and refuse {from}) within their registry cache TTL (REGISTRY_CACHE_TTL, 60 s). Set \
         groupid = \"{group}\" in the box's config too."
    );
    Ok(())
}
