//! The step abstraction: what one Lambda does with one message.
//!
//! A step kind implements [`Step`]: two required methods ([`Step::init`] once at cold start,
//! [`Step::process`] per message) and documented defaults for the generic hook points,
//! [`Step::parse`] and [`Step::validate`]. Each default delegates to a public free function
//! of the same name ([`parse`], [`validate`]), in the style of syn's `Visit`, so an override
//! can add to the default instead of replacing it:
//!
//! ```
//! use etlgen_runtime::step::{self, Message, StepContext};
//! use etlgen_runtime::{Envelope, StepError};
//!
//! fn my_validate(input: &Envelope<u32>, cx: &StepContext) -> Result<(), StepError> {
//!     step::validate(input, cx)?; // the default checks first
//!     if input.payload == 0 {
//!         return Err(StepError::permanent("payload must not be zero"));
//!     }
//!     Ok(())
//! }
//! # let _ = my_validate;
//! ```
//!
//! The kind-specific hook points (map, build the request, handle the response, choose the
//! output) live on each kind's `Hooks` trait in [`crate::kinds`], with the same conventions.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use crate::config::{Config, StepConfig};
use crate::envelope::{Envelope, IdempotencyKey};
use crate::error::StepError;
use crate::ports::{OutgoingMessage, Services};

/// One received message, as a step sees it before parsing.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The SQS message id.
    pub id: &'a str,
    /// The body.
    pub body: &'a str,
    /// When SQS first accepted the message (ms since the epoch); stable across redeliveries.
    pub sent_timestamp_ms: Option<u64>,
    /// How many times SQS has delivered it, starting at 1.
    pub receive_count: u32,
}

/// What a step gets at cold start.
#[derive(Debug, Clone, Copy)]
pub struct InitContext<'a> {
    /// The step's name (the `[steps.<name>]` table).
    pub step_name: &'a str,
    /// The resolved configuration.
    pub config: &'a Config,
    /// The ports.
    pub services: &'a Services,
}

impl InitContext<'_> {
    /// The kind's settings from `[steps.<name>]`, as a boxed error for `init`.
    pub fn settings<T: DeserializeOwned>(&self) -> Result<T, crate::Error> {
        Ok(self.config.step_settings(self.step_name)?)
    }
}

/// A step kind. See the module documentation.
pub trait Step: Send + Sync + Sized + 'static {
    /// The payload this step reads.
    type Input: DeserializeOwned + Send + Sync + 'static;

    /// The catalog id of the kind (`validator`, `contact-importer`, …).
    const KIND: &'static str;

    /// Whether the step calls Qualtrics. When `false`, cold start skips the Qualtrics secret
    /// and client even if `[qualtrics]` is configured for the pipeline.
    const USES_QUALTRICS: bool = true;

    /// Whether the step talks to the client's SFTP server. When `false`, cold start skips
    /// the SFTP secret even if `[sftp]` is configured for the pipeline.
    const USES_SFTP: bool = false;

    /// Builds the step once at cold start: read settings, keep clients.
    fn init(cx: &InitContext<'_>) -> Result<Self, crate::Error>;

    /// Does the step's work for one envelope: at most one external effect, outputs through
    /// [`StepContext::emit`].
    fn process(
        &self,
        input: &Envelope<Self::Input>,
        cx: &StepContext,
    ) -> impl Future<Output = Result<(), StepError>> + Send;

    /// Turns a message into an envelope.
    ///
    /// By default the body must be an [`Envelope`] of [`Step::Input`], and envelopes newer
    /// than this runtime are refused; see [`parse`].
    fn parse(
        &self,
        message: &Message<'_>,
        cx: &StepContext,
    ) -> Result<Envelope<Self::Input>, StepError> {
        let _ = cx;
        parse(message)
    }

    /// Checks an envelope before any effect.
    ///
    /// By default it checks that the envelope belongs to this pipeline and step and that its
    /// idempotency key matches its fields; see [`validate`].
    fn validate(&self, input: &Envelope<Self::Input>, cx: &StepContext) -> Result<(), StepError> {
        validate(input, cx)
    }
}

