//! The `distribution-scheduler` step: one distribution per run, after every contact batch.
//!
//! This is the pipeline's fan-in. Every imported batch sends a message here; each one reads
//! the run manifest (written by the validator before its last batch leaves) and counts the
//! batch markers. Only a message that finds every batch done goes on, and a claim object
//! makes sure one of them schedules the distribution (`POST /distributions`), for a time
//! relative to the logical date; the others come back later. The result is stored, so a
//! later or repeated message re-emits it instead of scheduling again. Nothing depends on
//! timing.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::envelope::{Envelope, LogicalDate};
use crate::error::StepError;
use crate::kinds::contacts::ContactsImported;
use crate::kinds::{Claim, claim, release};
use crate::kinds::{
    Output, RecordBatch, RunManifest, batch_marker_prefix, emit_all, manifest_key, read_state,
    write_state,
};
use crate::qualtrics::{ApiRequest, endpoint, find_in_pages};
use crate::step::{InitContext, Step, StepContext};
use crate::zones;

/// The catalog id.
pub const KIND: &str = "distribution-scheduler";

/// The overridable hook methods of [`Hooks`].
pub const HOOKS: &[&str] = &[
    "send_time",
    "build_request",
    "handle_response",
    "choose_output",
];

/// `[steps.<name>]` of a distribution scheduler.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// The survey (`SV_…`).
    pub survey_id: String,
    /// The message library (`UR_…` or `GR_…`).
    pub library_id: String,
    /// The message (`MS_…`).
    pub message_id: String,
    /// The sender address.
    pub from_email: String,
    /// The sender name.
    pub from_name: String,
    /// The subject.
    pub subject: String,
    /// The reply-to address.
    #[serde(default)]
    pub reply_to_email: Option<String>,
    /// Hours after midnight UTC of the logical date to send at (may be negative).
    #[serde(default = "default_send_offset")]
    pub send_offset_hours: i64,
    /// Days the survey link stays valid after sending.
    #[serde(default = "default_expiration")]
    pub expiration_days: i64,
    /// `Individual`, `Multiple` or `Anonymous`.
    #[serde(default = "default_link_type")]
    pub link_type: String,
    /// Wait for every batch of the run (the fan-in); `false` schedules per message.
    #[serde(default = "default_true")]
    pub wait_for_all_batches: bool,
    /// A fixed mailing list (`CG_…`). With it the scheduler needs no contact importer: it
    /// reads the validator's record batches and schedules once the run is sealed.
    #[serde(default)]
    pub mailing_list_id: Option<String>,
}

/// What a scheduler reads: a contact importer's result, or, with a fixed
/// `mailing_list_id`, the validator's record batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ScheduleInput {
    /// A batch was imported into the run's list.
    Imported(ContactsImported),
    /// A batch of validated records (fixed-list pipelines).
    Records(RecordBatch),
}

fn default_send_offset() -> i64 {
    9
}

fn default_expiration() -> i64 {
    30
}

fn default_link_type() -> String {
    "Individual".to_owned()
}

fn default_true() -> bool {
    true
}

/// What the step emits once per run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributionScheduled {
    /// The distribution (`EMD_…`).
    pub distribution_id: String,
    /// The list it goes to.
    pub mailing_list_id: String,
    /// When it is sent (RFC 3339, UTC).
    pub send_date: String,
}

/// The client's hooks of a distribution scheduler.
pub trait Hooks: Send + Sync + 'static {
    /// When the distribution is sent.
    ///
    /// By default midnight UTC of the logical date plus `send_offset_hours`; see
    /// [`send_time`].
    fn send_time(&self, date: LogicalDate, settings: &Settings) -> time::OffsetDateTime {
        send_time(date, settings)
    }

    /// Builds the request.
    ///
    /// By default a `POST /distributions` of the configured message to the run's list; see
    /// [`build_request`].
    fn build_request(
        &self,
        mailing_list_id: &str,
        send_at: time::OffsetDateTime,
        settings: &Settings,
    ) -> ApiRequest {
        build_request(mailing_list_id, send_at, settings)
    }

    /// Reads the response.
    ///
    /// By default `result.id` is the distribution id; see [`handle_response`].
    fn handle_response(
        &self,
        response: &crate::qualtrics::ApiResponse,
        mailing_list_id: &str,
        send_at: time::OffsetDateTime,
    ) -> Result<DistributionScheduled, StepError> {
        handle_response(response, mailing_list_id, send_at)
    }

    /// Decides what goes to the next step.
    ///
    /// By default the result, keyed `distribution` so it is the same whichever batch
    /// triggered it; see [`choose_output`].
    fn choose_output(
        &self,
        scheduled: DistributionScheduled,
    ) -> Vec<Output<DistributionScheduled>> {
        choose_output(scheduled)
    }
}

