//! The `exporter` step: a run's survey responses back to the client (S3 or SFTP).
//!
//! It starts a response export for the logical date (`POST /surveys/{id}/export-responses`),
//! polls until the file is ready, downloads it and writes it to the client's destination
//! under a key derived from the run, so a redelivery overwrites the same object instead of
//! adding another.
//!
//! It exports a run once, when the last of its inputs has come: each input is marked and
//! counted against `inputs_per_batch` times the validator's batches plus `inputs_per_run`
//! (see `kinds::all_inputs_come`), a claim makes one delivery export, and the result is
//! stored so a later message re-emits it. Exporting at every input, as with neither count
//! set, overwrote the run's file with whichever export finished last, possibly one started
//! before the last batch was imported.
//!
//! The export it started is recorded under `runs/<date>/<run>/<step>/export.json` (or
//! `export-<key>.json` per input) before it is polled, so a redelivery (the polls ran out
//! on a large survey, the Lambda timed out) goes on polling that export instead of starting
//! another and waiting from the beginning again, which a slow export would never outlast. A
//! recorded export that is gone or failed, or whose file is, is replaced by a new one.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::envelope::Envelope;
use crate::error::StepError;
use crate::kinds::distribution::qualtrics_time;
use crate::kinds::{
    Claim, Output, RunInputs, all_inputs_come, claim, emit_all, poll, read_state, release,
    write_state,
};
use crate::ports::ObjectReader;
use crate::qualtrics::{ApiRequest, endpoint};
use crate::step::{InitContext, Step, StepContext};
use crate::zones;

/// The catalog id.
pub const KIND: &str = "exporter";

/// The overridable hook methods of [`Hooks`].
pub const HOOKS: &[&str] = &["build_request", "destination", "choose_output"];

/// `[steps.<name>]` of an exporter.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// The survey (`SV_…`).
    pub survey_id: String,
    /// `csv`, `json`, `ndjson`, `tsv`, `spss` or `xml`.
    #[serde(default = "default_format")]
    pub format: String,
    /// The client's bucket; the data bucket when absent. Ignored when `sftp_dir` is set.
    #[serde(default)]
    pub bucket: Option<String>,
    /// The prefix in that bucket.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Write to this directory of the client's SFTP server instead of S3.
    #[serde(default)]
    pub sftp_dir: Option<String>,
    /// Milliseconds between progress polls.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// Progress polls before giving up (retryable).
    #[serde(default = "default_max_polls")]
    pub max_polls: u32,
    /// Inputs a run brings for each batch the validator emits. With this or
    /// `inputs_per_run` set (etlgen sets both from the wiring), the run is exported once,
    /// when its last input has come; with neither, every input is exported.
    #[serde(default)]
    pub inputs_per_batch: u64,
    /// Inputs a run brings once.
    #[serde(default)]
    pub inputs_per_run: u64,
}

fn default_format() -> String {
    "csv".to_owned()
}

fn default_prefix() -> String {
    "exports/".to_owned()
}

fn default_poll_ms() -> u64 {
    2000
}

fn default_max_polls() -> u32 {
    60
}

/// Where an export goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "lowercase")]
pub enum Destination {
    /// An S3 object.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// A file on the client's SFTP server.
    Sftp {
        /// The path.
        path: String,
    },
}

/// What the step emits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportWritten {
    /// Where the file went.
    pub destination: Destination,
    /// Its size in bytes.
    pub bytes: u64,
}

/// The client's hooks of an exporter.
pub trait Hooks: Send + Sync + 'static {
    /// Builds the export request.
    ///
    /// By default the responses recorded on the logical date, zipped, in the configured
    /// format; see [`build_request`].
    fn build_request(
        &self,
        input: &Envelope<serde_json::Value>,
        settings: &Settings,
    ) -> ApiRequest {
        build_request(input, settings)
    }

    /// Where the file goes.
    ///
    /// By default `<prefix><logical_date>/<run_id>/responses.zip` in the bucket, or that
    /// name in `sftp_dir`; see [`destination`].
    fn destination(
        &self,
        input: &Envelope<serde_json::Value>,
        settings: &Settings,
        data_bucket: &str,
    ) -> Destination {
        destination(input, settings, data_bucket)
    }

    /// Decides what goes to the next step.
    ///
    /// By default the written location, keyed `export`; see [`choose_output`].
    fn choose_output(&self, written: ExportWritten) -> Vec<Output<ExportWritten>> {
        choose_output(written)
    }
}

