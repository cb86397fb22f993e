//! The `notifier` step: a message to an SNS topic when a run succeeds or fails.
//!
//! A notification is its own step so a broken e-mail never forces a re-import: it reads
//! whatever the previous step emitted, renders a subject and a message, and publishes them.

use serde::Deserialize;

use crate::envelope::Envelope;
use crate::error::StepError;
use crate::step::{InitContext, Step, StepContext};

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
    /// By default the run, its date and the previous step's output as JSON; see
    /// [`render`].
    fn render(
        &self,
        input: &Envelope<serde_json::Value>,
        settings: &Settings,
    ) -> Option<Notification> {
        render(input, settings)
    }
}

/// The default of [`Hooks::render`].
pub fn render(input: &Envelope<serde_json::Value>, settings: &Settings) -> Option<Notification> {
    let failed = input
        .payload
        .get("status")
        .and_then(|s| s.as_str())
        .is_some_and(|s| s.eq_ignore_ascii_case("failed"));
    let outcome = if failed { "failed" } else { "succeeded" };
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
        let Some(notification) = self.hooks.render(input, &self.settings) else {
            return Ok(());
        };
        if self.settings.topic_arn.is_empty() {
            return Err(StepError::permanent("notifier has no topic_arn"));
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
}