/// The default of [`Step::parse`]: reads the body as an envelope.
pub fn parse<T: DeserializeOwned>(message: &Message<'_>) -> Result<Envelope<T>, StepError> {
    Ok(Envelope::from_json(message.body)?)
}

/// The default of [`Step::validate`]: the envelope is for this pipeline and step, and its
/// idempotency key was not tampered with.
pub fn validate<T>(input: &Envelope<T>, cx: &StepContext) -> Result<(), StepError> {
    let pipeline = &cx.config().pipeline.name;
    if &input.pipeline != pipeline {
        return Err(StepError::permanent(format!(
            "envelope is for pipeline {:?}, this is {pipeline:?}",
            input.pipeline
        )));
    }
    if input.step != cx.step_name() {
        return Err(StepError::permanent(format!(
            "envelope is addressed to step {:?}, this is {:?}",
            input.step,
            cx.step_name()
        )));
    }
    if !input.key_is_consistent() {
        return Err(StepError::permanent(
            "idempotency_key does not match pipeline, run_id, step and record_key",
        ));
    }
    Ok(())
}

/// What a step sees while processing one message: configuration, ports and the outbox.
#[derive(Debug)]
pub struct StepContext {
    step_name: Arc<str>,
    config: Arc<Config>,
    step_config: Arc<StepConfig>,
    services: Services,
    message_id: String,
    /// Messages not sent yet, by queue URL.
    outbox: Mutex<BTreeMap<String, Vec<OutgoingMessage>>>,
}

/// How many messages SQS takes in one `SendMessageBatch`.
pub const SEND_BATCH_MAX: usize = 10;

/// The most bytes of message bodies sent in one `SendMessageBatch`: 256 KiB. SQS refuses a
/// batch whose messages add up to more than its payload limit (`BatchRequestTooLong`, a
/// 400, so permanent). The limit was 256 KiB until SQS raised it to 1 MiB in 2025, and
/// emulators and queues created with the old `MaximumMessageSize` keep the lower one.
pub const SEND_BATCH_BYTES: usize = 256 << 10;

/// The largest message body a step sends: [`SEND_BATCH_BYTES`], the `MaximumMessageSize`
/// of the generated queues (Terraform's default). A larger output is refused before
/// anything is sent, with an error saying what to lower, instead of SQS's 400 midway.
pub const MAX_MESSAGE_BYTES: usize = SEND_BATCH_BYTES;

/// Whether `next` may join `batch` in one `SendMessageBatch`: at most [`SEND_BATCH_MAX`]
/// messages whose bodies add up to at most [`SEND_BATCH_BYTES`]. A message over that on its
/// own goes alone.
pub fn fits_batch(batch: &[OutgoingMessage], next: &OutgoingMessage) -> bool {
    let bytes: usize = batch.iter().map(|m| m.body.len()).sum();
    batch.is_empty()
        || (batch.len() < SEND_BATCH_MAX && bytes + next.body.len() <= SEND_BATCH_BYTES)
}

/// `messages` in order, cut into `SendMessageBatch` calls by [`fits_batch`].
pub fn send_batches(messages: Vec<OutgoingMessage>) -> Vec<Vec<OutgoingMessage>> {
    let mut batches: Vec<Vec<OutgoingMessage>> = Vec::new();
    for message in messages {
        match batches.last_mut() {
            Some(batch) if fits_batch(batch, &message) => batch.push(message),
            _ => batches.push(vec![message]),
        }
    }
    batches
}

impl StepContext {
    /// A context for one message.
    pub fn new(
        step_name: Arc<str>,
        config: Arc<Config>,
        services: Services,
        message_id: impl Into<String>,
    ) -> Self {
        let step_config = Arc::new(config.step(&step_name));
        Self {
            step_name,
            config,
            step_config,
            services,
            message_id: message_id.into(),
            outbox: Mutex::new(BTreeMap::new()),
        }
    }

    /// This step's name.
    pub fn step_name(&self) -> &str {
        &self.step_name
    }

    /// The resolved configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This step's common settings.
    pub fn step_config(&self) -> &StepConfig {
        &self.step_config
    }

    /// The ports.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The bucket of the raw zone, reports and run state.
    pub fn data_bucket(&self) -> &str {
        &self.config.pipeline.data_bucket
    }

