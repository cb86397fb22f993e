//! Batches of CSV rows kept as text, for runs whose row hooks are the defaults.
//!
//! Building a `Record` (a JSON map with an owned key and value per cell) for every row, and
//! serializing it again, cost most of the validator's time. When no client hook sees single
//! rows (see `defaults`), a batch is instead one text buffer and one cell per value, in the
//! order a `Record` would hold them; the default checks run on the cells, and the batch
//! serializes to the same JSON as the `RecordBatch` it stands for, which is built only when
//! a client hook asks for it.

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

use serde_json::Value;

use super::schema::{self, Column, Converted, ValueRef};
use crate::kinds::{Record, RecordBatch};

/// Where a file's columns go, worked out once from its header.
#[derive(Debug)]
pub(super) struct Plan {
    /// The distinct column names, sorted as a `Record` sorts them.
    keys: Arc<[String]>,
    /// For each key, what comes before its value in a row's JSON: `{"name":` for the
    /// first, `,"name":` for the others, escaped once per file instead of once per row.
    prefixes: Arc<[String]>,
    /// For each key, the field it is read from (the last of equal names, as in a `Record`).
    fields: Vec<usize>,
    /// For each declared column, its key's position, if the header has it.
    columns: Vec<Option<usize>>,
    /// For each declared column, whether no other declaration names its column.
    once: Vec<bool>,
    /// The primary key's position, if the header has it.
    primary_key: Option<usize>,
}

impl Plan {
    pub(super) fn new<'h>(
        header: impl IntoIterator<Item = &'h str>,
        columns: &[Column],
        primary_key: Option<&str>,
    ) -> Self {
        let mut named: Vec<(&str, usize)> = header.into_iter().zip(0..).collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        let mut keys = Vec::with_capacity(named.len());
        let mut fields = Vec::with_capacity(named.len());
        for (i, &(name, field)) in named.iter().enumerate() {
            if named.get(i + 1).is_some_and(|next| next.0 == name) {
                continue;
            }
            keys.push(name.to_owned());
            fields.push(field);
        }
        let position = |name: &str| keys.binary_search_by(|k| k.as_str().cmp(name)).ok();
        let prefixes = keys
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let mut prefix = String::from(if k == 0 { "{" } else { "," });
                write_json_str(&mut prefix, name);
                prefix.push(':');
                prefix
            })
            .collect();
        let named = |name: &str| columns.iter().filter(|c| c.name == name).count();
        Self {
            prefixes,
            columns: columns.iter().map(|c| position(&c.name)).collect(),
            once: columns.iter().map(|c| named(&c.name) == 1).collect(),
            primary_key: primary_key.and_then(position),
            keys: keys.into(),
            fields,
        }
    }

    /// An empty batch of this file's rows.
    pub(super) fn batch(&self) -> CompactBatch {
        CompactBatch {
            keys: self.keys.clone(),
            prefixes: self.prefixes.clone(),
            text: String::new(),
            cells: Vec::new(),
            rows: 0,
            pending_text: 0,
            integers: Vec::new(),
            values: Vec::new(),
        }
    }
}

/// One value: a range of the batch's text, an integer whose text is its JSON, or a
/// converted value.
#[derive(Debug, Clone)]
enum Cell {
    Text(usize, usize),
    Integer(usize, usize),
    Value(Value),
}

/// Rows of one file, the payload of one output. Rows are added one at a time: `push`,
/// then `check`, then `commit` or `discard`.
#[derive(Debug, Clone)]
pub(super) struct CompactBatch {
    keys: Arc<[String]>,
    prefixes: Arc<[String]>,
    text: String,
    cells: Vec<Cell>,
    rows: usize,
    /// Where the pending row's text starts.
    pending_text: usize,
    /// While the pending row is checked, the cells of columns declared once that become
    /// integers kept as text, and those that become other values.
    integers: Vec<usize>,
    values: Vec<(usize, Value)>,
}

impl CompactBatch {
    /// The committed rows.
    pub(super) fn len(&self) -> usize {
        self.rows
    }

    /// Adds a row, pending until `commit` or `discard`: `text` is the row's fields end to
    /// end, and `field(i)` where field `i` lies in it (as `csv::StringRecord` has them).
    pub(super) fn push(
        &mut self,
        plan: &Plan,
        text: &str,
        field: impl Fn(usize) -> Option<Range<usize>>,
    ) {
        let base = self.text.len();
        self.pending_text = base;
        self.text.push_str(text);
        for &i in &plan.fields {
            let range = field(i).unwrap_or_default();
            self.cells
                .push(Cell::Text(base + range.start, base + range.end));
        }
    }

