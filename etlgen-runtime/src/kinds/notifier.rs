//! The `notifier` step: a message to an SNS topic when a run succeeds or fails.
//!
//! A notification is its own step so a broken e-mail never forces a re-import. By default
//! it sends one notification per run and outcome:
//!
//! - **Failed**, at the first failure of the run: every other step tells the pipeline's
//!   notifiers (`pipeline.notifiers`) when it rejects a message of a run for good
//!   ([`tell_failure`]), and the validator does when a file has no valid record.
//! - **Succeeded**, or completed with failures when a step rejected some of the run's
//!   messages and passed their outcome on, once every input the run will bring has come.
//!   Each input leaves a marker under the run; a message that finds as many markers as the
//!   run brings (`inputs_per_batch` times the validator's batches, plus `inputs_per_run`)
//!   sends it (see `kinds::all_inputs_come`). Each input is marked before the count is
//!   taken, so the last of them to arrive finds them all, whatever the order. Nothing
//!   depends on timing. etlgen works the two numbers out from the pipeline's wiring.
//!
//! A claim makes one delivery send each notification, and a marker written after the
//! publish makes later and repeated messages skip it. SNS has no idempotent publish for
//! e-mail topics, so a delivery that crashes between the publish and the marker, and is
//! retried after its claim's lease, sends it a second time: at least once, never silently
//! none. `once_per_run = false` sends one notification per message instead.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::envelope::Envelope;
use crate::error::StepError;
use crate::kinds::{Claim, RunInputs, all_inputs_come, claim, give_back, read_state, write_state};
use crate::step::{InitContext, Step, StepContext};
use crate::zones;

/// The catalog id.
pub const KIND: &str = "notifier";

/// The overridable hook methods of [`Hooks`].
pub const HOOKS: &[&str] = &["render"];

/// `[steps.<name>]` of a notifier.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Settings {
    /// The SNS topic.
    #[serde(default)]
    pub topic_arn: String,
    /// Put before every subject, for example `[acme prod]`.
    #[serde(default)]
    pub subject_prefix: String,
    /// One notification per run and outcome (`true`), or one per message read. By default
    /// `true` when either count below is set (etlgen sets both), else `false`, which is
    /// how a notifier whose config predates the counts behaved.
    #[serde(default)]
    pub once_per_run: Option<bool>,
    /// Inputs a run brings for each batch the validator emits (a step before this one
    /// that sends one message per batch, such as a response importer).
    #[serde(default)]
    pub inputs_per_batch: u64,
    /// Inputs a run brings once (a step that sends one message per run, such as a
    /// distribution scheduler). With both at 0 and `once_per_run = true`, a run is done at
    /// its first input.
    #[serde(default)]
    pub inputs_per_run: u64,
}

impl Settings {
    /// Whether to notify once per run: `once_per_run`, or by default whether the run's
    /// inputs are counted.
    pub fn once_per_run(&self) -> bool {
        (self.once_per_run).unwrap_or(self.inputs().counted())
    }

    /// The inputs a run brings.
    pub fn inputs(&self) -> RunInputs {
        RunInputs {
            per_batch: self.inputs_per_batch,
            per_run: self.inputs_per_run,
        }
    }
}

/// What a step sends the notifiers when it rejects a message of a run for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFailed {
    /// Always `failed`.
    pub status: String,
    /// The step that rejected it.
    pub step: String,
    /// Why.
    pub reason: String,
    /// Where the report is (`s3://…`).
    pub report: String,
}

/// Tells every notifier of the pipeline that `input`'s run failed at this step, unless
/// this step is a notifier. The record key names the step and the message's idempotency
/// key, so a redelivered rejection is the notifier's redelivery too, and skipped. A
/// notifier named in `pipeline.notifiers` without a `queue_url` is an error: the
/// deployment sets it.
pub async fn tell_failure<T>(
    cx: &StepContext,
    input: &Envelope<T>,
    reason: &str,
    report: &str,
) -> Result<(), StepError> {
    let failed = RunFailed {
        status: "failed".to_owned(),
        step: cx.step_name().to_owned(),
        reason: reason.to_owned(),
        report: format!("s3://{}/{report}", cx.data_bucket()),
    };
    let record_key = format!("failed/{}/{}", cx.step_name(), input.idempotency_key);
    let notifiers = &cx.config().pipeline.notifiers;
    // A notifier's own rejections are on-call's: it has nobody's queue but its own.
    if notifiers.iter().any(|n| n == cx.step_name()) {
        return Ok(());
    }
    for notifier in notifiers {
        let envelope = input.next(notifier, record_key.clone(), &failed);
        cx.send_to(notifier, &envelope).await?;
    }
    Ok(())
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The subject (SNS allows 100 characters).
    pub subject: String,
    /// The body.
    pub message: String,
}

