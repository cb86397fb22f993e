//! The validator: the first step of every pipeline.
//!
//! It turns whatever arrived (an S3 event for a landed file, an envelope from the SFTP
//! poller, an HTTP submission forwarded by API Gateway) into a run, stores the input in the
//! raw zone before touching it, then streams it row by row in constant memory: each row is
//! checked against the schema declared in config, rejected rows go to a report the client
//! can read, valid rows go on in batches. Once it knows the number of batches it writes the
//! run manifest, *before* sending the last batch, so the fan-in downstream never depends on
//! timing.

mod bloom;
mod compact;
mod defaults;
mod deferred;
mod hashes;
pub mod read;
mod run;
pub mod schema;
mod seen;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::envelope::{Envelope, RunId};
use crate::error::StepError;
use crate::kinds::sources::{http, s3};
use crate::kinds::{Output, Record, RecordBatch};
use crate::step::{InitContext, Message, Step, StepContext};
use crate::zones;

use defaults::Hook;
use read::Rows;
use run::RunState;
use seen::Seen;

pub use read::Format;
pub use schema::{Column, ColumnType};

/// The catalog id.
pub const KIND: &str = "validator";

/// The overridable hook methods of [`Hooks`].
pub const HOOKS: &[&str] = &["parse_source", "validate_row", "map", "choose_output"];

/// `[steps.<name>]` of a validator.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The file format (`auto`, `csv`, `jsonl`).
    pub format: Format,
    /// The declared columns.
    pub columns: Vec<Column>,
    /// The primary key column; rows repeating a key are rejected (the first is kept).
    /// A 64-bit hash is kept per distinct key, not the key.
    pub primary_key: Option<String>,
    /// The memory for dedup's set of key hashes, in KiB. Past it, a Bloom filter of the
    /// same size (at least 4 MiB) takes over: the hash of each key it calls new goes to
    /// `temp_dir` (8 bytes a row), and each row it may have seen waits there, as read, to
    /// be decided exactly at the end of the file. The rows sent and rejected are the same;
    /// the rows that waited are sent or rejected after the others, so which rows a batch
    /// holds depends on this budget (as on `batch_size`): change it for a run under way by
    /// replaying the run from the validator.
    pub dedup_memory_kb: usize,
    /// Where dedup past `dedup_memory_kb` writes; the system temp directory (`/tmp` on
    /// Lambda, its ephemeral storage) by default.
    pub temp_dir: Option<PathBuf>,
    /// Records per output batch, at most: a batch whose JSON is over SQS's message limit
    /// goes as parts that fit (`batch-000001.1`, `.2`, …).
    pub batch_size: usize,
    /// Rejected rows per report object.
    pub report_rows: usize,
    /// The record schema version stamped on a new run's envelopes. Raise it when the
    /// file's columns change, and branch on `Envelope::record_schema` in later hooks, so a
    /// replay of old raw data is still read as the old schema.
    pub record_schema: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            format: Format::Auto,
            columns: Vec::new(),
            primary_key: None,
            dedup_memory_kb: 32 << 10,
            temp_dir: None,
            batch_size: 100,
            report_rows: 10_000,
            record_schema: 1,
        }
    }
}

/// What a validator run reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum Source {
    /// A landed object.
    Object {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The version an S3 event announced (versioned buckets), which the raw copy is
        /// made of; else the key's current version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version_id: Option<String>,
    },
    /// A submission carried in the message (HTTP).
    Inline {
        /// The format of `body`.
        format: Format,
        /// The submitted text.
        body: String,
    },
}

