//! The second read of a file whose distinct keys outgrow dedup's memory (see `seen`).
//!
//! Once the set is full at row `P`, the run needs, for every row from `P` on, the hash its
//! key is checked with, and the run's own checks of those rows cost it most of its time.
//! The pass goes on with the run's reader, at row `P`, to the end; the run then opens the
//! raw copy again.
//!
//! When the row hooks are the defaults and the file is CSV, a row's checked key depends only
//! on the key column and its declarations, so this pass checks that column alone: each row
//! goes into a batch planned for the key's declared columns only, and the key comes out of
//! the very code the run uses, converted the same way. A row whose other cells are invalid
//! is collected too; the run never looks it up (see `seen`). A client hook may change the
//! key or the row's validity, so with an overridden row hook every row goes through the
//! run's own checks, sending and writing nothing.

use super::compact::KeyCheck;
use super::read::RawRow;
use super::run::RunState;
use super::seen::{Repeats, Seen};
use super::{Format, Hooks, Rows, Source, Validator, next_row};
use crate::envelope::Envelope;
use crate::error::StepError;
use crate::step::StepContext;

/// The least memory dedup's on-disk sorts hold, whatever `dedup_memory_kb` says: 4 MiB,
/// runs of 131,072 pairs. The sorts spill a run per buffer full, a temporary file each, so a
/// budget of 0 spilled a file per row: 0.5 MB/s over a 10 MB file
/// (`bench_validator validator-dedup-disk`).
const SORT_MEMORY_MIN: usize = 4 << 20;

impl<H: Hooks> Validator<H> {
    /// Dedup's memory budget in bytes.
    pub(super) fn dedup_memory(&self) -> usize {
        self.settings.dedup_memory_kb.saturating_mul(1 << 10)
    }

    /// What dedup's on-disk sorts may hold in memory: the budget, or at least
    /// [`SORT_MEMORY_MIN`].
    pub(super) fn sort_memory(&self) -> usize {
        self.dedup_memory().max(SORT_MEMORY_MIN)
    }

    /// Where dedup past its memory spills.
    pub(super) fn dedup_dir(&self) -> std::path::PathBuf {
        (self.settings.temp_dir.clone()).unwrap_or_else(std::env::temp_dir)
    }

    /// Reads the rest of `rows`, whose next row is number `from`, and inserts the key of
    /// each into `seen`, a collecting pass; `cells` when the run checks the rows as cells
    /// with the default row hooks.
    pub(super) async fn repeats(
        &self,
        input: &Envelope<Source>,
        cx: &StepContext,
        (rows, raw_key, format): (&mut Rows, &str, Format),
        mut seen: Seen,
        from: u64,
        cells: bool,
    ) -> Result<Repeats, StepError> {
        let key_only = cells && format == Format::Csv;
        tracing::info!(
            dir = %self.dedup_dir().display(),
            from_row = from,
            key_checks_only = key_only,
            "dedup past its memory budget: collecting keys"
        );
        if key_only {
            self.collect_keys(rows, raw_key, &mut seen, from).await?;
        } else {
            let mut dry = RunState::new(self, input, cx, seen, true, from);
            while let Some((line, row)) = next_row(rows, raw_key).await? {
                dry.raw_row(line, row).await?;
            }
            seen = dry.into_seen();
        }
        seen.repeats()
    }

    /// The rows' keys checked against the key's declared columns alone.
    async fn collect_keys(
        &self,
        rows: &mut Rows,
        raw_key: &str,
        seen: &mut Seen,
        from: u64,
    ) -> Result<(), StepError> {
        let settings = &self.settings;
        let Some(column) = settings.primary_key.as_deref() else {
            return Ok(());
        };
        let mut keys = None;
        let mut number = from;
        while let Some((_, row)) = next_row(rows, raw_key).await? {
            number += 1;
            // Any other row of a CSV file is unreadable, and rejected without a key.
            let RawRow::Csv { headers, record } = row else {
                continue;
            };
            let keys =
                keys.get_or_insert_with(|| KeyCheck::new(headers, &settings.columns, column));
            let field = |field| record.range(field);
            // A collecting pass decides nothing; the run decides when it checks the row.
            if let Some(collected) = keys.key(record.as_slice(), field, |key| {
                seen.insert(column, key, number - 1)
            }) {
                let _ = collected?;
            }
        }
        Ok(())
    }
}