/// The client's hooks of a notifier.
pub trait Hooks: Send + Sync + 'static {
    /// Renders the notification; `None` sends nothing.
    ///
    /// `input`'s payload is the run's outcome: `{"status": "failed", "step", "reason",
    /// "report"}` ([`RunFailed`]), or `{"status", "rejected_messages", "valid", "rejected",
    /// "batches", "reports", "output"}` once it completes, `status` being [`SUCCEEDED`] or
    /// [`COMPLETED_WITH_FAILURES`] and `output` the message that completed the run. With
    /// `once_per_run = false` it is each message as it comes.
    ///
    /// By default the run, its date and its outcome as JSON; see [`render`].
    fn render(
        &self,
        input: &Envelope<serde_json::Value>,
        settings: &Settings,
    ) -> Option<Notification> {
        render(input, settings)
    }
}

/// The status of a run that completed without a rejected message.
pub const SUCCEEDED: &str = "succeeded";

/// The status of a run that completed, some of whose messages were rejected (and their
/// outcome passed on, such as contacts counted as failed).
pub const COMPLETED_WITH_FAILURES: &str = "completed_with_failures";

/// Whether `payload` says its run failed (`"status": "failed"`).
pub fn is_failure(payload: &serde_json::Value) -> bool {
    payload
        .get("status")
        .and_then(|s| s.as_str())
        .is_some_and(|s| s.eq_ignore_ascii_case("failed"))
}

/// The default of [`Hooks::render`].
pub fn render(input: &Envelope<serde_json::Value>, settings: &Settings) -> Option<Notification> {
    let status = input.payload.get("status").and_then(|s| s.as_str());
    let outcome = if is_failure(&input.payload) {
        "failed"
    } else if status == Some(COMPLETED_WITH_FAILURES) {
        "completed with failures"
    } else {
        "succeeded"
    };
    let subject = format!(
        "{} {} run {} {outcome}",
        settings.subject_prefix, input.pipeline, input.logical_date
    );
    let message = format!(
        "pipeline: {}\nlogical date: {}\nrun: {}\n\n{}",
        input.pipeline,
        input.logical_date,
        input.run_id,
        serde_json::to_string_pretty(&input.payload).unwrap_or_default()
    );
    Some(Notification {
        subject: subject.trim().chars().take(100).collect(),
        message,
    })
}

/// The notifier step.
#[derive(Debug, Clone)]
pub struct Notifier<H> {
    /// The client's hooks.
    pub hooks: H,
    /// The settings.
    pub settings: Settings,
}

impl<H: Hooks> Notifier<H> {
    /// Renders and publishes the notification of `input`.
    async fn publish(
        &self,
        input: &Envelope<serde_json::Value>,
        cx: &StepContext,
    ) -> Result<(), StepError> {
        let Some(notification) = self.hooks.render(input, &self.settings) else {
            return Ok(());
        };
        if self.settings.topic_arn.is_empty() {
            return Err(StepError::permanent(
                "the notifier has no topic_arn; the deployment sets it as \
                 ETL__STEPS__<STEP>__TOPIC_ARN",
            ));
        }
        cx.services()
            .notifications
            .publish(
                &self.settings.topic_arn,
                &notification.subject,
                &notification.message,
            )
            .await
    }