    /// The SQS message id being processed.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// The name of the (first) next step, or `"end"` for the last step of a pipeline.
    pub fn next_step(&self) -> &str {
        let sc = &self.step_config;
        sc.next_steps
            .first()
            .or(sc.next_step.as_ref())
            .map_or("end", String::as_str)
    }

    /// The envelope for the next step, derived from `input`.
    pub fn next_envelope<I, T>(
        &self,
        input: &Envelope<I>,
        record_key: impl Into<String>,
        payload: T,
    ) -> Envelope<T> {
        input.next(self.next_step(), record_key, payload)
    }

    /// Where this step's output goes: each reader's name, queue and FIFO group.
    /// A reader named in `next_steps` without a `queue_url` is a deployment
    /// error, retried (and so alarmed on) rather than dropped.
    fn targets(&self) -> Result<Vec<Target>, StepError> {
        let sc = &self.step_config;
        if sc.next_steps.is_empty() {
            return Ok(match (&sc.next_step, &sc.next_queue_url) {
                (next, Some(url)) => vec![Target {
                    step: next.clone().unwrap_or_else(|| "end".into()),
                    queue_url: url.clone(),
                    group_id: sc.message_group_id.clone(),
                }],
                _ => Vec::new(),
            });
        }
        sc.next_steps.iter().map(|step| self.reader(step)).collect()
    }

    /// The record key of an output for `reader`: `record_key`, or `<this step>/<record_key>`
    /// when `reader` reads several steps. Two steps may send it the same key (a contact
    /// importer and a response importer both pass a batch's key on), and one idempotency
    /// key for both would make the second a redelivery, skipped.
    fn record_key_for(&self, reader: &str, record_key: &str) -> String {
        if self.config.producers_of(reader) > 1 {
            format!("{}/{record_key}", self.step_name)
        } else {
            record_key.to_owned()
        }
    }

    /// Where output for the step named `step` goes: its queue and FIFO group.
    fn reader(&self, step: &str) -> Result<Target, StepError> {
        let reader = self.config.step(step);
        let queue_url = reader.queue_url.clone().ok_or_else(|| {
            StepError::retryable(format!(
                "steps.{step}.queue_url is not configured, so output for {step} cannot \
                 be sent; the deployment sets it as ETL__STEPS__{}__QUEUE_URL",
                step.to_uppercase().replace('-', "_")
            ))
        })?;
        Ok(Target {
            step: step.to_owned(),
            queue_url,
            group_id: reader.message_group_id,
        })
    }

    /// Sends `envelope` at once to the step named `step`, whether or not it reads this
    /// step's output: how a step tells the pipeline's notifiers that a run failed. Its
    /// idempotency key is derived for `step`, as [`StepContext::emit`] derives it.
    pub async fn send_to<T: Serialize>(
        &self,
        step: &str,
        envelope: &Envelope<T>,
    ) -> Result<(), StepError> {
        let payload = serde_json::to_string(&envelope.payload)
            .map_err(|e| StepError::permanent("output is not serializable").with_source(e))?;
        let target = self.reader(step)?;
        let queue_url = target.queue_url.clone();
        let message = outgoing(target, envelope, &envelope.record_key, &payload)?;
        self.services
            .queue
            .send_batch(&queue_url, vec![message])
            .await
    }

    /// Queues an envelope for every reader of this step's output, each with its
    /// own step name and idempotency key. Messages go out with
    /// `SendMessageBatch` ten at a time, and the rest when processing succeeds.
    ///
    /// A step with no readers is the last of its pipeline: its output is logged,
    /// not sent.
    pub async fn emit<T: Serialize>(&self, envelope: &Envelope<T>) -> Result<(), StepError> {
        let payload = serde_json::to_string(&envelope.payload)
            .map_err(|e| StepError::permanent("output is not serializable").with_source(e))?;
        self.emit_json(envelope, &payload).await
    }