/// Formats a time as Qualtrics expects: `2024-05-01T09:00:00Z`.
pub fn qualtrics_time(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// The default of [`Hooks::send_time`].
pub fn send_time(date: LogicalDate, settings: &Settings) -> time::OffsetDateTime {
    date.start_utc() + time::Duration::hours(settings.send_offset_hours)
}

/// The default of [`Hooks::build_request`].
pub fn build_request(
    mailing_list_id: &str,
    send_at: time::OffsetDateTime,
    settings: &Settings,
) -> ApiRequest {
    let mut header = json!({ "fromEmail": settings.from_email, "fromName": settings.from_name, "subject": settings.subject });
    if let Some(reply_to) = &settings.reply_to_email {
        header["replyToEmail"] = json!(reply_to);
    }
    let expires = send_at + time::Duration::days(settings.expiration_days);
    ApiRequest::post_json(
        endpoint::CREATE_DISTRIBUTION,
        "distributions",
        json!({
            "message": { "libraryId": settings.library_id, "messageId": settings.message_id },
            "recipients": { "mailingListId": mailing_list_id },
            "header": header,
            "surveyLink": { "surveyId": settings.survey_id, "expirationDate": qualtrics_time(expires), "type": settings.link_type },
            "sendDate": qualtrics_time(send_at),
        }),
    )
}

/// The default of [`Hooks::handle_response`].
pub fn handle_response(
    response: &crate::qualtrics::ApiResponse,
    mailing_list_id: &str,
    send_at: time::OffsetDateTime,
) -> Result<DistributionScheduled, StepError> {
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    let id: Id = response.result()?;
    Ok(DistributionScheduled {
        distribution_id: id.id,
        mailing_list_id: mailing_list_id.to_owned(),
        send_date: qualtrics_time(send_at),
    })
}

/// The default of [`Hooks::choose_output`].
pub fn choose_output(scheduled: DistributionScheduled) -> Vec<Output<DistributionScheduled>> {
    vec![Output::new("distribution", scheduled)]
}

/// The distribution scheduler step.
#[derive(Debug, Clone)]
pub struct DistributionScheduler<H> {
    /// The client's hooks.
    pub hooks: H,
    /// The settings.
    pub settings: Settings,
}

impl<H: Hooks> DistributionScheduler<H> {
    /// True once the manifest exists and every batch it counts has its marker.
    pub async fn run_complete<T>(input: &Envelope<T>, cx: &StepContext) -> Result<bool, StepError> {
        let Some(manifest) =
            read_state::<RunManifest>(cx, &manifest_key(input.logical_date, &input.run_id)).await?
        else {
            return Ok(false);
        };
        let prefix = batch_marker_prefix(input.logical_date, &input.run_id);
        let done = cx
            .services()
            .objects
            .list(cx.data_bucket(), &prefix)
            .await?
            .len() as u64;
        tracing::info!(done, expected = manifest.batches, "fan-in check");
        Ok(done >= manifest.batches)
    }
}

impl<H> DistributionScheduler<H> {
    /// The survey's distribution to `list` already scheduled, if there is one.
    async fn find_distribution(
        &self,
        list: &str,
        send_at: time::OffsetDateTime,
        cx: &StepContext,
    ) -> Result<Option<DistributionScheduled>, StepError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Recipients {
            #[serde(default)]
            mailing_list_id: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Message {
            #[serde(default)]
            message_id: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Listed {
            id: String,
            #[serde(default)]
            recipients: Option<Recipients>,
            #[serde(default)]
            message: Option<Message>,
            #[serde(default)]
            send_date: Option<String>,
        }
        let when = |text: &str| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
        };
        let request = ApiRequest::get(endpoint::LIST_DISTRIBUTIONS, "distributions")
            .query("surveyId", self.settings.survey_id.clone())
            .query("mailingListId", list);
        // Another scheduler of the run (a reminder) may send to the same list: the same
        // list, message and send time make it this step's.
        let found = find_in_pages::<Listed, _>(&*cx.services().qualtrics, request, 100, |d| {
            d.recipients
                .as_ref()
                .and_then(|r| r.mailing_list_id.as_deref())
                == Some(list)
                && d.message.as_ref().and_then(|m| m.message_id.as_deref())
                    == Some(self.settings.message_id.as_str())
                && d.send_date.as_deref().and_then(when) == Some(send_at)
        })
        .await?;
        Ok(found.map(|d| DistributionScheduled {
            distribution_id: d.id,
            mailing_list_id: list.to_owned(),
            send_date: qualtrics_time(send_at),
        }))
    }
}

impl<H: Hooks + Default> DistributionScheduler<H> {
    /// The list to distribute to, and whether the run is ready for it: every batch
    /// imported, or, with a fixed list, the run sealed by the validator's manifest.
    async fn list_and_readiness(
        &self,
        input: &Envelope<ScheduleInput>,
        cx: &StepContext,
    ) -> Result<(String, bool), StepError> {
        match (&input.payload, &self.settings.mailing_list_id) {
            (ScheduleInput::Imported(imported), fixed) => {
                let list = fixed
                    .clone()
                    .unwrap_or_else(|| imported.mailing_list_id.clone());
                let ready =
                    !self.settings.wait_for_all_batches || Self::run_complete(input, cx).await?;
                Ok((list, ready))
            }
            (ScheduleInput::Records(_), Some(fixed)) => {
                let key = manifest_key(input.logical_date, &input.run_id);
                let sealed = read_state::<RunManifest>(cx, &key).await?.is_some();
                Ok((fixed.clone(), sealed || !self.settings.wait_for_all_batches))
            }
            (ScheduleInput::Records(_), None) => Err(StepError::permanent(
                "records reached a distribution scheduler with no fixed mailing_list_id; set one, \
                 or put a contact-importer before it",
            )),
        }
    }
}

impl<H: Hooks + Default> Step for DistributionScheduler<H> {
    type Input = ScheduleInput;
    const KIND: &'static str = KIND;

    fn init(cx: &InitContext<'_>) -> Result<Self, crate::Error> {
        Ok(Self {
            hooks: H::default(),
            settings: cx.settings()?,
        })
    }

    async fn process(
        &self,
        input: &Envelope<ScheduleInput>,
        cx: &StepContext,
    ) -> Result<(), StepError> {
        let result_key = zones::run_state(
            input.logical_date,
            &input.run_id,
            &format!("{}/result.json", cx.step_name()),
        );
        if let Some(done) = read_state::<DistributionScheduled>(cx, &result_key).await? {
            return emit_all(input, self.hooks.choose_output(done), cx).await;
        }
        let (list, ready) = self.list_and_readiness(input, cx).await?;
        if !ready {
            tracing::info!("run not complete yet; a later batch will schedule the distribution");
            return Ok(());
        }
        let claim_key = zones::run_state(
            input.logical_date,
            &input.run_id,
            &format!("{}/claim", cx.step_name()),
        );
        let claimed = claim(cx, &claim_key, input.attempt).await?;
        if claimed == Claim::HeldByOther {
            // Not a no-op: if the holder crashed, this message must come back, find the
            // result, or take the claim over once its lease expires.
            return Err(StepError::retryable(
                "another delivery of this run is scheduling the distribution",
            ));
        }
        let send_at = self.hooks.send_time(input.logical_date, &self.settings);
        // A delivery that scheduled it and crashed before recording it left it behind.
        if claimed == Claim::Resumed
            && let Some(found) = self.find_distribution(&list, send_at, cx).await?
        {
            write_state(cx, &result_key, &found).await?;
            return emit_all(input, self.hooks.choose_output(found), cx).await;
        }
        let request = self.hooks.build_request(&list, send_at, &self.settings);
        let response = match cx.services().qualtrics.send(request).await {
            Err(e) => {
                release(cx, &claim_key, input.attempt, &e).await?;
                return Err(e);
            }
            Ok(response) => response,
        };
        let scheduled = self.hooks.handle_response(&response, &list, send_at)?;
        write_state(cx, &result_key, &scheduled).await?;
        emit_all(input, self.hooks.choose_output(scheduled), cx).await
    }
}
