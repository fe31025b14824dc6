//! Where the stream path keeps what it could not deliver: the IoT rule's error action
//! (`StreamRuleErrorQueue`) and the event source mappings' on-failure destination
//! (`StreamFailureQueue`). Locally an SQS queue is moto server's SQS, reached with the
//! real `aws-sdk-sqs` client; without moto the message is logged (never dropped without a
//! line saying so); tests use [`Destination::memory`].

use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OnceCell};

/// The rule's error action queue of the stacks.
pub const RULE_ERROR_QUEUE: &str = "StreamRuleErrorQueue";
/// The event source mappings' on-failure queue of the stacks.
pub const FAILURE_QUEUE: &str = "StreamFailureQueue";

/// Where failed messages go.
#[derive(Clone)]
pub enum Destination {
    /// An SQS queue (moto server's), created on first use.
    Sqs(SqsQueue),
    /// Kept in memory, for tests: [`Destination::messages`] and [`Destination::wait_for`].
    Memory(watch::Sender<Vec<Value>>),
    /// No queue: each message is logged at error level (its size, never its payload).
    Log(String),
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Sqs(queue) => write!(f, "Sqs({} at {})", queue.name, queue.endpoint),
            Destination::Memory(_) => f.write_str("Memory"),
            Destination::Log(name) => write!(f, "Log({name})"),
        }
    }
}

/// An SQS queue by name; its URL is asked for (`CreateQueue`, idempotent) on first use.
#[derive(Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    endpoint: String,
    name: String,
    url: Arc<OnceCell<String>>,
}

impl Destination {
    /// The queue `name` of the SQS at `endpoint` (moto server), or, without an endpoint,
    /// the error log naming `name`.
    pub fn sqs_or_log(endpoint: Option<&str>, name: &str) -> Destination {
        match endpoint {
            Some(endpoint) => Destination::Sqs(SqsQueue {
                client: sqs_client(endpoint),
                endpoint: endpoint.to_owned(),
                name: name.to_owned(),
                url: Arc::new(OnceCell::new()),
            }),
            None => Destination::Log(name.to_owned()),
        }
    }

    /// An in-memory destination.
    pub fn memory() -> Destination {
        Destination::Memory(watch::channel(Vec::new()).0)
    }

    /// What a memory destination holds (empty for the others).
    pub fn messages(&self) -> Vec<Value> {
        match self {
            Destination::Memory(sent) => sent.borrow().clone(),
            _ => Vec::new(),
        }
    }

    /// Waits until a memory destination holds at least `count` messages and returns them;
    /// `None` after `wait` (or for the other kinds).
    pub async fn wait_for(&self, count: usize, wait: Duration) -> Option<Vec<Value>> {
        let Destination::Memory(sent) = self else {
            return None;
        };
        let mut seen = sent.subscribe();
        let held = tokio::time::timeout(wait, seen.wait_for(|held| held.len() >= count))
            .await
            .ok()?
            .ok()?
            .clone();
        Some(held)
    }

    /// Keeps `message`, with a few short retries for SQS. `what` names it in the log
    /// lines. When it cannot be kept, an error line says so (with its size) and `Err`
    /// tells the caller.
    pub async fn send(&self, what: &str, message: &Value) -> Result<(), String> {
        let body = message.to_string();
        match self {
            Destination::Memory(sent) => {
                sent.send_modify(|held| held.push(message.clone()));
                Ok(())
            }
            Destination::Log(name) => {
                eprintln!(
                    "local-aws: stream: ERROR {what}: no {name} (no --moto-url): a message of {} bytes is kept only in this line: {}",
                    body.len(),
                    without_payload(message)
                );
                Ok(())
            }
            Destination::Sqs(queue) => {
                let mut last = String::new();
                for attempt in 0..3u32 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    }
                    match queue.send(&body).await {
                        Ok(()) => return Ok(()),
                        Err(why) => last = why,
                    }
                }
                let why = format!(
                    "{what}: cannot send a message of {} bytes to SQS {} at {}: {last}",
                    body.len(),
                    queue.name,
                    queue.endpoint
                );
                eprintln!(
                    "local-aws: stream: ERROR {why}; lost: {}",
                    without_payload(message)
                );
                Err(why)
            }
        }
    }
}

impl SqsQueue {
    async fn send(&self, body: &str) -> Result<(), String> {
        let url = self
            .url
            .get_or_try_init(|| async {
                let created = self
                    .client
                    .create_queue()
                    .queue_name(&self.name)
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "CreateQueue: {}",
                            aws_sdk_sqs::error::DisplayErrorContext(&e)
                        )
                    })?;
                created
                    .queue_url()
                    .map(str::to_owned)
                    .ok_or_else(|| "CreateQueue answered no QueueUrl".to_owned())
            })
            .await?;
        self.client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "SendMessage: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(&e)
                )
            })
    }
}

/// The real SQS client for `endpoint` (moto server): static test credentials, `us-east-1`,
/// SDK retries off ([`Destination::send`] retries).
pub fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&crate::sdk::local(endpoint))
}

/// `message` for a log line: a rule error message's payload replaced by its size.
fn without_payload(message: &Value) -> Value {
    let mut shown = message.clone();
    if let Some(payload) = shown
        .get_mut("base64OriginalPayload")
        .map(|payload| payload.take())
    {
        let size = payload.as_str().map_or(0, str::len);
        shown["base64OriginalPayload"] = Value::String(format!("<{size} base64 characters>"));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn log_lines_carry_no_payload() {
        let shown = without_payload(&json!({"ruleName": "r", "base64OriginalPayload": "c2VjcmV0"}));
        assert_eq!(
            shown,
            json!({"ruleName": "r", "base64OriginalPayload": "<8 base64 characters>"})
        );
    }

    #[tokio::test]
    async fn memory_keeps_in_order() {
        let destination = Destination::memory();
        destination.send("t", &json!(1)).await.unwrap();
        destination.send("t", &json!(2)).await.unwrap();
        let held = destination
            .wait_for(2, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(held, vec![json!(1), json!(2)]);
        assert!(destination
            .wait_for(3, Duration::from_millis(10))
            .await
            .is_none());
    }
}