    /// [`StepContext::emit`] with the payload already serialized as `payload_json`, which
    /// is sent as it is to every reader (see `Envelope::to_json_with_payload`).
    pub(crate) async fn emit_json<T>(
        &self,
        envelope: &Envelope<T>,
        payload_json: &str,
    ) -> Result<(), StepError> {
        let targets = self.targets()?;
        if targets.is_empty() {
            tracing::info!(record_key = %envelope.record_key, "last step: output not forwarded");
            return Ok(());
        }
        for target in targets {
            let queue_url = target.queue_url.clone();
            let record_key = self.record_key_for(&target.step, &envelope.record_key);
            let message = outgoing(target, envelope, &record_key, payload_json)?;
            let full = {
                let mut outbox = self.outbox.lock().await;
                let queue = outbox.entry(queue_url.clone()).or_default();
                let mut full = Vec::new();
                if !fits_batch(queue, &message) {
                    full.push(std::mem::take(queue));
                }
                queue.push(message);
                if queue.len() >= SEND_BATCH_MAX {
                    full.push(std::mem::take(queue));
                }
                full
            };
            for batch in full {
                self.services.queue.send_batch(&queue_url, batch).await?;
            }
        }
        Ok(())
    }

    /// Sends whatever is still in the outbox. The runner calls it after `process`.
    pub async fn flush(&self) -> Result<(), StepError> {
        let queues = std::mem::take(&mut *self.outbox.lock().await);
        for (url, batch) in queues {
            if !batch.is_empty() {
                self.services.queue.send_batch(&url, batch).await?;
            }
        }
        Ok(())
    }
}

/// One reader of a step's output.
struct Target {
    step: String,
    queue_url: String,
    group_id: Option<String>,
}