/// `surveys/{survey_id}/export-responses`: where exports start, and the root of their
/// progress and files.
fn exports_path(settings: &Settings) -> String {
    format!("surveys/{}/export-responses", settings.survey_id)
}

/// The default of [`Hooks::build_request`].
pub fn build_request(input: &Envelope<serde_json::Value>, settings: &Settings) -> ApiRequest {
    let start = input.logical_date.start_utc();
    ApiRequest::post_json(
        endpoint::EXPORT_RESPONSES,
        exports_path(settings),
        json!({
            "format": settings.format,
            "startDate": qualtrics_time(start),
            "endDate": qualtrics_time(start + time::Duration::days(1)),
            "compress": true,
        }),
    )
}

/// The default of [`Hooks::destination`].
pub fn destination(
    input: &Envelope<serde_json::Value>,
    settings: &Settings,
    data_bucket: &str,
) -> Destination {
    let name = format!("{}/{}/responses.zip", input.logical_date, input.run_id);
    match &settings.sftp_dir {
        Some(dir) => Destination::Sftp {
            path: format!("{}/{}", dir.trim_end_matches('/'), name.replace('/', "_")),
        },
        None => Destination::S3 {
            bucket: settings
                .bucket
                .clone()
                .unwrap_or_else(|| data_bucket.to_owned()),
            key: format!("{}{name}", settings.prefix),
        },
    }
}

/// The default of [`Hooks::choose_output`].
pub fn choose_output(written: ExportWritten) -> Vec<Output<ExportWritten>> {
    vec![Output::new("export", written)]
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Progress {
    #[serde(default)]
    progress_id: Option<String>,
    #[serde(default)]
    status: String,
    #[serde(default)]
    file_id: Option<String>,
}

/// The export a delivery started (none once it failed).
#[derive(Serialize, Deserialize)]
struct Started {
    progress_id: Option<String>,
}

/// The exporter step.
#[derive(Debug, Clone)]
pub struct Exporter<H> {
    /// The client's hooks.
    pub hooks: H,
    /// The settings.
    pub settings: Settings,
}

impl<H: Hooks + Default> Step for Exporter<H> {
    type Input = serde_json::Value;
    const KIND: &'static str = KIND;
    const USES_SFTP: bool = true;

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
        let inputs = RunInputs {
            per_batch: self.settings.inputs_per_batch,
            per_run: self.settings.inputs_per_run,
        };
        let state = |name: &str| {
            zones::run_state(
                input.logical_date,
                &input.run_id,
                &format!("{}/{name}", cx.step_name()),
            )
        };
        if !inputs.counted() {
            let written = self
                .export(
                    input,
                    cx,
                    &state(&format!("export-{}.json", input.idempotency_key)),
                )
                .await?;
            return emit_all(input, self.hooks.choose_output(written), cx).await;
        }
        let result_key = state("result.json");
        if let Some(done) = read_state::<ExportWritten>(cx, &result_key).await? {
            return emit_all(input, self.hooks.choose_output(done), cx).await;
        }
        if all_inputs_come(input, inputs, cx).await?.is_none() {
            tracing::info!("the run has inputs still to come; the last of them exports it");
            return Ok(());
        }
        let claim_key = state("claim");
        if claim(cx, &claim_key, input.attempt).await? == Claim::HeldByOther {
            // Not a no-op: if the holder crashed, this message must come back, find the
            // result, or take the claim over once its lease expires.
            return Err(StepError::retryable(
                "another delivery of this run is exporting it",
            ));
        }
        let written = match self.export(input, cx, &state("export.json")).await {
            Err(e) => {
                release(cx, &claim_key, input.attempt, &e).await?;
                return Err(e);
            }
            Ok(written) => written,
        };
        write_state(cx, &result_key, &written).await?;
        emit_all(input, self.hooks.choose_output(written), cx).await
    }
}

