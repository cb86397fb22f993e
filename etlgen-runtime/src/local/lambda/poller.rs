//! One poller of one event source mapping: receive a batch, invoke, settle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName,
};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Mutex, watch};

use super::instance::{Instance, Outcome};
use super::{FunctionStats, Mapping, Status, status_of};

pub(super) struct Poller {
    pub(super) sqs: aws_sdk_sqs::Client,
    pub(super) mapping: Arc<Mapping>,
    pub(super) pool: Arc<Mutex<Vec<Instance>>>,
    pub(super) status: Arc<std::sync::Mutex<Status>>,
    pub(super) retry_delay: Duration,
}

impl Poller {
    pub(super) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // Outside `receive`, so a batch still gathering when the emulator stops is not lost.
        let mut gathered = Vec::new();
        while !*shutdown.borrow() {
            let received = tokio::select! {
                received = self.receive(&mut gathered) => received,
                _ = shutdown.changed() => break,
            };
            if let Err(e) = received {
                tracing::warn!(queue = %self.mapping.queue_url, error = %e, "receive failed");
                if gathered.is_empty() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            if !gathered.is_empty() {
                self.deliver(std::mem::take(&mut gathered)).await;
            }
        }
        // A batch that will never be invoked goes back to the queue now, instead of after
        // its visibility timeout (minutes, for a long function timeout).
        self.set_visibility(&gathered.iter().collect::<Vec<_>>(), 0)
            .await;
        for instance in self.pool.lock().await.drain(..) {
            instance.stop().await;
        }
    }

    /// One batch, into `messages`: up to `BatchSize` messages, gathered for at most the
    /// batching window.
    async fn receive(&self, messages: &mut Vec<Message>) -> Result<(), String> {
        let mapping = &self.mapping;
        let started = Instant::now();
        loop {
            let wanted = (mapping.batch_size - messages.len()).min(10) as i32;
            let wait = if messages.is_empty() {
                5
            } else {
                mapping
                    .window
                    .saturating_sub(started.elapsed())
                    .as_secs()
                    .min(20) as i32
            };
            let page = self
                .sqs
                .receive_message()
                .queue_url(&mapping.queue_url)
                .max_number_of_messages(wanted)
                .wait_time_seconds(wait)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
            let got = page.messages().len();
            messages.extend(page.messages().iter().cloned());
            let full = messages.len() >= mapping.batch_size;
            let window_over = started.elapsed() >= mapping.window;
            if messages.is_empty() || full || window_over || got == 0 {
                return Ok(());
            }
        }
    }

    async fn deliver(&self, messages: Vec<Message>) {
        let name = self.mapping.function.name.clone();
        let event = sqs_event(&self.mapping, &self.mapping.function.region, &messages);
        let mut pooled = None;
        while let Some(mut idle) = self.pool.lock().await.pop() {
            // An environment that died while idle (killed, or failed its init) is replaced.
            if idle.is_alive() {
                pooled = Some(idle);
                break;
            }
            idle.stop().await;
        }
        let mut instance = match pooled {
            Some(instance) => instance,
            None => match Instance::start(&self.mapping.function).await {
                Ok(instance) => {
                    self.update(|s| s.cold_starts += 1);
                    instance
                }
                Err(e) => {
                    tracing::error!(function = %name, error = %e, "cannot start the function");
                    self.settle(&messages, &[]).await;
                    tokio::time::sleep(self.retry_delay).await;
                    return;
                }
            },
        };
        let pid = instance.pid().unwrap_or_default();
        self.update(|s| {
            s.invocations += 1;
            s.messages_received += messages.len() as u64;
            s.busy_pids.push(pid);
        });
        let request_id = uuid::Uuid::from_u128(fastrand::u128(..)).to_string();
        let outcome = instance.invoke(request_id, event.into()).await;
        self.update(|s| s.busy_pids.retain(|p| *p != pid));
        let succeeded: Vec<&Message> = match &outcome {
            Outcome::Response(body) if self.mapping.reports_failures => {
                match failed_ids(body, &messages) {
                    Ok(failed) => messages
                        .iter()
                        .filter(|m| !failed.iter().any(|id| Some(id.as_str()) == m.message_id()))
                        .collect(),
                    Err(why) => {
                        tracing::warn!(function = %name, %why, "the whole batch fails");
                        Vec::new()
                    }
                }
            }
            Outcome::Response(_) => messages.iter().collect(),
            _ => Vec::new(),
        };
        match &outcome {
            Outcome::Response(_) => self.pool.lock().await.push(instance),
            Outcome::Error(message) => {
                tracing::warn!(function = %name, %message, "the invocation failed");
                self.update(|s| s.errors += 1);
                if instance.is_alive() {
                    self.pool.lock().await.push(instance);
                } else {
                    instance.stop().await;
                }
            }
            Outcome::Timeout => {
                tracing::warn!(function = %name, "the invocation timed out");
                self.update(|s| s.timeouts += 1);
                instance.stop().await;
            }
            Outcome::Crashed(message) => {
                tracing::warn!(function = %name, %message, "the process died mid-invocation");
                self.update(|s| s.crashes += 1);
                instance.stop().await;
            }
        }
        self.settle(&messages, &succeeded).await;
    }

