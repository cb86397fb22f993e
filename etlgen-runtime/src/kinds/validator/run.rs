//! One validator run: rows in, batches and reject reports out.
//!
//! Kept apart from the step so the order the fan-in relies on (the manifest is written
//! before the last batch leaves) and the switch between checking `Record`s and checking
//! cells (see `compact`) read in one place. When a row hook is overridden, the same code
//! runs the pass that only collects primary keys for dedup past its memory budget (`dry`),
//! so that pass checks exactly the keys that the real pass checks (see `collect`).

use super::compact::{CompactBatch, Payload, Plan};
use super::defaults::{self, Hook, Known};
use super::read::RawRow;
use super::seen::{Repeats, Seen};
use super::{Hooks, Source, Validator, batch_key};
use crate::envelope::Envelope;
use crate::error::StepError;
use crate::kinds::{Output, Record, RecordBatch, RunManifest, manifest_key, notifier, write_state};
use crate::step::StepContext;
use crate::zones;

pub(super) struct RunState<'a, H> {
    step: &'a Validator<H>,
    input: &'a Envelope<Source>,
    cx: &'a StepContext,
    /// The current batch, while rows are `Record`s.
    batch: Vec<Record>,
    /// The CSV file's plan and current batch, once no hook sees single rows.
    compact: Option<(Plan, CompactBatch)>,
    known: Known,
    batches: u64,
    /// The last batch cut, serialized: held back until the manifest is written.
    pending: Vec<Output<String>>,
    emitted: u64,
    valid: u64,
    rejected: u64,
    seen: Seen,
    /// Rows read so far, every row of the file counted (the row being checked is number
    /// `rows_read - 1`).
    rows_read: u64,
    /// Sends and writes nothing: the pass that collects the keys.
    dry: bool,
    report: csv::Writer<Vec<u8>>,
    report_rows: usize,
    reports: u64,
}

impl<'a, H: Hooks> RunState<'a, H> {
    pub(super) fn new(
        step: &'a Validator<H>,
        input: &'a Envelope<Source>,
        cx: &'a StepContext,
        seen: Seen,
        dry: bool,
        first_row: u64,
    ) -> Self {
        Self {
            step,
            input,
            cx,
            batch: Vec::new(),
            compact: None,
            known: Known::default(),
            batches: 0,
            pending: Vec::new(),
            emitted: 0,
            valid: 0,
            rejected: 0,
            seen,
            rows_read: first_row,
            dry,
            report: report_writer(),
            report_rows: 0,
            reports: 0,
        }
    }

    /// Whether dedup must go on from the keys collected by a pass of its own.
    pub(super) fn seen_full(&self) -> bool {
        self.step.settings.primary_key.is_some() && self.seen.full()
    }

    /// Rows read so far, every row of the file counted.
    pub(super) fn rows_read(&self) -> u64 {
        self.rows_read
    }

    /// Whether the row hooks are known to be the defaults, so a CSV row's key is checked
    /// only by the declared columns.
    pub(super) fn row_hooks_default(&self) -> bool {
        self.known.row_hooks_default()
    }

    /// Starts the pass that collects the keys of the rows not read yet (see
    /// `Seen::start_collecting`).
    pub(super) fn start_collecting(
        &mut self,
        dir: &std::path::Path,
        memory: usize,
    ) -> Result<Seen, StepError> {
        std::mem::take(&mut self.seen).start_collecting(dir, memory)
    }

    /// Goes on rejecting the keys that pass found repeated.
    pub(super) fn look_up(&mut self, repeats: Repeats) {
        self.seen.look_up(repeats);
    }

    /// The keys a dry pass collected.
    pub(super) fn into_seen(self) -> Seen {
        self.seen
    }

    /// Warms dedup's set with the keys of the rows read ahead, the next ones to be checked
    /// (see `Seen::warm`).
    pub(super) fn warm(
        &mut self,
        headers: &csv_async::StringRecord,
        records: &[csv_async::StringRecord],
    ) {
        let Some(column) = &self.step.settings.primary_key else {
            return;
        };
        // The last field of that name, as a row's cells and `Record`s take it; one key per
        // record, so the hashes line up with the rows.
        if let Some(at) = (0..headers.len()).rev().find(|&at| &headers[at] == column) {
            let keys = records.iter().map(|record| record.get(at).unwrap_or(""));
            self.seen.warm(keys, self.rows_read);
        }
    }

    /// One row as read.
    pub(super) async fn raw_row(&mut self, line: u64, row: RawRow<'_>) -> Result<(), StepError> {
        self.rows_read += 1;
        match row {
            RawRow::Csv { headers, record } => self.csv_row(line, headers, record).await,
            other => self.row(line, other.into_record()).await,
        }
    }

    fn batch_size(&self) -> usize {
        self.step.settings.batch_size.max(1)
    }

