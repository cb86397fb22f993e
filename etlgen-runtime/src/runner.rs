//! Drives one [`Step`] over SQS batches: the rules every step follows, in one place.
//!
//! For each message the runner parses and validates the envelope, skips it if the ledger
//! says its effect already happened, runs the step, sends its outputs, and records the
//! effect in the ledger. A permanent error is written to the rejected-records report, the
//! pipeline's notifiers are told the run failed, and the message is acknowledged; a
//! retryable error fails the message alone so SQS redelivers it.
//! Every log line of a message carries its `message_id` and `run_id` through a tracing span.

use std::sync::Arc;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use bytes::Bytes;
use tracing::Instrument;

use crate::config::Config;
use crate::envelope::Envelope;
use crate::error::StepError;
use crate::ports::{Services, read_small};
use crate::sqs::{BatchOptions, process_batch};
use crate::step::{InitContext, Message, Step, StepContext};
use crate::zones;

/// A step with its configuration and ports, ready to handle events.
pub struct Runner<S: Step> {
    step: S,
    step_name: Arc<str>,
    config: Arc<Config>,
    services: Services,
    options: BatchOptions,
}

impl<S: Step> std::fmt::Debug for Runner<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("kind", &S::KIND)
            .field("step_name", &self.step_name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<S: Step> Runner<S> {
    /// Builds the step with [`Step::init`].
    pub fn new(step_name: &str, config: Config, services: Services) -> Result<Self, crate::Error> {
        let step = S::init(&InitContext {
            step_name,
            config: &config,
            services: &services,
        })?;
        Ok(Self::with_step(step_name, config, services, step))
    }

    /// Uses an already built step (tests with stateful hooks).
    pub fn with_step(step_name: &str, config: Config, services: Services, step: S) -> Self {
        let step_config = config.step(step_name);
        let options = BatchOptions {
            concurrency: step_config
                .batch_concurrency
                .unwrap_or(config.runtime.batch_concurrency),
            fifo: step_config.fifo,
        };
        Self {
            step,
            step_name: step_name.into(),
            config: Arc::new(config),
            services,
            options,
        }
    }

    /// The step.
    pub fn step(&self) -> &S {
        &self.step
    }

    /// Handles one SQS event and reports the messages to retry.
    pub async fn handle_event(&self, event: SqsEvent) -> SqsBatchResponse {
        process_batch(event, self.options, |m| async move {
            self.handle_message(&m).await
        })
        .await
    }

    /// Handles one message: `Ok` when it is done (including a reported permanent failure),
    /// `Err` when it must be retried.
    pub async fn handle_message(&self, message: &SqsMessage) -> Result<(), StepError> {
        let id = message.message_id.as_deref().unwrap_or("");
        let span = tracing::info_span!(
            "message",
            message_id = id,
            run_id = tracing::field::Empty,
            step = &*self.step_name,
        );
        async {
            let attribute = |name: &str| {
                message
                    .attributes
                    .get(name)
                    .and_then(|v| v.parse::<u64>().ok())
            };
            let msg = Message {
                id,
                body: message.body.as_deref().unwrap_or(""),
                sent_timestamp_ms: attribute("SentTimestamp"),
                receive_count: attribute("ApproximateReceiveCount")
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(1),
            };
            let result = self.process_message(&msg).await;
            match &result {
                Ok(()) => tracing::info!("message done"),
                Err(e) => tracing::warn!(error = %e.chain(), "message failed; it will be retried"),
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn process_message(&self, msg: &Message<'_>) -> Result<(), StepError> {
        let cx = StepContext::new(
            self.step_name.clone(),
            self.config.clone(),
            self.services.clone(),
            msg.id,
        );
        if crate::kinds::sources::s3::is_test_event(msg.body) {
            tracing::info!("an S3 test event; nothing to do");
            return Ok(());
        }
        let mut input = match self.step.parse(msg, &cx) {
            Ok(input) => input,
            Err(e) if !e.is_retryable() => return self.reject_unparsed(msg, &e).await,
            Err(e) => return Err(e),
        };
        input.attempt = msg.receive_count.max(1);
        tracing::Span::current().record("run_id", input.run_id.as_str());
        if input.attempt > 1 && !self.config.pipeline.notifiers.is_empty() {
            // A rejection whose telling failed comes back to be told, not to run again. Only
            // this very message: a replay of the run is another message with the same keys,
            // and must run.
            let key = self.rejected_key(&input);
            let bucket = &self.config.pipeline.data_bucket;
            let report = read_small(&*self.services.objects, bucket, &key).await?;
            let report = report.and_then(|r| serde_json::from_slice::<serde_json::Value>(&r).ok());
            if let Some(report) = report.filter(|r| r["message_id"] == msg.id) {
                let reason = report["reason"].as_str().unwrap_or_default();
                tracing::warn!(report = %key, "rejected before: telling the notifiers");
                return crate::kinds::notifier::tell_failure(&cx, &input, reason, &key).await;
            }
        }
        match self.run(&input, &cx).await {
            Err(e) if !e.is_retryable() => self.reject(msg, &input, &e, &cx).await,
            other => other,
        }
    }

    async fn run(&self, input: &Envelope<S::Input>, cx: &StepContext) -> Result<(), StepError> {
        self.step.validate(input, cx)?;
        let ledger_key = zones::ledger(&input.pipeline, cx.step_name(), &input.idempotency_key);
        let bucket = cx.data_bucket();
        if self.config.runtime.ledger
            && read_small(&*self.services.objects, bucket, &ledger_key)
                .await?
                .is_some()
        {
            tracing::info!(idempotency_key = %input.idempotency_key, "already done; skipping redelivery");
            return Ok(());
        }
        self.step.process(input, cx).await?;
        cx.flush().await?;
        if self.config.runtime.ledger {
            let entry = serde_json::json!({
                "message_id": cx.message_id(),
                "attempt": input.attempt,
                "record_key": input.record_key,
            });
            self.services
                .objects
                .put(bucket, &ledger_key, Bytes::from(entry.to_string()))
                .await?;
        }
        Ok(())
    }

    async fn reject<T>(
        &self,
        msg: &Message<'_>,
        input: &Envelope<T>,
        e: &StepError,
        cx: &StepContext,
    ) -> Result<(), StepError> {
        let key = self.rejected_key(input);
        tracing::warn!(error = %e.chain(), report = %key, "record rejected permanently");
        self.write_report(&key, msg, e).await?;
        // Failing to tell fails the message; its redelivery finds the report and only tells.
        crate::kinds::notifier::tell_failure(cx, input, &e.to_string(), &key).await
    }

    /// Where a rejected envelope's report goes.
    fn rejected_key<T>(&self, input: &Envelope<T>) -> String {
        zones::report(
            input.logical_date,
            &input.run_id,
            &self.step_name,
            &format!("rejected/{}.json", input.idempotency_key),
        )
    }

    async fn reject_unparsed(&self, msg: &Message<'_>, e: &StepError) -> Result<(), StepError> {
        let key = zones::unparsed(&self.step_name, &zones::file_name(msg.id));
        tracing::warn!(error = %e.chain(), report = %key, "message rejected: not a valid envelope");
        self.write_report(&key, msg, e).await
    }

    async fn write_report(
        &self,
        key: &str,
        msg: &Message<'_>,
        e: &StepError,
    ) -> Result<(), StepError> {
        let report = serde_json::json!({
            "step": &*self.step_name,
            "message_id": msg.id,
            "reason": e.to_string(),
            "body": msg.body,
        });
        // On-call first: a redelivery that finds the report takes it that on-call was told.
        if let Some(topic) = &self.config.runtime.failure_topic_arn {
            let subject = format!(
                "{} {}: a message was rejected",
                self.config.pipeline.name, self.step_name
            );
            let message = format!(
                "report: s3://{}/{key}\n\n{report:#}",
                self.config.pipeline.data_bucket
            );
            self.services
                .notifications
                .publish(topic, &subject, &message)
                .await?;
        }
        self.services
            .objects
            .put(
                &self.config.pipeline.data_bucket,
                key,
                Bytes::from(report.to_string()),
            )
            .await
    }
}
