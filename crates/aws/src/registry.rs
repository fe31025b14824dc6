//! The IoT registry through `aws-sdk-iot`'s `DescribeThing`: a box's `groupid` attribute.
//! Read-only: the functions' role has `iot:DescribeThing` on `thing/*` and nothing else of
//! the control plane; enrolling and moving boxes is the operator's `fleet` CLI.

use crate::iot::classify;
use aws_sdk_iot::config::retry::RetryConfig;
use aws_sdk_iot::config::StalledStreamProtectionConfig;
use aws_sdk_iot::error::SdkError;
use aws_sdk_iot::operation::describe_thing::DescribeThingError;
use aws_sdk_iot::Client;
use sensor_core::ports::{DownstreamError, Registration, Registry};
use sensor_model::domain::group_id::GroupId;
use sensor_model::domain::thing_name::ThingName;

// Credentials a box got before `fleet revoke` stay valid for their lifetime, so the binding
// refuses it by the `revoked` attribute.
pub use sensor_model::domain::thing_name::{GROUP_ATTRIBUTE, REVOKED_ATTRIBUTE};

#[derive(Debug, Clone)]
pub struct IotRegistry {
    client: Client,
}

impl IotRegistry {
    /// `endpoint`: the control plane's URL when not AWS's own (the local stack's).
    pub fn new(sdk_config: &aws_config::SdkConfig, endpoint: Option<&str>) -> IotRegistry {
        let mut config = aws_sdk_iot::config::Builder::from(sdk_config)
            // The one retry (sensor_core::retry) owns retries, bounded by the deadline.
            .retry_config(RetryConfig::disabled())
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        IotRegistry {
            client: Client::from_conf(config.build()),
        }
    }
}

impl Registry for IotRegistry {
    async fn lookup(&self, thing: &ThingName) -> Result<Registration, DownstreamError> {
        match self
            .client
            .describe_thing()
            .thing_name(thing.as_str())
            .send()
            .await
        {
            Ok(output) => {
                let attribute = |name| {
                    output
                        .attributes()
                        .and_then(|attributes| attributes.get(name))
                        .map(String::as_str)
                };
                Ok(registration(
                    attribute(GROUP_ATTRIBUTE),
                    attribute(REVOKED_ATTRIBUTE),
                ))
            }
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), DescribeThingError::ResourceNotFoundException(_)) =>
            {
                Ok(Registration::Unknown)
            }
            Err(e) => Err(classify("IoT DescribeThing", e)),
        }
    }
}

/// What a thing's `groupid` and `revoked` attributes (if any) make of it.
fn registration(groupid: Option<&str>, revoked: Option<&str>) -> Registration {
    if let Some(when) = revoked {
        return Registration::Revoked(when.to_string());
    }
    match groupid {
        None => Registration::NoGroup,
        Some(value) => match GroupId::parse(value) {
            Ok(group) => Registration::Group(group),
            Err(_) => Registration::BadGroup(value.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attribute_binds_a_valid_group_only() {
        assert_eq!(
            registration(Some("site-7"), None),
            Registration::Group(GroupId::parse("site-7").expect("groupid"))
        );
        assert_eq!(registration(None, None), Registration::NoGroup);
        assert_eq!(
            registration(Some("a/b"), None),
            Registration::BadGroup("a/b".into())
        );
        assert_eq!(
            registration(Some(""), None),
            Registration::BadGroup(String::new())
        );
        assert_eq!(
            registration(Some("site-7"), Some("2026-12-04T16:00:00Z")),
            Registration::Revoked("2026-12-04T16:00:00Z".into())
        );
    }
}