/// The client's hooks of a validator. Every method has a default.
///
/// When `validate_row` and `map` keep their defaults, the validator checks CSV rows without
/// building a [`Record`] for each, and builds a batch's records only for a `choose_output`
/// override; the outputs are the same.
pub trait Hooks: Send + Sync + 'static {
    /// Turns a message into a run.
    ///
    /// By default it accepts an envelope, an S3 event notification or an HTTP submission;
    /// see [`parse_source`].
    fn parse_source(
        &self,
        message: &Message<'_>,
        cx: &StepContext,
    ) -> Result<Envelope<Source>, StepError> {
        parse_source(message, cx)
    }

    /// Checks one row, converting its values in place; the error is the rejection reason
    /// written to the report beside the row.
    ///
    /// It must decide a row the same way each time it sees it: once a file's keys outgrow
    /// `dedup_memory_kb`, a row whose key may repeat an earlier one is checked again at the
    /// end of the file, from the row as read, and a row that passed the first time and
    /// fails the second fails the run, naming its line.
    ///
    /// By default it applies the declared columns; see [`validate_row`].
    fn validate_row(&self, row: &mut Record, settings: &Settings) -> Result<(), String> {
        defaults::ran::<Self>(Hook::ValidateRow);
        validate_row(row, settings)
    }

    /// Reshapes a valid row for the next step.
    ///
    /// By default the row is unchanged; see [`map`].
    fn map(&self, row: Record) -> Result<Record, String> {
        defaults::ran::<Self>(Hook::Map);
        map(row)
    }

    /// Decides what a full batch becomes.
    ///
    /// By default one output per batch, keyed `batch-000001`, …; see [`choose_output`].
    fn choose_output(&self, batch: RecordBatch, batch_number: u64) -> Vec<Output<RecordBatch>> {
        defaults::ran::<Self>(Hook::ChooseOutput);
        choose_output(batch, batch_number)
    }
}

/// The default of [`Hooks::parse_source`].
///
/// An envelope is read as such. An S3 event becomes a run whose id derives from the bucket,
/// key and ETag, for the date found in the key (`…/2024-05-01/…`) or else the event's date.
/// Anything else is an HTTP submission for the date it carries or the day SQS received it.
pub fn parse_source(
    message: &Message<'_>,
    cx: &StepContext,
) -> Result<Envelope<Source>, StepError> {
    let pipeline = &cx.config().pipeline.name;
    if message.body.contains("\"schema_version\"") {
        return crate::step::parse(message);
    }
    if let Some(event) = s3::parse_event(message.body) {
        let event = event?;
        let date = s3::date_in_key(&event.key)
            .or(event.event_date)
            .ok_or_else(|| StepError::permanent("S3 event without a date"))?;
        // The identity must stay what it was for every message already sent: a change
        // would make a redriven message a new run, repeating its first attempt's effects.
        let identity = format!(
            "s3://{}/{}@{}",
            event.bucket,
            event.key,
            event.etag.as_deref().unwrap_or("")
        );
        let source = Source::Object {
            bucket: event.bucket,
            key: event.key,
            version_id: event.version_id,
        };
        return Ok(Envelope::new(
            pipeline.clone(),
            RunId::derive(pipeline, &identity),
            date,
            cx.step_name(),
            "file",
            source,
        ));
    }
    let submission = http::parse_submission(message.body)?;
    let date = submission
        .logical_date
        .or_else(|| message.sent_timestamp_ms.and_then(http::date_of_timestamp))
        .ok_or_else(|| {
            StepError::permanent("submission has no logical_date and no SentTimestamp")
        })?;
    // The body alone: a bare body's date comes from `SentTimestamp`, which a redrive
    // renews, so a date in the identity would make a redriven submission a second run. The
    // same bare body sent again is the same run; the wrapped form's `logical_date` is in
    // the body, so a submission for another day is another run.
    let run = RunId::derive(pipeline, &format!("http:{}", message.body));
    let source = Source::Inline {
        format: submission.format,
        body: submission.body,
    };
    Ok(Envelope::new(
        pipeline.clone(),
        run,
        date,
        cx.step_name(),
        "submission",
        source,
    ))
}

/// The default of [`Hooks::validate_row`]: the declared columns' rules.
pub fn validate_row(row: &mut Record, settings: &Settings) -> Result<(), String> {
    schema::check_row(row, &settings.columns)
}

/// The default of [`Hooks::map`]: the row unchanged.
pub fn map(row: Record) -> Result<Record, String> {
    Ok(row)
}

/// The default of [`Hooks::choose_output`]: one output per batch.
pub fn choose_output(batch: RecordBatch, batch_number: u64) -> Vec<Output<RecordBatch>> {
    vec![Output::new(batch_key(batch_number), batch)]
}

fn batch_key(batch_number: u64) -> String {
    format!("batch-{batch_number:06}")
}

/// The validator step.
#[derive(Debug, Clone)]
pub struct Validator<H> {
    /// The client's hooks.
    pub hooks: H,
    /// The settings.
    pub settings: Settings,
}

