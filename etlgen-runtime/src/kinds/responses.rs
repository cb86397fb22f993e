//! The `response-importer` step: a batch of records imported as survey responses.
//!
//! The batch becomes CSV and goes to `POST /surveys/{surveyId}/import-responses` with an
//! `Idempotency-Key` header equal to the envelope's key, so a redelivered message can never
//! create duplicate responses. The step then polls the import's progress until it completes
//! or fails.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::error::StepError;
use crate::kinds::{Output, Record, RecordBatch, emit_all, poll};
use crate::qualtrics::{ApiRequest, Body, Method, endpoint};
use crate::step::{InitContext, Step, StepContext};

/// The catalog id.
pub const KIND: &str = "response-importer";

/// The overridable hook methods of [`Hooks`].
pub const HOOKS: &[&str] = &["map", "build_request", "handle_response", "choose_output"];

/// `[steps.<name>]` of a response importer.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// The survey (`SV_…`).
    pub survey_id: String,
    /// The CSV columns, in order; the first record's columns when empty.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Milliseconds between progress polls.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// Progress polls before giving up (retryable; the idempotency key makes the retry safe).
    #[serde(default = "default_max_polls")]
    pub max_polls: u32,
}

fn default_poll_ms() -> u64 {
    1000
}

fn default_max_polls() -> u32 {
    30
}

/// The import's final progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponsesImported {
    /// The import progress id.
    pub progress_id: String,
    /// `complete` (or `failed`, which the default rejects).
    pub status: String,
    /// The records sent.
    pub records: u64,
}

/// The client's hooks of a response importer.
pub trait Hooks: Send + Sync + 'static {
    /// Reshapes a record before it becomes a CSV row.
    ///
    /// By default the record is unchanged; see [`map`].
    fn map(&self, record: Record) -> Result<Record, StepError> {
        map(record)
    }

    /// Builds the import request.
    ///
    /// By default a CSV `POST /surveys/{surveyId}/import-responses` with the envelope's
    /// idempotency key; see [`build_request`].
    fn build_request(
        &self,
        input: &Envelope<RecordBatch>,
        records: &[Record],
        settings: &Settings,
    ) -> Result<ApiRequest, StepError> {
        build_request(input, records, settings)
    }

    /// Judges the finished import.
    ///
    /// By default `failed` is a permanent error; see [`handle_response`].
    fn handle_response(&self, imported: ResponsesImported) -> Result<ResponsesImported, StepError> {
        handle_response(imported)
    }

    /// Decides what goes to the next step.
    ///
    /// By default the result, keyed by the input's record key; see [`choose_output`].
    fn choose_output(
        &self,
        input: &Envelope<RecordBatch>,
        imported: ResponsesImported,
    ) -> Vec<Output<ResponsesImported>> {
        choose_output(input, imported)
    }
}

/// The default of [`Hooks::map`].
pub fn map(record: Record) -> Result<Record, StepError> {
    Ok(record)
}

/// Renders records as CSV with the given columns, or with every column any record has, in
/// the order they first appear (records from JSON lines or an HTTP submission need not
/// share their keys, and a column only a later record has must not be dropped).
pub fn to_csv(records: &[Record], columns: &[String]) -> Result<String, StepError> {
    let columns: Vec<String> = if columns.is_empty() {
        let mut seen = std::collections::HashSet::new();
        (records.iter().flat_map(|r| r.keys()))
            .filter(|key| seen.insert(key.as_str()))
            .cloned()
            .collect()
    } else {
        columns.to_vec()
    };
    let mut writer = csv::Writer::from_writer(Vec::new());
    let failed = |e: csv::Error| StepError::permanent("cannot render CSV").with_source(e);
    writer.write_record(&columns).map_err(failed)?;
    for record in records {
        let row = columns.iter().map(|c| match record.get(c) {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        });
        writer.write_record(row).map_err(failed)?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| StepError::permanent("cannot render CSV").with_source(e.into_error()))?;
    String::from_utf8(bytes).map_err(|e| StepError::permanent("CSV is not UTF-8").with_source(e))
}

/// The default of [`Hooks::build_request`].
pub fn build_request(
    input: &Envelope<RecordBatch>,
    records: &[Record],
    settings: &Settings,
) -> Result<ApiRequest, StepError> {
    let csv = to_csv(records, &settings.columns)?;
    Ok(ApiRequest::new(
        endpoint::IMPORT_RESPONSES,
        Method::Post,
        format!("surveys/{}/import-responses", settings.survey_id),
    )
    .header("Idempotency-Key", input.idempotency_key.to_string())
    .header("charset", "UTF-8")
    .body(Body::Text {
        content_type: "text/csv".to_owned(),
        text: csv,
    }))
}

/// The default of [`Hooks::handle_response`].
pub fn handle_response(imported: ResponsesImported) -> Result<ResponsesImported, StepError> {
    if imported.status.eq_ignore_ascii_case("failed") {
        return Err(StepError::permanent(format!(
            "response import {} failed",
            imported.progress_id
        )));
    }
    Ok(imported)
}

/// The default of [`Hooks::choose_output`].
pub fn choose_output(
    input: &Envelope<RecordBatch>,
    imported: ResponsesImported,
) -> Vec<Output<ResponsesImported>> {
    vec![Output::new(input.record_key.clone(), imported)]
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Progress {
    #[serde(default)]
    progress_id: Option<String>,
    #[serde(default)]
    status: String,
}

/// The response importer step.
#[derive(Debug, Clone)]
pub struct ResponseImporter<H> {
    /// The client's hooks.
    pub hooks: H,
    /// The settings.
    pub settings: Settings,
}

impl<H: Hooks + Default> Step for ResponseImporter<H> {
    type Input = RecordBatch;
    const KIND: &'static str = KIND;

    fn init(cx: &InitContext<'_>) -> Result<Self, crate::Error> {
        Ok(Self {
            hooks: H::default(),
            settings: cx.settings()?,
        })
    }

    async fn process(
        &self,
        input: &Envelope<RecordBatch>,
        cx: &StepContext,
    ) -> Result<(), StepError> {
        let records = input
            .payload
            .records
            .iter()
            .cloned()
            .map(|r| self.hooks.map(r))
            .collect::<Result<Vec<_>, _>>()?;
        // An override that builds its own request still never creates duplicate responses.
        let request = self
            .hooks
            .build_request(input, &records, &self.settings)?
            .idempotency_key(input.idempotency_key.to_string());
        let started: Progress = cx.services().qualtrics.send(request).await?.result()?;
        let progress_id = started
            .progress_id
            .ok_or_else(|| StepError::permanent("import started without a progressId"))?;
        let path = format!(
            "surveys/{}/import-responses/{progress_id}",
            self.settings.survey_id
        );
        let status = poll(
            "response import",
            Duration::from_millis(self.settings.poll_interval_ms),
            self.settings.max_polls,
            || async {
                let progress: Progress = cx
                    .services()
                    .qualtrics
                    .send(ApiRequest::get(
                        endpoint::IMPORT_RESPONSES_PROGRESS,
                        path.clone(),
                    ))
                    .await?
                    .result()?;
                let done = matches!(
                    progress.status.to_ascii_lowercase().as_str(),
                    "complete" | "failed"
                );
                Ok(done.then_some(progress.status))
            },
        )
        .await?;
        let imported = self.hooks.handle_response(ResponsesImported {
            progress_id,
            status,
            records: records.len() as u64,
        })?;
        emit_all(input, self.hooks.choose_output(input, imported), cx).await
    }
}