    /// The run's outcome once every input it brings has come, or `None` before.
    async fn completed(
        &self,
        input: &Envelope<serde_json::Value>,
        cx: &StepContext,
    ) -> Result<Option<serde_json::Value>, StepError> {
        let Some(manifest) = all_inputs_come(input, self.settings.inputs(), cx).await? else {
            return Ok(None);
        };
        let objects = &cx.services().objects;
        // A step may pass a rejected message's outcome on (a contact importer counts its
        // contacts as failed so the run's distribution goes ahead): the run then completes,
        // with failures, and says how many.
        let reports = zones::run_reports(input.logical_date, &input.run_id);
        let rejected_messages = (objects.list(cx.data_bucket(), &reports).await?.iter())
            .filter(|key| key.contains("/rejected/"))
            .count();
        let status = if rejected_messages == 0 {
            SUCCEEDED
        } else {
            COMPLETED_WITH_FAILURES
        };
        let mut outcome = json!({
            "status": status,
            "rejected_messages": rejected_messages,
            "reports": format!("s3://{}/{reports}", cx.data_bucket()),
            "output": input.payload,
        });
        if let Some(manifest) = manifest {
            outcome["valid"] = json!(manifest.valid);
            outcome["rejected"] = json!(manifest.rejected);
            outcome["batches"] = json!(manifest.batches);
        }
        Ok(Some(outcome))
    }
}

impl<H: Hooks + Default> Step for Notifier<H> {
    type Input = serde_json::Value;
    const KIND: &'static str = KIND;
    const USES_QUALTRICS: bool = false;

    fn init(cx: &InitContext<'_>) -> Result<Self, crate::Error> {
        Ok(Self {
            hooks: H::default(),
            settings: cx.settings()?,
        })
    }

