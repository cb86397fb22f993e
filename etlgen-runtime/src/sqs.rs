//! Partial-batch handling of an SQS event.
//!
//! Lambda hands a step up to a batch of messages at once. With `ReportBatchItemFailures`
//! enabled on the trigger, the function reports which messages failed and only those return
//! to the queue, so one bad message never re-runs its neighbours. The rules differ by queue:
//!
//! - **standard queues**: messages run concurrently, up to a bound, and only the failed ids
//!   are reported;
//! - **FIFO queues**: messages run in order; at the first failure processing stops, and that
//!   message and every later one are reported, so the group's order is kept.

use std::future::Future;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::StreamExt;

/// How a batch is processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Messages processed at once on a standard queue (at least 1).
    pub concurrency: usize,
    /// Forces FIFO (`Some(true)`) or standard (`Some(false)`) handling; `None` detects FIFO
    /// from the event source ARN (`….fifo`).
    pub fifo: Option<bool>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            fifo: None,
        }
    }
}

/// True when the batch comes from a FIFO queue, judged by its event source ARN.
pub fn is_fifo_event(event: &SqsEvent) -> bool {
    event
        .records
        .first()
        .and_then(|m| m.event_source_arn.as_deref())
        .is_some_and(|arn| arn.ends_with(".fifo"))
}

/// The id to report for a failed message. A message without an id cannot be reported
/// alone; an empty identifier makes Lambda treat the whole batch as failed, which is the
/// safe outcome.
fn failure_id(message: &SqsMessage) -> String {
    message.message_id.clone().unwrap_or_default()
}

/// Runs `handler` over a batch and reports the failures (see the module docs).
///
/// `handler` returns `Ok(())` when the message is done (including a permanent failure that
/// was reported elsewhere) and `Err` when it must be retried.
pub async fn process_batch<F, Fut, E>(
    event: SqsEvent,
    options: BatchOptions,
    handler: F,
) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let fifo = options.fifo.unwrap_or_else(|| is_fifo_event(&event));
    let mut response = SqsBatchResponse::default();
    if fifo {
        let mut records = event.records.into_iter();
        while let Some(message) = records.next() {
            let id = failure_id(&message);
            if handler(message).await.is_err() {
                response.add_failure(id);
                for rest in records.by_ref() {
                    response.add_failure(failure_id(&rest));
                }
            }
        }
    } else {
        let handler = &handler;
        let failed: Vec<String> = futures_util::stream::iter(event.records)
            .map(|message| async move {
                let id = failure_id(&message);
                handler(message).await.err().map(|_| id)
            })
            .buffer_unordered(options.concurrency.max(1))
            .filter_map(|failed| async move { failed })
            .collect()
            .await;
        response.set_failures(failed);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const STANDARD: &str = include_str!("../tests/fixtures/sqs-standard-event.json");
    const FIFO: &str = include_str!("../tests/fixtures/sqs-fifo-event.json");

    fn ids(response: &SqsBatchResponse) -> Vec<String> {
        let mut ids: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        ids.sort();
        ids
    }

    fn fails_on(body: &'static str) -> impl Fn(SqsMessage) -> std::future::Ready<Result<(), ()>> {
        move |m| {
            std::future::ready(if m.body.as_deref() == Some(body) {
                Err(())
            } else {
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn standard_queue_reports_only_the_failed_message() {
        let event: SqsEvent = serde_json::from_str(STANDARD).unwrap();
        assert!(!is_fifo_event(&event));
        let seen = Mutex::new(Vec::new());
        let response = process_batch(event, BatchOptions::default(), |m| {
            seen.lock().unwrap().push(m.message_id.clone().unwrap());
            fails_on("Test message.")(m)
        })
        .await;
        assert_eq!(ids(&response), ["059f36b4-87a3-44ab-83d2-661975830a7d"]);
        assert_eq!(seen.lock().unwrap().len(), 2, "every message ran");
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(
            json["batchItemFailures"][0]["itemIdentifier"],
            "059f36b4-87a3-44ab-83d2-661975830a7d"
        );
    }

    #[tokio::test]
    async fn standard_queue_concurrency_is_bounded() {
        let mut event: SqsEvent = serde_json::from_str(STANDARD).unwrap();
        let template = event.records[0].clone();
        event.records = (0..20)
            .map(|i| {
                let mut m = template.clone();
                m.message_id = Some(format!("m{i}"));
                m
            })
            .collect();
        let (running, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let options = BatchOptions {
            concurrency: 3,
            fifo: Some(false),
        };
        let response = process_batch(event, options, |_| async {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, ()>(())
        })
        .await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn fifo_queue_stops_at_the_first_failure_and_reports_the_rest() {
        let event: SqsEvent = serde_json::from_str(FIFO).unwrap();
        assert!(is_fifo_event(&event));
        let seen = Mutex::new(Vec::new());
        let response = process_batch(event, BatchOptions::default(), |m| {
            seen.lock().unwrap().push(m.body.clone().unwrap());
            fails_on("second")(m)
        })
        .await;
        assert_eq!(
            *seen.lock().unwrap(),
            ["first", "second"],
            "stopped after the failure"
        );
        assert_eq!(ids(&response), ["fifo-2", "fifo-3"]);
    }

    #[tokio::test]
    async fn fifo_batch_without_failures_reports_nothing() {
        let event: SqsEvent = serde_json::from_str(FIFO).unwrap();
        let response = process_batch(event, BatchOptions::default(), fails_on("none")).await;
        assert!(response.batch_item_failures.is_empty());
    }

    #[tokio::test]
    async fn a_failed_message_without_id_fails_the_whole_batch() {
        let mut event: SqsEvent = serde_json::from_str(STANDARD).unwrap();
        event.records[0].message_id = None;
        let response = process_batch(event, BatchOptions::default(), |_| async {
            Err::<(), _>(())
        })
        .await;
        assert!(ids(&response).contains(&String::new()));
    }
}
