//! The IoT control plane (`aws-sdk-iot`) and the data plane for the boxes' shadows, built
//! once from the SDK's default configuration, and the few registry reads the commands share.

use crate::cli::Options;
use aws_sdk_iot::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_iot::operation::describe_thing::DescribeThingOutput;
use sensor_model::domain::thing_name::ThingName;

/// The attribute that binds a box to its group (the functions read the same one).
pub use sensor_model::domain::thing_name::GROUP_ATTRIBUTE;
/// The attribute `fleet revoke` sets (the functions refuse a thing that has it).
pub use sensor_model::domain::thing_name::REVOKED_ATTRIBUTE;

pub struct Registry {
    pub iot: aws_sdk_iot::Client,
    config: aws_config::SdkConfig,
}

/// An SDK error as one line: the service's code and message, or what went wrong on the way.
pub fn describe<E, R>(what: &str, error: SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &error {
        SdkError::ServiceError(e) => format!(
            "{what}: {} {}",
            e.err().code().unwrap_or("error"),
            e.err().message().unwrap_or("")
        ),
        _ => format!("{what}: {}", DisplayErrorContext(error)),
    }
}

impl Registry {
    pub async fn connect(options: &Options) -> Registry {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &options.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let config = loader.load().await;
        let mut iot = aws_sdk_iot::config::Builder::from(&config);
        if let Some(endpoint) = options.endpoint.clone().or_else(|| {
            std::env::var("AWS_ENDPOINT_URL_IOT")
                .ok()
                .filter(|v| !v.is_empty())
        }) {
            iot = iot.endpoint_url(endpoint);
        }
        Registry {
            iot: aws_sdk_iot::Client::from_conf(iot.build()),
            config,
        }
    }

    /// The thing, or `None` when the registry has no such box.
    pub async fn thing(&self, thing: &ThingName) -> Result<Option<DescribeThingOutput>, String> {
        match self
            .iot
            .describe_thing()
            .thing_name(thing.as_str())
            .send()
            .await
        {
            Ok(output) => Ok(Some(output)),
            Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => Ok(None),
            Err(e) => Err(describe(&format!("DescribeThing {thing}"), e)),
        }
    }

    /// The thing, or an error naming the unknown box.
    pub async fn known_thing(&self, thing: &ThingName) -> Result<DescribeThingOutput, String> {
        self.thing(thing).await?.ok_or_else(|| {
            format!("no box \"{thing}\" in the registry (`fleet list` shows the boxes)")
        })
    }

    /// The certificate ARNs attached to `thing`.
    pub async fn certificates(&self, thing: &ThingName) -> Result<Vec<String>, String> {
        let output = self
            .iot
            .list_thing_principals()
            .thing_name(thing.as_str())
            .send()
            .await
            .map_err(|e| describe(&format!("ListThingPrincipals {thing}"), e))?;
        Ok(output
            .principals()
            .iter()
            .filter(|p| p.contains(":cert/"))
            .cloned()
            .collect())
    }

    /// A certificate's status (`ACTIVE`, `INACTIVE`, `REVOKED`, ...).
    pub async fn certificate_status(&self, arn: &str) -> Result<String, String> {
        let id = certificate_id(arn);
        let output = self
            .iot
            .describe_certificate()
            .certificate_id(id)
            .send()
            .await
            .map_err(|e| describe(&format!("DescribeCertificate {id}"), e))?;
        Ok(output
            .certificate_description()
            .and_then(|d| d.status())
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "unknown".into()))
    }

    /// The data-plane client for the boxes' shadows: `AWS_ENDPOINT_URL_IOT_DATA_PLANE`, or
    /// the account's `iot:Data-ATS` endpoint.
    pub async fn data_plane(&self) -> Result<aws_sdk_iotdataplane::Client, String> {
        let endpoint = match std::env::var("AWS_ENDPOINT_URL_IOT_DATA_PLANE")
            .ok()
            .filter(|v| !v.is_empty())
        {
            Some(url) => url,
            None => format!("https://{}", self.data_endpoint().await?),
        };
        let config = aws_sdk_iotdataplane::config::Builder::from(&self.config)
            .endpoint_url(endpoint)
            .build();
        Ok(aws_sdk_iotdataplane::Client::from_conf(config))
    }

    /// The account's `iot:Data-ATS` host, which the boxes connect to.
    pub async fn data_endpoint(&self) -> Result<String, String> {
        self.endpoint("iot:Data-ATS").await
    }

    /// The account's IoT credentials provider host (a box's `[iam] credentials_endpoint`).
    pub async fn credentials_endpoint(&self) -> Result<String, String> {
        self.endpoint("iot:CredentialProvider").await
    }

    async fn endpoint(&self, kind: &str) -> Result<String, String> {
        let output = self
            .iot
            .describe_endpoint()
            .endpoint_type(kind)
            .send()
            .await
            .map_err(|e| describe(&format!("DescribeEndpoint {kind}"), e))?;
        output
            .endpoint_address()
            .map(str::to_string)
            .ok_or_else(|| "DescribeEndpoint gave no address".into())
    }
}

/// The id at the end of a certificate ARN (`arn:aws:iot:<region>:<account>:cert/<id>`).
pub fn certificate_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The box's group as the registry holds it.
pub fn group_of(thing: &DescribeThingOutput) -> Option<&str> {
    thing
        .attributes()
        .and_then(|a| a.get(GROUP_ATTRIBUTE))
        .map(String::as_str)
}