    fn pending_start(&self) -> usize {
        self.rows * self.keys.len()
    }

    fn value(&self, cell: usize) -> ValueRef<'_> {
        match &self.cells[cell] {
            Cell::Text(start, end) => ValueRef::Text(&self.text[*start..*end]),
            Cell::Integer(start, end) => ValueRef::Integer(&self.text[*start..*end]),
            Cell::Value(value) => ValueRef::from(value),
        }
    }

    /// [`schema::check_row`] on the pending row: the same reasons, the same conversions.
    /// An integer already written as its JSON stays text, marked as a number. A column
    /// declared once is converted as its check found; one declared more than once, from
    /// the value the declaration before left.
    pub(super) fn check(&mut self, plan: &Plan, columns: &[Column]) -> Result<(), String> {
        let start = self.pending_start();
        // What the columns declared once convert to, kept aside (they are few, and the
        // cells must stay as read until every check has passed).
        self.integers.clear();
        self.values.clear();
        for ((column, key), once) in columns.iter().zip(&plan.columns).zip(&plan.once) {
            let cell = key.map(|k| start + k);
            let found = schema::check_converting(cell.map(|c| self.value(c)), column)?;
            match (found, cell) {
                (Converted::IntegerText, Some(cell)) if *once => self.integers.push(cell),
                (Converted::Value(new), Some(cell)) if *once => self.values.push((cell, new)),
                _ => {}
            }
        }
        for &cell in &self.integers {
            if let Cell::Text(from, to) = self.cells[cell] {
                self.cells[cell] = Cell::Integer(from, to);
            }
        }
        for (cell, new) in self.values.drain(..) {
            self.cells[cell] = Cell::Value(new);
        }
        for ((column, key), once) in columns.iter().zip(&plan.columns).zip(&plan.once) {
            let Some(cell) = key.map(|k| start + k).filter(|_| !once) else {
                continue;
            };
            match (
                schema::converting(self.value(cell), column.kind),
                &self.cells[cell],
            ) {
                (Converted::IntegerText, &Cell::Text(from, to)) => {
                    self.cells[cell] = Cell::Integer(from, to);
                }
                (Converted::Value(new), _) => self.cells[cell] = Cell::Value(new),
                _ => {}
            }
        }
        Ok(())
    }

    /// The pending row's primary key, as the dedup sees it.
    pub(super) fn primary_key(&self, plan: &Plan) -> Option<ValueRef<'_>> {
        plan.primary_key
            .map(|k| self.value(self.pending_start() + k))
    }

    /// Whether the pending row's primary key is its cell exactly as read: text the checks
    /// left as it was, or an integer kept as its text.
    pub(super) fn key_as_read(&self, plan: &Plan) -> bool {
        plan.primary_key.is_some_and(|k| {
            matches!(
                self.cells[self.pending_start() + k],
                Cell::Text(..) | Cell::Integer(..)
            )
        })
    }

    /// The pending row as a `Record`, for the reject report.
    pub(super) fn pending_record(&self) -> Record {
        self.record(self.rows)
    }

    pub(super) fn commit(&mut self) {
        self.rows += 1;
    }

    pub(super) fn discard(&mut self) {
        self.cells.truncate(self.pending_start());
        self.text.truncate(self.pending_text);
    }

    /// Takes the committed rows, leaving an empty batch.
    pub(super) fn take(&mut self) -> CompactBatch {
        let empty = CompactBatch {
            keys: self.keys.clone(),
            prefixes: self.prefixes.clone(),
            text: String::with_capacity(self.text.capacity()),
            cells: Vec::with_capacity(self.cells.capacity()),
            rows: 0,
            pending_text: 0,
            integers: Vec::new(),
            values: Vec::new(),
        };
        std::mem::replace(self, empty)
    }

    fn record(&self, row: usize) -> Record {
        let start = row * self.keys.len();
        (0..self.keys.len())
            .map(|k| (self.keys[k].clone(), self.value(start + k).to_value()))
            .collect()
    }

    /// The batch as the hooks see it.
    pub(super) fn into_records(self) -> RecordBatch {
        RecordBatch {
            records: (0..self.rows).map(|row| self.record(row)).collect(),
        }
    }
}