    /// A CSV row: checked as cells once the row hooks are known to be the defaults and the
    /// batch of `Record`s is empty, as a `Record` until then.
    async fn csv_row(
        &mut self,
        line: u64,
        headers: &csv_async::StringRecord,
        record: &csv_async::StringRecord,
    ) -> Result<(), StepError> {
        if self.compact.is_none() && self.known.row_hooks_default() && self.batch.is_empty() {
            let settings = &self.step.settings;
            let plan = Plan::new(headers, &settings.columns, settings.primary_key.as_deref());
            let batch = plan.batch();
            self.compact = Some((plan, batch));
        }
        let Some((plan, batch)) = &mut self.compact else {
            let row = RawRow::Csv { headers, record }.into_record();
            return self.row(line, row).await;
        };
        let settings = &self.step.settings;
        let batch_size = settings.batch_size.max(1);
        batch.push(plan, record.as_slice(), |field| record.range(field));
        let mut checked = batch.check(plan, &settings.columns);
        if let (Ok(()), Some(column)) = (&checked, &settings.primary_key) {
            let (key, row) = (batch.primary_key(plan), self.rows_read - 1);
            checked = if batch.key_as_read(plan) {
                self.seen.insert_as_read(column, key, row)?
            } else {
                self.seen.insert(column, key, row)?
            };
        }
        if let Err(reason) = checked {
            let row = batch.pending_record();
            batch.discard();
            return self.reject(line, &reason, Some(&row)).await;
        }
        batch.commit();
        self.valid += 1;
        if batch.len() >= batch_size {
            self.cut_batch().await?;
        }
        Ok(())
    }

    pub(super) async fn row(
        &mut self,
        line: u64,
        row: Result<Record, String>,
    ) -> Result<(), StepError> {
        let hooks = &self.step.hooks;
        let mut row = match row {
            Ok(row) => row,
            Err(reason) => return self.reject(line, &reason, None).await,
        };
        let (checked, default) = defaults::probe::<H, _>(Hook::ValidateRow, || {
            hooks.validate_row(&mut row, &self.step.settings)
        });
        self.known.validate_row = Some(default);
        let checked = match checked {
            Ok(()) => self.dedup(&row)?,
            failed => failed,
        };
        if let Err(reason) = checked {
            return self.reject(line, &reason, Some(&row)).await;
        }
        let (mapped, default) = defaults::probe::<H, _>(Hook::Map, || hooks.map(row));
        self.known.map = Some(default);
        match mapped {
            Ok(row) => {
                self.valid += 1;
                self.batch.push(row);
                if self.batch.len() >= self.batch_size() {
                    self.cut_batch().await?;
                }
            }
            Err(reason) => self.reject(line, &reason, None).await?,
        }
        Ok(())
    }

    fn dedup(&mut self, row: &Record) -> Result<Result<(), String>, StepError> {
        let Some(column) = &self.step.settings.primary_key else {
            return Ok(Ok(()));
        };
        (self.seen).insert(column, row.get(column).map(Into::into), self.rows_read - 1)
    }

    fn batch_len(&self) -> usize {
        self.batch.len() + self.compact.as_ref().map_or(0, |(_, batch)| batch.len())
    }

    /// Closes the current batch; the previous one is sent, this one is held back so the
    /// manifest is always written before the last batch leaves.
    async fn cut_batch(&mut self) -> Result<(), StepError> {
        self.batches += 1;
        let number = self.batches;
        if self.dry {
            self.batch.clear();
            if let Some((_, batch)) = &mut self.compact {
                batch.take();
            }
            return Ok(());
        }
        let records = match &mut self.compact {
            Some((_, batch)) if batch.len() > 0 => {
                let batch = batch.take();
                if self.known.choose_output == Some(true) {
                    let output = Output::new(batch_key(number), Payload::Compact(batch));
                    return self.send_previous(vec![output]).await;
                }
                batch.into_records()
            }
            _ => RecordBatch {
                records: std::mem::take(&mut self.batch),
            },
        };
        let hooks = &self.step.hooks;
        let (outputs, default) =
            defaults::probe::<H, _>(Hook::ChooseOutput, || hooks.choose_output(records, number));
        self.known.choose_output = Some(default);
        let outputs = outputs
            .into_iter()
            .map(|o| Output::new(o.record_key, Payload::Records(o.payload)))
            .collect();
        self.send_previous(outputs).await
    }

    async fn send_previous(&mut self, outputs: Vec<Output<Payload>>) -> Result<(), StepError> {
        let mut serialized = Vec::with_capacity(outputs.len());
        for output in outputs {
            fit_message(output, &mut serialized)?;
        }
        let previous = std::mem::replace(&mut self.pending, serialized);
        self.emitted += previous.len() as u64;
        emit_payloads(self.input, previous, self.cx).await
    }

    async fn reject(
        &mut self,
        line: u64,
        reason: &str,
        row: Option<&Record>,
    ) -> Result<(), StepError> {
        if self.dry {
            return Ok(());
        }
        self.rejected += 1;
        self.report_rows += 1;
        let record = row
            .map(|r| serde_json::Value::Object(r.clone()).to_string())
            .unwrap_or_default();
        self.report
            .write_record([line.to_string().as_str(), reason, record.as_str()])
            .map_err(|e| StepError::retryable("writing the report").with_source(e))?;
        if self.report_rows >= self.step.settings.report_rows.max(1) {
            self.flush_report().await?;
        }
        Ok(())
    }