    async fn process(
        &self,
        input: &Envelope<serde_json::Value>,
        cx: &StepContext,
    ) -> Result<(), StepError> {
        if !self.settings.once_per_run() {
            return self.publish(input, cx).await;
        }
        let failed = is_failure(&input.payload);
        let outcome = if failed { "failed" } else { "completed" };
        let key = |name: &str| {
            zones::run_state(
                input.logical_date,
                &input.run_id,
                &format!("{}/{outcome}-{name}", cx.step_name()),
            )
        };
        let (sent_key, claim_key) = (key("sent.json"), key("claim"));
        if read_state::<serde_json::Value>(cx, &sent_key)
            .await?
            .is_some()
        {
            tracing::info!(outcome, "the run's notification was sent already");
            return Ok(());
        }
        let payload = if failed {
            input.payload.clone()
        } else {
            match self.completed(input, cx).await? {
                Some(outcome) => outcome,
                None => return Ok(()),
            }
        };
        if claim(cx, &claim_key, input.attempt).await? == Claim::HeldByOther {
            return Err(StepError::retryable(
                "another delivery of this run is sending its notification",
            ));
        }
        let run = Envelope {
            payload,
            ..input.clone()
        };
        if let Err(e) = self.publish(&run, cx).await {
            // Whatever the error, so the retry publishes at once: a notification may go
            // out twice, but is never held back for the claim's lease.
            give_back(cx, &claim_key, input.attempt).await?;
            return Err(e);
        }
        write_state(cx, &sent_key, &json!({ "message_id": cx.message_id() })).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{RunManifest, manifest_key};
    use crate::testing::Harness;

    #[derive(Debug, Default)]
    struct Defaults;
    impl Hooks for Defaults {}

    const CONFIG: &str = r#"
[pipeline]
name = "acme"
data_bucket = "data"
[steps.notify]
topic_arn = "arn:aws:sns:eu-west-1:123456789012:acme-test"
"#;

    fn harness(settings: &str) -> Harness<Notifier<Defaults>> {
        Harness::new("notify", &format!("{CONFIG}{settings}"))
    }

    fn manifest(h: &Harness<Notifier<Defaults>>, batches: u64) {
        let run = h.envelope("x", ());
        let manifest = RunManifest {
            batches,
            valid: 5,
            rejected: 2,
        };
        let key = manifest_key(run.logical_date, &run.run_id);
        h.objects
            .insert("data", &key, serde_json::to_vec(&manifest).unwrap());
    }

    async fn deliver(h: &Harness<Notifier<Defaults>>, key: &str, payload: serde_json::Value) {
        let response = h.deliver(&h.envelope(key, payload)).await;
        assert!(response.batch_item_failures.is_empty(), "{key}");
    }

    /// A run of three batches, each bringing one input, in any order and each twice:
    /// nothing until the third distinct input, then exactly one notification, with the
    /// run's counts.
    #[tokio::test]
    async fn a_run_is_notified_once_when_its_last_input_comes() {
        let h = harness("inputs_per_batch = 1\n");
        deliver(&h, "batch-000002", json!({"n": 2})).await;
        manifest(&h, 3);
        for key in ["batch-000002", "batch-000003", "batch-000003"] {
            deliver(&h, key, json!({})).await;
        }
        assert!(h.notifications.published().is_empty());
        deliver(&h, "batch-000001", json!({"n": 1})).await;
        deliver(&h, "batch-000001", json!({"n": 1})).await;
        deliver(&h, "batch-000003", json!({})).await;
        let published = h.notifications.published();
        assert_eq!(published.len(), 1, "{published:#?}");
        let (_, subject, message) = &published[0];
        assert_eq!(subject, "acme run 2024-05-01 succeeded");
        for field in [r#""valid": 5"#, r#""rejected": 2"#, r#""batches": 3"#] {
            assert!(message.contains(field), "{field} in {message}");
        }
        assert!(
            message.contains("s3://data/reports/2024-05-01/run-1/"),
            "{message}"
        );
    }

    /// Inputs before the validator's manifest cannot know the run's size, so they wait.
    #[tokio::test]
    async fn without_the_manifest_per_batch_inputs_wait() {
        let h = harness("inputs_per_batch = 1\n");
        deliver(&h, "batch-000001", json!({})).await;
        assert!(h.notifications.published().is_empty());
    }

    /// After a once-per-run step (a scheduler) the first input completes the run, and a
    /// re-emitted result does not notify again.
    #[tokio::test]
    async fn one_input_per_run_notifies_at_once_and_once() {
        let h = harness("inputs_per_run = 1\n");
        deliver(&h, "distribution", json!({"distribution_id": "EMD_1"})).await;
        deliver(&h, "distribution", json!({"distribution_id": "EMD_1"})).await;
        let published = h.notifications.published();
        assert_eq!(published.len(), 1);
        assert!(published[0].2.contains("EMD_1"), "{}", published[0].2);
    }

    /// The first failure of a run is notified, once, whichever steps fail after it; a
    /// failure does not count as an input of a succeeding run.
    #[tokio::test]
    async fn a_run_failure_is_notified_once() {
        let h = harness("inputs_per_run = 1\n");
        let failed = |step: &str| json!({"status": "failed", "step": step, "reason": "400", "report": "s3://data/r"});
        deliver(&h, "failed/import/k1", failed("import")).await;
        deliver(&h, "failed/import/k2", failed("import")).await;
        let published = h.notifications.published();
        assert_eq!(published.len(), 1, "{published:#?}");
        assert!(published[0].1.ends_with("failed"), "{}", published[0].1);
        assert!(published[0].2.contains(r#""step": "import""#));
    }

    /// A publish that fails without an answer (a timeout) gives the claim back, so the
    /// redelivery publishes at once instead of failing until the claim's lease runs out,
    /// which a few quick redeliveries outlast into the DLQ.
    #[tokio::test]
    async fn a_failed_publish_is_retried_at_once() {
        let h = harness("inputs_per_run = 1\n");
        h.notifications.fail_next(1);
        let input = h.envelope("distribution", json!({}));
        assert_eq!(h.deliver(&input).await.batch_item_failures.len(), 1);
        let mut again = crate::testing::sqs_event(&[&input.to_json().unwrap()]);
        (again.records[0].attributes).insert("ApproximateReceiveCount".into(), "2".into());
        let response = h.runner.handle_event(again).await;
        assert!(response.batch_item_failures.is_empty(), "{response:?}");
        assert_eq!(h.notifications.published().len(), 1);
    }

    /// `once_per_run = false` notifies every message, as it comes.
    #[tokio::test]
    async fn per_message_notifies_every_message() {
        let h = harness("once_per_run = false\ninputs_per_batch = 1\n");
        deliver(&h, "batch-000001", json!({})).await;
        deliver(&h, "batch-000002", json!({})).await;
        assert_eq!(h.notifications.published().len(), 2);
    }

    /// A notifier without a topic rejects the message into a report: nothing is dropped
    /// silently.
    #[tokio::test]
    async fn a_notification_without_a_topic_is_rejected_not_lost() {
        let h = Harness::<Notifier<Defaults>>::new(
            "notify",
            "[pipeline]\nname='acme'\ndata_bucket='data'\n[steps.notify]\n",
        );
        deliver(&h, "distribution", json!({})).await;
        assert!(h.notifications.published().is_empty());
        let reports = h.objects.keys("data", "reports/");
        assert!(
            reports.iter().any(|k| k.contains("/rejected/")),
            "{reports:?}"
        );
    }
}