impl CompactBatch {
    /// The JSON of the `RecordBatch` this batch stands for, as serde_json writes it.
    ///
    /// Written by hand because serializing through serde cost about 40% of the validator's
    /// time: a call per key and per value, each key escaped again on every row. Here the
    /// keys come pre-escaped from the plan and text that needs no escaping is copied as it
    /// is; converted values and text that does need escaping still go through serde_json.
    /// The tests check the output against serde_json's for the same records.
    pub(super) fn to_json(&self) -> String {
        let width = self.keys.len();
        let prefixes: usize = self.prefixes.iter().map(String::len).sum();
        let mut out =
            String::with_capacity(16 + self.text.len() + self.rows * (prefixes + 2 * width + 2));
        out.push_str("{\"records\":[");
        for row in 0..self.rows {
            if row > 0 {
                out.push(',');
            }
            if width == 0 {
                out.push_str("{}");
                continue;
            }
            let cells = &self.cells[row * width..(row + 1) * width];
            for (prefix, cell) in self.prefixes.iter().zip(cells) {
                out.push_str(prefix);
                match cell {
                    Cell::Text(start, end) => write_json_str(&mut out, &self.text[*start..*end]),
                    Cell::Integer(start, end) => out.push_str(&self.text[*start..*end]),
                    // `Value`'s `Display` is serde_json's compact serializer.
                    Cell::Value(value) => {
                        let _ = write!(out, "{value}");
                    }
                }
            }
            out.push('}');
        }
        out.push_str("]}");
        out
    }
}

/// Appends `text` as a JSON string.
fn write_json_str(out: &mut String, text: &str) {
    if needs_escape(text.as_bytes()) {
        let _ = write!(out, "{}", Value::from(text));
    } else {
        out.push('"');
        out.push_str(text);
        out.push('"');
    }
}

/// Whether JSON escapes any of `bytes`: a control character, `"` or `\`.
///
/// Eight bytes at a time with the "has a zero byte" / "has a byte less than n" word tricks
/// (exact for whether any byte matches); the last word overlaps the one before it, and a
/// text shorter than a word is padded with spaces, which need no escape. A byte-at-a-time
/// scan cost as much as the rest of writing a batch's JSON, and no maintained crate offers
/// this three-way search (memchr's searches are for equal bytes only).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    let escapes = |word: [u8; 8]| {
        let word = u64::from_ne_bytes(word);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        below(word, 0x20) | below(quote, 1) | below(backslash, 1) != 0
    };
    let word = |at: usize| bytes[at..at + 8].try_into().map_or(true, escapes);
    match bytes.len() {
        len @ 0..8 => {
            let mut padded = [b' '; 8];
            padded[..len].copy_from_slice(bytes);
            escapes(padded)
        }
        len => (0..len - 8).step_by(8).any(word) || word(len - 8),
    }
}

/// What a batch becomes in an output: the hooks' records, or a batch they never saw.
#[derive(Debug)]
pub(super) enum Payload {
    Records(RecordBatch),
    Compact(CompactBatch),
}