    /// Deletes what succeeded; makes the rest visible again after the retry delay.
    async fn settle(&self, messages: &[Message], succeeded: &[&Message]) {
        let ok = succeeded.len() as u64;
        let failed = messages.len() as u64 - ok;
        self.update(|s| {
            s.messages_succeeded += ok;
            s.messages_failed += failed;
        });
        for chunk in succeeded.chunks(10) {
            let entries = chunk.iter().enumerate().filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle()?)
                    .build()
                    .ok()
            });
            let result = self
                .sqs
                .delete_message_batch()
                .queue_url(&self.mapping.queue_url)
                .set_entries(Some(entries.collect()))
                .send()
                .await;
            match result {
                Ok(out) if !out.failed().is_empty() => tracing::warn!(
                    failed = out.failed().len(),
                    "some handled messages could not be deleted; they will be delivered again"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "delete failed; the messages will be delivered again")
                }
            }
        }
        let retry: Vec<&Message> = messages
            .iter()
            .filter(|m| !succeeded.iter().any(|s| s.message_id() == m.message_id()))
            .collect();
        self.set_visibility(&retry, self.retry_delay.as_secs() as i32)
            .await;
    }

    /// Makes messages visible again after `seconds`.
    async fn set_visibility(&self, messages: &[&Message], seconds: i32) {
        for chunk in messages.chunks(10) {
            let entries = chunk.iter().enumerate().filter_map(|(i, m)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle()?)
                    .visibility_timeout(seconds)
                    .build()
                    .ok()
            });
            let result = self
                .sqs
                .change_message_visibility_batch()
                .queue_url(&self.mapping.queue_url)
                .set_entries(Some(entries.collect()))
                .send()
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "visibility change failed");
            }
        }
    }

    fn update(&self, change: impl FnOnce(&mut FunctionStats)) {
        let mut status = status_of(&self.status);
        if let Some(stats) = status.functions.get_mut(&self.mapping.function.name) {
            change(stats);
        }
    }
}

/// The message ids of a `{"batchItemFailures":[{"itemIdentifier":…}]}` response, read as
/// Lambda reads it: an empty or `null` body fails nothing; a body that is not such a
/// response, or an identifier that is empty or not in the batch, fails the whole batch.
fn failed_ids(body: &[u8], batch: &[Message]) -> Result<Vec<String>, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Response {
        #[serde(default)]
        batch_item_failures: Option<Vec<Item>>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Item {
        item_identifier: Option<String>,
    }
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() || text.trim() == "null" {
        return Ok(Vec::new());
    }
    let response: Response = serde_json::from_str(&text)
        .map_err(|e| format!("the response is not a batch response ({e})"))?;
    let mut failed = Vec::new();
    for item in response.batch_item_failures.unwrap_or_default() {
        match item.item_identifier {
            Some(id) if batch.iter().any(|m| m.message_id() == Some(id.as_str())) => {
                failed.push(id)
            }
            other => {
                return Err(format!(
                    "a failure names {other:?}, which is not in the batch"
                ));
            }
        }
    }
    Ok(failed)
}

/// The SQS event Lambda would send for `messages`.
fn sqs_event(mapping: &Mapping, region: &str, messages: &[Message]) -> Vec<u8> {
    let records: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            let attributes: BTreeMap<&str, &str> = m
                .attributes()
                .map(|a| a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
                .unwrap_or_default();
            let message_attributes: BTreeMap<&str, serde_json::Value> = m
                .message_attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| {
                            (
                                k.as_str(),
                                json!({
                                    "stringValue": v.string_value(),
                                    "stringListValues": v.string_list_values(),
                                    "binaryListValues": [],
                                    "dataType": v.data_type(),
                                }),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": mapping.queue_arn,
                "awsRegion": region,
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "Records": records })).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Vec<Message> {
        ["a", "b"]
            .map(|id| Message::builder().message_id(id).build())
            .to_vec()
    }

    #[test]
    fn batch_responses_are_read_as_lambda_reads_them() {
        let batch = batch();
        assert_eq!(failed_ids(b"", &batch), Ok(vec![]));
        assert_eq!(failed_ids(b"null", &batch), Ok(vec![]));
        assert_eq!(
            failed_ids(br#"{"batchItemFailures":[]}"#, &batch),
            Ok(vec![])
        );
        assert_eq!(
            failed_ids(br#"{"batchItemFailures":[{"itemIdentifier":"b"}]}"#, &batch),
            Ok(vec!["b".to_owned()])
        );
        for whole_batch in [
            &br#"{"batchItemFailures":[{"itemIdentifier":"zzz"}]}"#[..],
            br#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
            b"not json",
        ] {
            assert!(failed_ids(whole_batch, &batch).is_err(), "{whole_batch:?}");
        }
    }
}
