//! One validator run: rows in, batches and reject reports out.
//!
//! Kept apart from the step so the order the fan-in relies on (the manifest is written
//! before the last batch leaves) and the switch between checking `Record`s and checking
//! cells (see `compact`) read in one place. Rows that dedup past its memory budget leaves
//! for later come back through the same code at the end of the file, decided (see `seen`),
//! so they are checked, batched and reported as any other row.

use super::compact::{CompactBatch, Payload, Plan};
use super::defaults::{self, Hook, Known};
use super::deferred::{Row, Waiting};
use super::read::RawRow;
use super::schema::ValueRef;
use super::seen::{self, Seen, Verdict};
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
    /// Dedup's verdict on the row being checked again, decided at the end of the file:
    /// whether its key is repeated.
    decided: Option<bool>,
    /// Rows dedup left for later and checked again at the end.
    waited: u64,
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
            rows_read: 0,
            decided: None,
            waited: 0,
            report: report_writer(),
            report_rows: 0,
            reports: 0,
        }
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
            RawRow::Record(record) => {
                // As read, before any hook changes it, in case dedup leaves it for later.
                let may_wait = self.step.settings.primary_key.is_some() && self.seen.may_wait();
                let read = may_wait.then(|| record.clone());
                self.row(line, Ok(record), read.as_ref().map(Waiting::Json))
                    .await
            }
            other => self.row(line, other.into_record(), None).await,
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
            return self
                .row(line, row, Some(Waiting::Csv { headers, record }))
                .await;
        };
        let settings = &self.step.settings;
        let batch_size = settings.batch_size.max(1);
        batch.push(plan, record.as_slice(), |field| record.range(field));
        let mut checked = batch.check(plan, &settings.columns);
        if let (Ok(()), Some(column)) = (&checked, &settings.primary_key) {
            let (key, row) = (batch.primary_key(plan), self.rows_read - 1);
            let verdict = match self.decided.take() {
                Some(repeated) => decided(repeated, column, key),
                None if batch.key_as_read(plan) => self.seen.insert_as_read(column, key, row)?,
                None => self.seen.insert(column, key)?,
            };
            checked = match verdict {
                Verdict::New => Ok(()),
                Verdict::Repeated(reason) => Err(reason),
                Verdict::Later(hash) => {
                    batch.discard();
                    return (self.seen).wait(hash, line, Waiting::Csv { headers, record });
                }
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

    /// A row as a `Record`; `read` is the row as read, kept while dedup may leave it for
    /// later.
    pub(super) async fn row(
        &mut self,
        line: u64,
        row: Result<Record, String>,
        read: Option<Waiting<'_>>,
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
            Ok(()) => match self.dedup(&row)? {
                Verdict::New => Ok(()),
                Verdict::Repeated(reason) => Err(reason),
                Verdict::Later(hash) => {
                    let Some(read) = read else {
                        let lost = "dedup: a row left for later was not kept as read";
                        return Err(StepError::permanent(lost));
                    };
                    return self.seen.wait(hash, line, read);
                }
            },
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

    fn dedup(&mut self, row: &Record) -> Result<Verdict, StepError> {
        let Some(column) = &self.step.settings.primary_key else {
            return Ok(Verdict::New);
        };
        let key = row.get(column).map(Into::into);
        match self.decided.take() {
            Some(repeated) => Ok(decided(repeated, column, key)),
            None => self.seen.insert(column, key),
        }
    }

    fn batch_len(&self) -> usize {
        self.batch.len() + self.compact.as_ref().map_or(0, |(_, batch)| batch.len())
    }

    /// Closes the current batch; the previous one is sent, this one is held back so the
    /// manifest is always written before the last batch leaves.
    async fn cut_batch(&mut self) -> Result<(), StepError> {
        self.batches += 1;
        let number = self.batches;
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

    /// Checks again the rows dedup left for later, now decided, in row order.
    async fn decided_rows(&mut self) -> Result<(), StepError> {
        let Some(mut decisions) = self.seen.decisions()? else {
            return Ok(());
        };
        let headers = decisions.headers();
        while let Some(decision) = decisions.next()? {
            self.waited += 1;
            self.decided = Some(decision.repeated);
            match decision.row {
                Row::Csv(record) => self.csv_row(decision.line, &headers, &record).await?,
                Row::Json(record) => self.row(decision.line, Ok(record), None).await?,
            }
            if self.decided.take().is_some() {
                return Err(StepError::permanent(format!(
                    "line {}: a row that passed its checks failed them when checked again \
                     after dedup; the validator's row hooks must decide a row the same way \
                     every time",
                    decision.line
                )));
            }
        }
        Ok(())
    }

    pub(super) async fn finish(mut self) -> Result<(), StepError> {
        self.decided_rows().await?;
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
            waited_for_dedup = self.waited,
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

/// The verdict decided at the end of the file for a row dedup left for later.
fn decided(repeated: bool, column: &str, key: Option<ValueRef<'_>>) -> Verdict {
    if repeated {
        Verdict::Repeated(seen::repeated(column, key))
    } else {
        Verdict::New
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
