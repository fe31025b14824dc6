//! An AWS IoT data-plane endpoint speaking the real `Publish` API
//! (`POST /topics/{topic}?qos=0|1&retain=true|false`, restJson1) and relaying each valid
//! publish to the embedded broker. Requests may be SigV4-signed (the signature is not
//! checked). Errors have the real service's shape: the status code, an
//! `x-amzn-ErrorType` header and a `{"message": ...}` body, which `aws-sdk-iotdataplane`
//! turns into the matching `PublishError` variant. It also serves the Device Shadow API
//! (classic and named shadows with versions and conflicts: [`crate::shadow`]).

use crate::aws_error::error;
use crate::http::{self, BodyError, HttpResponse, Server};
use crate::mqtt_publisher::MqttPublisher;
use crate::shadow::Shadows;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde_json::json;
use std::io;
use std::net::SocketAddr;

/// AWS IoT Core limits for a data-plane publish.
pub const MAX_PAYLOAD: usize = 128 * 1024;
pub const MAX_TOPIC_BYTES: usize = 256;
pub const MAX_TOPIC_SLASHES: usize = 7;

pub struct IotEndpoint {
    server: Server,
    shadows: Shadows,
}

impl IotEndpoint {
    /// Binds `addr` (port 0 picks a free port) and relays publishes to `publisher`.
    pub async fn start(addr: SocketAddr, publisher: MqttPublisher) -> io::Result<IotEndpoint> {
        let shadows = Shadows::default();
        let served = shadows.clone();
        let server = http::serve(addr, move |request, _peer| {
            let publisher = publisher.clone();
            let shadows = served.clone();
            async move { handle(request, publisher, shadows).await }
        })
        .await?;
        Ok(IotEndpoint { server, shadows })
    }

    /// The shadows this endpoint holds (tests read them directly).
    pub fn shadows(&self) -> &Shadows {
        &self.shadows
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The value for `AWS_ENDPOINT_URL_IOT_DATA_PLANE`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }
}

/// Checks a topic the way IoT Core does for a data-plane publish.
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("Topic name must not be empty".into());
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(format!(
            "Topic name is {} bytes long; the maximum is {MAX_TOPIC_BYTES} bytes",
            topic.len()
        ));
    }
    let slashes = topic.matches('/').count();
    if slashes > MAX_TOPIC_SLASHES {
        return Err(format!(
            "Topic name has {slashes} forward slashes; the maximum is {MAX_TOPIC_SLASHES}"
        ));
    }
    if topic.contains(['+', '#']) {
        return Err("Topic name must not contain the wildcard characters + or #".into());
    }
    if topic.contains('\0') {
        return Err("Topic name must not contain the NUL character".into());
    }
    if topic.starts_with('$') {
        return Err(format!(
            "Topic {topic} is a reserved topic: the local endpoint does not emulate $ topics"
        ));
    }
    Ok(())
}

async fn handle(
    request: Request<Incoming>,
    publisher: MqttPublisher,
    shadows: Shadows,
) -> HttpResponse {
    let path = request.uri().path().to_owned();
    if path.starts_with("/things/") || path.starts_with("/api/things/") {
        if let Some(response) = shadows.handle(request, &path).await {
            return response;
        }
        return error(
            404,
            "ResourceNotFoundException",
            &format!("No such operation: {path}"),
        );
    }
    let Some(raw_topic) = path.strip_prefix("/topics/") else {
        return error(
            404,
            "ResourceNotFoundException",
            &format!("No such operation: {} {path}", request.method()),
        );
    };
    if request.method() != Method::POST {
        return error(
            405,
            "MethodNotAllowedException",
            &format!(
                "Method {} is not allowed on /topics/{{topic}}",
                request.method()
            ),
        );
    }
    let Some(topic) = http::percent_decode(raw_topic) else {
        return error(
            400,
            "InvalidRequestException",
            "Topic name is not valid percent-encoded UTF-8",
        );
    };
    let mut qos = 0u8;
    let mut retain = false;
    for (key, value) in http::query_pairs(request.uri().query()) {
        match key.as_str() {
            "qos" => match value.as_str() {
                "0" => qos = 0,
                "1" => qos = 1,
                other => {
                    return error(
                        400,
                        "InvalidRequestException",
                        &format!("Invalid qos {other:?}: only QoS 0 and 1 are supported"),
                    )
                }
            },
            "retain" => match value.as_str() {
                "true" => retain = true,
                "false" => retain = false,
                other => {
                    return error(
                        400,
                        "InvalidRequestException",
                        &format!("Invalid retain {other:?}: expected true or false"),
                    )
                }
            },
            // MQTT 5 properties (contentType, responseTopic, messageExpiry) are accepted
            // and dropped: the local broker is spoken to in MQTT 3.1.1.
            _ => {}
        }
    }
    if let Err(message) = check_topic(&topic) {
        return error(400, "InvalidRequestException", &message);
    }
    let payload: Bytes = match http::read_body(request.into_body(), MAX_PAYLOAD).await {
        Ok(payload) => payload,
        Err(BodyError::TooLarge) => {
            return error(
                413,
                "RequestEntityTooLargeException",
                &format!("Payload exceeds the maximum size of {MAX_PAYLOAD} bytes"),
            )
        }
        Err(BodyError::Read(e)) => {
            return error(
                400,
                "InvalidRequestException",
                &format!("Cannot read the request body: {e}"),
            )
        }
    };
    if let Err(why) = publisher.publish(&topic, payload, qos, retain).await {
        return error(503, "ServiceUnavailableException", &why);
    }
    let id = http::request_id();
    http::json(
        200,
        &json!({ "message": "OK", "traceId": id }),
        &[("x-amzn-RequestId", &id)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert!(check_topic("pi/2").is_ok());
        assert!(check_topic("a/b/c/d/e/f/g/h").is_ok());
        assert!(check_topic("a/b/c/d/e/f/g/h/i").is_err());
        assert!(check_topic("").is_err());
        assert!(check_topic(&"x".repeat(256)).is_ok());
        assert!(check_topic(&"x".repeat(257)).is_err());
        assert!(check_topic("pi/+").is_err());
        assert!(check_topic("pi/#").is_err());
        assert!(check_topic("$aws/things/x/shadow/update").is_err());
    }
}