impl<H: Hooks> Exporter<H> {
    /// Exports the run's responses to the destination. The export started is recorded
    /// under `state` before it is polled, so a redelivery goes on polling it.
    async fn export(
        &self,
        input: &Envelope<serde_json::Value>,
        cx: &StepContext,
        state: &str,
    ) -> Result<ExportWritten, StepError> {
        let resumed = read_state::<Started>(cx, state).await?;
        let file = match resumed.and_then(|started| started.progress_id) {
            Some(progress_id) => match self.file(&progress_id, cx).await {
                Err(e) if !e.is_retryable() => {
                    tracing::warn!(%progress_id, error = %e.chain(), "the export a delivery started, or its file, is gone or failed: starting another");
                    self.start(input, cx, state).await?
                }
                fetched => fetched?,
            },
            None => self.start(input, cx, state).await?,
        };
        let destination = self
            .hooks
            .destination(input, &self.settings, cx.data_bucket());
        let bytes = match &destination {
            Destination::S3 { bucket, key } => {
                cx.services().objects.put_stream(bucket, key, file).await?
            }
            Destination::Sftp { path } => cx.services().sftp.write_stream(path, file).await?,
        };
        Ok(ExportWritten { destination, bytes })
    }

    /// Starts an export, records it under `state` and opens its file once it is ready. One
    /// that fails is recorded as none, so a replay starts afresh.
    async fn start(
        &self,
        input: &Envelope<serde_json::Value>,
        cx: &StepContext,
        state: &str,
    ) -> Result<ObjectReader, StepError> {
        let started: Progress = (cx.services().qualtrics)
            .send(self.hooks.build_request(input, &self.settings))
            .await?
            .result()?;
        let progress_id = started
            .progress_id
            .ok_or_else(|| StepError::permanent("export started without a progressId"))?;
        let record = |progress_id| Started { progress_id };
        write_state(cx, state, &record(Some(progress_id.clone()))).await?;
        let fetched = self.file(&progress_id, cx).await;
        if fetched.as_ref().is_err_and(|e| !e.is_retryable()) {
            write_state(cx, state, &record(None)).await?;
        }
        fetched
    }
}

impl<H> Exporter<H> {
    /// Waits for export `progress_id` and opens its file, streamed from Qualtrics to the
    /// destination, so an export of any size fits.
    async fn file(&self, progress_id: &str, cx: &StepContext) -> Result<ObjectReader, StepError> {
        let file_id = self.file_id(progress_id, cx).await?;
        (cx.services().qualtrics)
            .download(ApiRequest::get(
                endpoint::EXPORT_RESPONSES_FILE,
                format!("{}/{file_id}/file", exports_path(&self.settings)),
            ))
            .await
    }

    /// Polls export `progress_id` until its file is ready; its `fileId`.
    async fn file_id(&self, progress_id: &str, cx: &StepContext) -> Result<String, StepError> {
        let api = &cx.services().qualtrics;
        let base = exports_path(&self.settings);
        poll(
            "response export",
            Duration::from_millis(self.settings.poll_interval_ms),
            self.settings.max_polls,
            || async {
                let progress: Progress = api
                    .send(ApiRequest::get(
                        endpoint::EXPORT_RESPONSES_PROGRESS,
                        format!("{base}/{progress_id}"),
                    ))
                    .await?
                    .result()?;
                match progress.status.to_ascii_lowercase().as_str() {
                    "failed" => Err(StepError::permanent(format!("export {progress_id} failed"))),
                    "complete" => progress
                        .file_id
                        .map(Some)
                        .ok_or_else(|| StepError::permanent("export complete without a fileId")),
                    _ => Ok(None),
                }
            },
        )
        .await
    }
}
