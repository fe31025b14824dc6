//! `fleet enroll`: one box, one thing, one certificate from its own CSR.

use crate::cli::EnrollArgs;
use crate::registry::{certificate_id, describe, Registry, GROUP_ATTRIBUTE};
use aws_sdk_iot::types::{AttributePayload, CertificateStatus, ThingPrincipalType};

pub async fn run(registry: &Registry, args: EnrollArgs) -> Result<(), String> {
    let EnrollArgs {
        csr,
        thing,
        group,
        policy,
        cert_out,
    } = args;
    if cert_out.exists() {
        return Err(format!(
            "{} exists; give --cert-out a new file",
            cert_out.display()
        ));
    }
    if let Some(existing) = registry.thing(&thing).await? {
        let group = crate::registry::group_of(&existing).unwrap_or("none");
        return Err(format!(
            "box \"{thing}\" is already enrolled (group {group}); `fleet move` changes its group, `fleet revoke` retires its certificate"
        ));
    }
    registry
        .iot
        .create_thing()
        .thing_name(thing.as_str())
        .attribute_payload(
            AttributePayload::builder()
                .attributes(GROUP_ATTRIBUTE, group.as_str())
                .build(),
        )
        .send()
        .await
        .map_err(|e| describe(&format!("CreateThing {thing}"), e))?;
    let certificate = match registry
        .iot
        .create_certificate_from_csr()
        .certificate_signing_request(csr.pem())
        .set_as_active(true)
        .send()
        .await
    {
        Ok(output) => output,
        Err(e) => {
            let why = describe("CreateCertificateFromCsr", e);
            undo_thing(registry, &thing).await;
            return Err(why);
        }
    };
    let (Some(arn), Some(pem)) = (
        certificate.certificate_arn().map(str::to_string),
        certificate.certificate_pem().map(str::to_string),
    ) else {
        undo_thing(registry, &thing).await;
        return Err("CreateCertificateFromCsr answered without a certificate".into());
    };
    let attached = async {
        registry
            .iot
            .attach_policy()
            .policy_name(&policy)
            .target(&arn)
            .send()
            .await
            .map_err(|e| describe(&format!("AttachPolicy {policy}"), e))?;
        registry
            .iot
            .attach_thing_principal()
            .thing_name(thing.as_str())
            .principal(&arn)
            .thing_principal_type(ThingPrincipalType::ExclusiveThing)
            .send()
            .await
            .map_err(|e| describe("AttachThingPrincipal (exclusive)", e))?;
        std::fs::write(&cert_out, &pem)
            .map_err(|e| format!("cannot write {}: {e}", cert_out.display()))
    }
    .await;
    if let Err(why) = attached {
        undo_certificate(registry, &arn, &policy, &thing).await;
        undo_thing(registry, &thing).await;
        return Err(why);
    }
    let endpoint = registry
        .data_endpoint()
        .await
        .unwrap_or_else(|e| format!("<{e}>"));
    let credentials = registry
        .credentials_endpoint()
        .await
        .unwrap_or_else(|e| format!("<{e}>"));
    println!(
        "enrolled box {thing} in group {group}: certificate {id} (ACTIVE), written to {out}\n\
         \n\
         Copy {out} to the box (the path of [mqtt] cert), and put these lines in its config:\n\
         \n\
         thing_name = \"{thing}\"\n\
         groupid = \"{group}\"\n\
         [mqtt]\n\
         endpoint = \"{endpoint}\"\n\
         cert = \"/etc/sensorbox/{thing}.cert.pem\"\n\
         [iam]\n\
         credentials_endpoint = \"{credentials}\"\n\
         role_alias = \"<the stack output SensorBoxRoleAlias>\"",
        id = certificate_id(&arn),
        out = cert_out.display(),
    );
    Ok(())
}

/// Best effort: a failed enrolment leaves no thing behind.
async fn undo_thing(registry: &Registry, thing: &sensor_model::domain::thing_name::ThingName) {
    if let Err(e) = registry
        .iot
        .delete_thing()
        .thing_name(thing.as_str())
        .send()
        .await
    {
        eprintln!(
            "fleet: could not remove the half-enrolled thing {thing}: {}; remove it by hand",
            describe("DeleteThing", e)
        );
    }
}

/// Best effort: a failed enrolment leaves no usable certificate behind.
async fn undo_certificate(
    registry: &Registry,
    arn: &str,
    policy: &str,
    thing: &sensor_model::domain::thing_name::ThingName,
) {
    let id = certificate_id(arn);
    let _ = registry
        .iot
        .detach_thing_principal()
        .thing_name(thing.as_str())
        .principal(arn)
        .send()
        .await;
    let _ = registry
        .iot
        .detach_policy()
        .policy_name(policy)
        .target(arn)
        .send()
        .await;
    let _ = registry
        .iot
        .update_certificate()
        .certificate_id(id)
        .new_status(CertificateStatus::Inactive)
        .send()
        .await;
    if let Err(e) = registry
        .iot
        .delete_certificate()
        .certificate_id(id)
        .send()
        .await
    {
        eprintln!(
            "fleet: certificate {id} is INACTIVE but not deleted ({}); delete it by hand",
            describe("DeleteCertificate", e)
        );
    }
}