impl<H: Hooks + Default> Step for Validator<H> {
    type Input = Source;
    const KIND: &'static str = KIND;
    const USES_QUALTRICS: bool = false;

    fn init(cx: &InitContext<'_>) -> Result<Self, crate::Error> {
        Ok(Self {
            hooks: H::default(),
            settings: cx.settings()?,
        })
    }

    fn parse(
        &self,
        message: &Message<'_>,
        cx: &StepContext,
    ) -> Result<Envelope<Source>, StepError> {
        let input = self.hooks.parse_source(message, cx)?;
        // A replayed envelope keeps the schema it was written with; a new run gets today's.
        Ok(if message.body.contains("\"schema_version\"") {
            input
        } else {
            input.with_record_schema(self.settings.record_schema)
        })
    }

    async fn process(&self, input: &Envelope<Source>, cx: &StepContext) -> Result<(), StepError> {
        let (raw_key, format) = store_raw(input, cx).await?;
        let mut rows = open_rows(cx, &raw_key, format).await?;
        let seen = Seen::new(self.dedup_memory(), self.dedup_dir());
        let mut run = RunState::new(self, input, cx, seen);
        loop {
            if let Some((headers, ahead)) = rows.fill_ahead().await {
                run.warm(headers, ahead);
            }
            let Some((line, row)) = next_row(&mut rows, &raw_key).await? else {
                break;
            };
            run.raw_row(line, row).await?;
        }
        run.finish().await
    }
}

impl<H> Validator<H> {
    /// Dedup's memory budget in bytes.
    fn dedup_memory(&self) -> usize {
        self.settings.dedup_memory_kb.saturating_mul(1 << 10)
    }

    /// Where dedup past its memory writes.
    fn dedup_dir(&self) -> PathBuf {
        (self.settings.temp_dir.clone()).unwrap_or_else(std::env::temp_dir)
    }
}

async fn open_rows(cx: &StepContext, raw_key: &str, format: Format) -> Result<Rows, StepError> {
    let reader = cx
        .services()
        .objects
        .get(cx.data_bucket(), raw_key)
        .await?
        .ok_or_else(|| StepError::retryable(format!("raw copy {raw_key} not readable yet")))?;
    Rows::open(reader, format).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidData {
            let fix = "save it as UTF-8 CSV with a header row and send it again";
            StepError::permanent(format!("{raw_key}: {e}; {fix}")).with_source(e)
        } else {
            StepError::retryable(format!("reading {raw_key}")).with_source(e)
        }
    })
}

async fn next_row<'r>(
    rows: &'r mut Rows,
    raw_key: &str,
) -> Result<Option<(u64, read::RawRow<'r>)>, StepError> {
    rows.next_raw()
        .await
        .map_err(|e| StepError::retryable(format!("reading {raw_key}")).with_source(e))
}

async fn store_raw(
    input: &Envelope<Source>,
    cx: &StepContext,
) -> Result<(String, Format), StepError> {
    let objects = &cx.services().objects;
    match &input.payload {
        Source::Object {
            bucket,
            key,
            version_id,
        } => {
            let raw = zones::raw(input.logical_date, &input.run_id, key);
            // A replay reads the raw copy itself, which is already where it belongs. Once an
            // attempt has copied the file, the copy is the run's input: a redelivery reads
            // it, not whatever the landing key holds by then (a corrected file uploaded
            // since is another run), nor fails because the client has removed the file.
            // The first copy is of the version the event announced, for the same reason.
            let replay = (bucket.as_str(), key.as_str()) == (cx.data_bucket(), raw.as_str());
            if !replay && !objects.list(cx.data_bucket(), &raw).await?.contains(&raw) {
                let version = version_id.as_deref();
                (objects.copy(bucket, key, version, cx.data_bucket(), &raw)).await?;
            }
            let format: Settings = cx
                .config()
                .step_settings(cx.step_name())
                .unwrap_or_default();
            Ok((raw, format.format.resolve(key)))
        }
        Source::Inline { format, body } => {
            let format = format.resolve("submission");
            let name = if format == Format::Jsonl {
                "submission.jsonl"
            } else {
                "submission.csv"
            };
            let raw = zones::raw(input.logical_date, &input.run_id, name);
            objects
                .put(cx.data_bucket(), &raw, body.clone().into())
                .await?;
            Ok((raw, format))
        }
    }
}