impl Payload {
    /// The payload's JSON, as serde_json writes the `RecordBatch` it is or stands for.
    pub(super) fn to_json(&self) -> Result<String, serde_json::Error> {
        match self {
            Payload::Records(batch) => serde_json::to_string(batch),
            Payload::Compact(batch) => Ok(batch.to_json()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<Column> {
        #[derive(serde::Deserialize)]
        struct Wrapper {
            columns: Vec<Column>,
        }
        toml::from_str::<Wrapper>(
            r#"columns = [
                { name = "id", type = "integer", required = true },
                { name = "email", type = "email", required = true },
                { name = "score", type = "number" },
                { name = "opt_in", type = "boolean" },
                { name = "visited", type = "date" },
                { name = "absent", type = "string" },
                { name = "id", type = "string" },
            ]"#,
        )
        .unwrap()
        .columns
    }

    /// Each row through `schema::check_row` on a `Record` and through a compact batch:
    /// the same reasons, the same rows, the same JSON.
    #[test]
    fn cells_behave_as_records() {
        let text = "id,email,score,opt_in,visited,email,zé\n\
            1,x@y.co,1.5,yes,2024-05-01,a@b.co,\"q\"\"uote\"\n\
            \u{a0}2 ,a@b.co, 2 ,NO, 2024-05-02,c@d.co,\n\
            3,a@b.co,,,,c@d.co,\\n\n\
            x,a@b.co,,,,c@d.co,\n\
            4,a@b.co,,maybe,,nope,\n\
            ,a@b.co,,,,c@d.co,\n\
            5,a@b.co,1e400,,,c@d.co,\n";
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().unwrap().clone();
        let columns = columns();
        let plan = Plan::new(&headers, &columns, Some("id"));
        let mut batch = plan.batch();
        let mut expected = Vec::new();
        let mut reasons = Vec::new();
        for record in reader.records() {
            let record = record.unwrap();
            let mut row: Record = headers
                .iter()
                .zip(&record)
                .map(|(h, v)| (h.to_owned(), Value::String(v.to_owned())))
                .collect();
            let want = schema::check_row(&mut row, &columns);
            batch.push(&plan, record.as_slice(), |field| record.range(field));
            assert_eq!(batch.pending_record(), row_as_read(&headers, &record));
            let got = batch.check(&plan, &columns);
            assert_eq!(got, want);
            assert_eq!(batch.pending_record(), row);
            if let Err(reason) = got {
                batch.discard();
                reasons.push(reason);
            } else {
                assert_eq!(
                    batch.primary_key(&plan).map(ValueRef::to_value),
                    row.get("id").cloned()
                );
                batch.commit();
                expected.push(row);
            }
        }
        assert_eq!(batch.len(), 3);
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        let expected = RecordBatch { records: expected };
        assert_eq!(batch.to_json(), serde_json::to_string(&expected).unwrap());
        let taken = batch.take();
        assert_eq!(batch.len(), 0);
        assert_eq!(
            Payload::Compact(taken.clone()).to_json().unwrap(),
            Payload::Records(expected.clone()).to_json().unwrap()
        );
        assert_eq!(taken.into_records(), expected);
    }

    fn row_as_read(headers: &csv::StringRecord, record: &csv::StringRecord) -> Record {
        headers
            .iter()
            .zip(record)
            .map(|(h, v)| (h.to_owned(), Value::String(v.to_owned())))
            .collect()
    }

    #[test]
    fn a_header_without_the_key_column_or_any_column() {
        let plan = Plan::new(["b", "a"], &[], Some("id"));
        let mut batch = plan.batch();
        batch.push(&plan, "21", |field| [0..1, 1..2].get(field).cloned());
        assert!(batch.primary_key(&plan).is_none());
        batch.commit();
        assert_eq!(batch.to_json(), r#"{"records":[{"a":"1","b":"2"}]}"#);
        let plan = Plan::new([], &[], None);
        let mut batch = plan.batch();
        batch.push(&plan, "", |_| None);
        batch.commit();
        batch.push(&plan, "", |_| None);
        batch.commit();
        assert_eq!(batch.to_json(), r#"{"records":[{},{}]}"#);
    }

    /// Each byte value at each place of words and tails, among bytes that need no escape.
    #[test]
    fn needs_escape_finds_exactly_the_bytes_json_escapes() {
        for len in 1..=24 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    let want = byte < 0x20 || byte == b'"' || byte == b'\\';
                    assert_eq!(needs_escape(&bytes), want, "{byte:#x} at {at} of {len}");
                    // Neighbours that sit just past the bounds the word tricks test.
                    bytes
                        .iter_mut()
                        .filter(|b| **b == b'a')
                        .for_each(|b| *b = 0x21);
                    assert_eq!(needs_escape(&bytes), want, "{byte:#x} among 0x21");
                    bytes
                        .iter_mut()
                        .filter(|b| **b == 0x21)
                        .for_each(|b| *b = 0xff);
                    assert_eq!(needs_escape(&bytes), want, "{byte:#x} among 0xff");
                }
            }
        }
        assert!(!needs_escape(b""));
    }

    /// Every character JSON must escape, in keys and in values, written as serde_json
    /// writes it.
    #[test]
    fn text_that_needs_escaping_is_written_as_serde_json_writes_it() {
        let header = ["q\"k", "back\\slash", "tab\tkey", "plain", "zé"];
        let plan = Plan::new(header, &[], None);
        let mut batch = plan.batch();
        let mut expected = Vec::new();
        let rows = [
            ["a\"b", "c\\d", "\u{1}\u{1f}\n\r\t", "", "€ \u{7f} \u{2028}"],
            ["", "", "", "", ""],
            ["\"", "\\", "x", "y", "z"],
        ];
        for fields in rows {
            let text: String = fields.concat();
            let mut ranges = Vec::new();
            let mut at = 0;
            for f in fields {
                ranges.push(at..at + f.len());
                at += f.len();
            }
            batch.push(&plan, &text, |i| ranges.get(i).cloned());
            batch.commit();
            expected.push(row_as_read(
                &csv::StringRecord::from(header.to_vec()),
                &csv::StringRecord::from(fields.to_vec()),
            ));
        }
        let expected = RecordBatch { records: expected };
        let json = batch.to_json();
        assert_eq!(json, serde_json::to_string(&expected).unwrap());
        assert_eq!(
            serde_json::from_str::<RecordBatch>(&json).unwrap(),
            expected
        );
    }
}
