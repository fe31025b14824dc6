//! `fleet revoke`: the box's certificate REVOKED and detached from its thing. IoT Core
//! refuses a revoked certificate on MQTT connect and the credentials provider refuses it
//! too, so the box can no longer get the credentials its HTTPS requests are signed with.
//! Credentials it got before stay valid until they expire (STS sessions cannot be revoked
//! one by one), so the thing also gets a `revoked` attribute: the functions refuse the box
//! by it within their registry cache TTL, on HTTPS and MQTT alike.

use crate::cli::RevokeArgs;
use crate::registry::{certificate_id, describe, Registry, REVOKED_ATTRIBUTE};
use aws_sdk_iot::types::{AttributePayload, CertificateStatus};

pub async fn run(registry: &Registry, args: RevokeArgs) -> Result<(), String> {
    let RevokeArgs { thing } = args;
    registry.known_thing(&thing).await?;
    let certificates = registry.certificates(&thing).await?;
    if certificates.is_empty() {
        return Err(format!(
            "box \"{thing}\" has no certificate attached: already revoked (or never enrolled)"
        ));
    }
    let mut revoked = 0;
    for arn in &certificates {
        let id = certificate_id(arn);
        let status = registry.certificate_status(arn).await?;
        if status != "REVOKED" {
            registry
                .iot
                .update_certificate()
                .certificate_id(id)
                .new_status(CertificateStatus::Revoked)
                .send()
                .await
                .map_err(|e| describe(&format!("UpdateCertificate {id} REVOKED"), e))?;
            revoked += 1;
        }
        registry
            .iot
            .detach_thing_principal()
            .thing_name(thing.as_str())
            .principal(arn)
            .send()
            .await
            .map_err(|e| describe(&format!("DetachThingPrincipal {id}"), e))?;
        println!("box {thing}: certificate {id} {status} -> REVOKED, detached");
    }
    let when = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    registry
        .iot
        .update_thing()
        .thing_name(thing.as_str())
        .attribute_payload(
            AttributePayload::builder()
                .attributes(REVOKED_ATTRIBUTE, when.as_str())
                .merge(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| describe(&format!("UpdateThing {thing} revoked={when}"), e))?;
    println!(
        "box {thing}: marked revoked at {when}; the functions refuse it within their registry \
         cache TTL (REGISTRY_CACHE_TTL, 60 s), even with credentials it got before"
    );
    if revoked == 0 {
        println!("box {thing}: its certificates were already revoked; now detached");
    }
    Ok(())
}