/// The message carrying `envelope` to `target` under `record_key`, with the target's own
/// step name and idempotency key, and `payload_json` as its payload. An output over SQS's
/// message limit is refused here, before anything is sent.
fn outgoing<T>(
    target: Target,
    envelope: &Envelope<T>,
    record_key: &str,
    payload_json: &str,
) -> Result<OutgoingMessage, StepError> {
    let copy = Envelope {
        idempotency_key: IdempotencyKey::derive(
            &envelope.pipeline,
            &envelope.run_id,
            &target.step,
            record_key,
        ),
        step: target.step,
        schema_version: envelope.schema_version,
        run_id: envelope.run_id.clone(),
        logical_date: envelope.logical_date,
        pipeline: envelope.pipeline.clone(),
        attempt: envelope.attempt,
        record_key: record_key.to_owned(),
        record_schema: envelope.record_schema,
        payload: (),
    };
    let body = copy
        .to_json_with_payload(payload_json)
        .map_err(|e| StepError::permanent("output is not serializable").with_source(e))?;
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(StepError::permanent(format!(
            "the output {:?} for step {:?} is {} bytes, over SQS's message limit of \
             {MAX_MESSAGE_BYTES}; emit smaller outputs (a validator's batch_size)",
            copy.record_key,
            copy.step,
            body.len()
        )));
    }
    Ok(OutgoingMessage {
        id: format!("m{}", copy.idempotency_key.uuid().simple()),
        body,
        dedup_id: target
            .group_id
            .as_ref()
            .map(|_| copy.idempotency_key.to_string()),
        group_id: target.group_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{LogicalDate, RunId};
    use crate::ports::Unconfigured;
    use crate::testing::{MemoryNotifications, MemoryObjectStore, MemoryQueue};

    fn context(extra: &str) -> (StepContext, Arc<MemoryQueue>) {
        let config = Config::from_toml(
            "test",
            &format!("[pipeline]\nname='acme'\ndata_bucket='b'\n[steps.s]\nnext_step='t'\n{extra}"),
        )
        .unwrap();
        let queue = Arc::new(MemoryQueue::default());
        let services = Services {
            qualtrics: Arc::new(Unconfigured("q")),
            objects: Arc::new(MemoryObjectStore::default()),
            queue: queue.clone(),
            notifications: Arc::new(MemoryNotifications::default()),
            sftp: Arc::new(Unconfigured("s")),
        };
        (
            StepContext::new("s".into(), Arc::new(config), services, "m1"),
            queue,
        )
    }

    fn envelope(pipeline: &str, step: &str) -> Envelope<u8> {
        Envelope::new(
            pipeline,
            RunId::new("r"),
            LogicalDate::from_ymd(2024, 5, 1).unwrap(),
            step,
            "k",
            1,
        )
    }

    #[test]
    fn the_default_validation_checks_pipeline_step_and_key() {
        let (cx, _) = context("");
        assert!(validate(&envelope("acme", "s"), &cx).is_ok());
        assert!(
            validate(&envelope("other", "s"), &cx)
                .unwrap_err()
                .message()
                .contains("pipeline")
        );
        assert!(
            validate(&envelope("acme", "t"), &cx)
                .unwrap_err()
                .message()
                .contains("addressed to step")
        );
        let mut tampered = envelope("acme", "s");
        tampered.record_key = "other".into();
        assert!(!validate(&tampered, &cx).unwrap_err().is_retryable());
    }

    #[test]
    fn the_default_parse_reads_an_envelope() {
        let body = envelope("acme", "s").to_json().unwrap();
        let message = Message {
            id: "m",
            body: &body,
            sent_timestamp_ms: None,
            receive_count: 1,
        };
        assert_eq!(parse::<u8>(&message).unwrap(), envelope("acme", "s"));
        let bad = Message {
            body: "{}",
            ..message
        };
        assert!(!parse::<u8>(&bad).unwrap_err().is_retryable());
    }

    #[tokio::test]
    async fn outputs_go_out_ten_at_a_time_with_fifo_ids() {
        let (cx, queue) = context("next_queue_url='https://sqs.test/t.fifo'\nmessage_group_id='g'");
        let input = envelope("acme", "s");
        for i in 0..12 {
            cx.emit(&cx.next_envelope(&input, format!("k{i}"), i))
                .await
                .unwrap();
        }
        assert_eq!(queue.sent().len(), 10, "a full batch is sent at once");
        cx.flush().await.unwrap();
        let sent = queue.sent();
        assert_eq!(sent.len(), 12);
        let next: Envelope<i32> = Envelope::from_json(&sent[11].1.body).unwrap();
        assert_eq!((next.step.as_str(), next.payload), ("t", 11));
        assert_eq!(sent[11].1.group_id.as_deref(), Some("g"));
        assert_eq!(sent[11].1.dedup_id, Some(next.idempotency_key.to_string()));
    }

    /// Ten 60 KB outputs (a batch of a few hundred records each) are over SQS's payload
    /// limit for one `SendMessageBatch`, which refuses them with a 400 (permanent), as
    /// `MemoryQueue` does: they go in calls of at most `SEND_BATCH_BYTES`, in order.
    #[tokio::test]
    async fn outputs_go_out_in_batches_under_the_payload_limit() {
        let (cx, queue) = context("next_queue_url='https://sqs.test/t'");
        let input = envelope("acme", "s");
        let record = "x".repeat(60_000);
        for i in 0..10 {
            cx.emit(&cx.next_envelope(&input, format!("k{i}"), &record))
                .await
                .unwrap();
        }
        cx.flush().await.unwrap();
        let sent = queue.sent();
        assert_eq!(sent.len(), 10);
        let keys: Vec<String> = (sent.iter())
            .map(|(_, m)| Envelope::<String>::from_json(&m.body).unwrap().record_key)
            .collect();
        assert_eq!(keys, (0..10).map(|i| format!("k{i}")).collect::<Vec<_>>());
    }

    /// An output over SQS's message limit is refused before anything is sent, naming the
    /// output and what to lower, as a permanent error (SQS would answer with a 400).
    #[tokio::test]
    async fn an_output_over_the_message_limit_is_refused_before_sending() {
        let (cx, queue) = context("next_queue_url='https://sqs.test/t'");
        let input = envelope("acme", "s");
        let error = cx
            .emit(&cx.next_envelope(&input, "big", "x".repeat(MAX_MESSAGE_BYTES)))
            .await
            .unwrap_err();
        assert!(!error.is_retryable());
        let text = error.to_string();
        assert!(
            text.contains("\"big\"") && text.contains("batch_size"),
            "{text}"
        );
        cx.flush().await.unwrap();
        assert!(queue.sent().is_empty());
    }

    #[test]
    fn batches_are_cut_by_count_and_by_bytes() {
        let message = |bytes: usize| OutgoingMessage {
            id: "m".into(),
            body: "x".repeat(bytes),
            group_id: None,
            dedup_id: None,
        };
        let sizes = |messages: Vec<OutgoingMessage>| -> Vec<Vec<usize>> {
            (send_batches(messages).into_iter())
                .map(|batch| batch.iter().map(|m| m.body.len()).collect())
                .collect()
        };
        assert_eq!(
            sizes((0..12).map(|_| message(10)).collect()),
            [vec![10; 10], vec![10; 2]]
        );
        let big = SEND_BATCH_BYTES / 2;
        assert_eq!(
            sizes(vec![
                message(big),
                message(big),
                message(1),
                message(SEND_BATCH_BYTES + 1)
            ]),
            [vec![big, big], vec![1], vec![SEND_BATCH_BYTES + 1]]
        );
        assert!(send_batches(Vec::new()).is_empty());
    }

    #[tokio::test]
    async fn the_last_step_sends_nothing() {
        let (cx, queue) = context("");
        cx.emit(&envelope("acme", "end")).await.unwrap();
        cx.flush().await.unwrap();
        assert!(queue.sent().is_empty());
        assert_eq!(cx.next_step(), "t");
    }

    #[tokio::test]
    async fn fan_out_sends_each_reader_its_own_envelope() {
        let (cx, queue) = context(
            "next_steps=['invite','reminder']\n\
             [steps.invite]\nqueue_url='https://sqs.test/invite'\n\
             [steps.reminder]\nqueue_url='https://sqs.test/reminder.fifo'\nmessage_group_id='g'",
        );
        assert_eq!(cx.next_step(), "invite");
        cx.emit(&envelope("acme", "invite")).await.unwrap();
        cx.flush().await.unwrap();
        let sent = queue.sent();
        assert_eq!(sent.len(), 2);
        let by_url: BTreeMap<_, _> = sent.iter().map(|(url, m)| (url.as_str(), m)).collect();
        let invite: Envelope<u8> =
            Envelope::from_json(&by_url["https://sqs.test/invite"].body).unwrap();
        let reminder: Envelope<u8> =
            Envelope::from_json(&by_url["https://sqs.test/reminder.fifo"].body).unwrap();
        assert_eq!(
            (invite.step.as_str(), reminder.step.as_str()),
            ("invite", "reminder")
        );
        assert_ne!(invite.idempotency_key, reminder.idempotency_key);
        assert_eq!(
            reminder.idempotency_key,
            envelope("acme", "reminder").idempotency_key
        );
        assert_eq!(by_url["https://sqs.test/invite"].group_id, None);
        assert_eq!(
            by_url["https://sqs.test/reminder.fifo"].group_id.as_deref(),
            Some("g")
        );
    }

    /// A reader of two steps gets each one's output under a key naming the sender: a
    /// contact importer and a response importer both pass a batch's key on, and one
    /// idempotency key for both would make the second a redelivery, skipped.
    #[tokio::test]
    async fn a_reader_of_two_steps_tells_their_outputs_apart() {
        let (cx, queue) = context(
            "next_steps=['notify']
             [steps.notify]
queue_url='https://sqs.test/notify'
             [steps.other]
next_steps=['notify']",
        );
        let output = envelope("acme", "notify");
        cx.emit(&output).await.unwrap();
        cx.flush().await.unwrap();
        let sent: Envelope<u8> = Envelope::from_json(&queue.sent()[0].1.body).unwrap();
        assert_eq!(sent.record_key, format!("s/{}", output.record_key));
        assert!(sent.key_is_consistent());
        assert_ne!(sent.idempotency_key, output.idempotency_key);
    }

    #[tokio::test]
    async fn a_reader_without_a_queue_url_is_a_retryable_error_not_a_drop() {
        let (cx, queue) = context("next_steps=['invite']");
        let err = cx.emit(&envelope("acme", "invite")).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(
            err.message().contains("ETL__STEPS__INVITE__QUEUE_URL"),
            "{err}"
        );
        assert!(queue.sent().is_empty());
    }
}