    async fn flush_report(&mut self) -> Result<(), StepError> {
        if self.report_rows == 0 {
            return Ok(());
        }
        self.reports += 1;
        let writer = std::mem::replace(&mut self.report, report_writer());
        let body = writer
            .into_inner()
            .map_err(|e| StepError::retryable("writing the report").with_source(e.into_error()))?;
        let key = self.report_key(&format!("rejected-{:06}.csv", self.reports));
        self.report_rows = 0;
        self.cx
            .services()
            .objects
            .put(self.cx.data_bucket(), &key, body.into())
            .await
    }

    fn report_key(&self, name: &str) -> String {
        zones::report(
            self.input.logical_date,
            &self.input.run_id,
            self.cx.step_name(),
            name,
        )
    }

    pub(super) async fn finish(mut self) -> Result<(), StepError> {
        if self.batch_len() > 0 {
            self.cut_batch().await?;
        }
        self.flush_report().await?;
        let manifest = RunManifest {
            batches: self.emitted + self.pending.len() as u64,
            valid: self.valid,
            rejected: self.rejected,
        };
        let summary = self.report_key("summary.json");
        write_state(self.cx, &summary, &manifest).await?;
        write_state(
            self.cx,
            &manifest_key(self.input.logical_date, &self.input.run_id),
            &manifest,
        )
        .await?;
        tracing::info!(
            valid = self.valid,
            rejected = self.rejected,
            batches = manifest.batches,
            "validated"
        );
        if manifest.batches == 0 {
            // Nothing goes on to the steps that would tell the notifiers how the run ended.
            let reason = format!(
                "the file has no valid record ({} rejected)",
                manifest.rejected
            );
            notifier::tell_failure(self.cx, self.input, &reason, &summary).await?;
        }
        emit_payloads(self.input, std::mem::take(&mut self.pending), self.cx).await
    }
}

/// The most bytes of a batch's JSON: SQS's message limit less room for the envelope
/// around it (its keys and names, well under 4 KiB).
const BATCH_BYTES: usize = crate::step::MAX_MESSAGE_BYTES - (4 << 10);

/// Serializes `output`, once for every reader (`Payload::to_json`), into `into`; a batch
/// whose JSON is over [`BATCH_BYTES`] goes as parts, `<key>.1`, `<key>.2`, …, halved until
/// each fits. `batch_size` counts rows, and a few hundred wide rows are over SQS's limit,
/// which would refuse the batch with a 400 and stall the run's fan-in. The parts are the
/// same on every delivery of the file, and the manifest counts them.
fn fit_message(output: Output<Payload>, into: &mut Vec<Output<String>>) -> Result<(), StepError> {
    let serialize = |payload: &Payload| {
        payload
            .to_json()
            .map_err(|e| StepError::permanent("output is not serializable").with_source(e))
    };
    let json = serialize(&output.payload)?;
    if json.len() <= BATCH_BYTES {
        into.push(Output::new(output.record_key, json));
        return Ok(());
    }
    let records = match output.payload {
        Payload::Records(batch) => batch.records,
        Payload::Compact(batch) => batch.into_records().records,
    };
    let mut parts = Vec::new();
    halve(&records, &mut parts)?;
    for (number, json) in parts.into_iter().enumerate() {
        into.push(Output::new(
            format!("{}.{}", output.record_key, number + 1),
            json,
        ));
    }
    Ok(())
}

/// Appends the JSON of `records` as a `RecordBatch` to `parts`, split in halves until
/// each fits.
fn halve(records: &[Record], parts: &mut Vec<String>) -> Result<(), StepError> {
    #[derive(serde::Serialize)]
    struct Batch<'a> {
        records: &'a [Record],
    }
    let json = serde_json::to_string(&Batch { records })
        .map_err(|e| StepError::permanent("output is not serializable").with_source(e))?;
    if json.len() <= BATCH_BYTES {
        parts.push(json);
        return Ok(());
    }
    if records.len() < 2 {
        return Err(StepError::permanent(format!(
            "a record is {} bytes as JSON, over the {BATCH_BYTES} an SQS message leaves for \
             it; the file's rows must be smaller",
            json.len()
        )));
    }
    let (first, second) = records.split_at(records.len() / 2);
    halve(first, parts)?;
    halve(second, parts)
}

/// Sends each serialized output.
async fn emit_payloads(
    input: &Envelope<Source>,
    outputs: Vec<Output<String>>,
    cx: &StepContext,
) -> Result<(), StepError> {
    for output in outputs {
        cx.emit_json(
            &cx.next_envelope(input, output.record_key, ()),
            &output.payload,
        )
        .await?;
    }
    Ok(())
}

fn report_writer() -> csv::Writer<Vec<u8>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = writer.write_record(["line", "reason", "record"]);
    writer
}
