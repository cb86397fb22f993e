//! Streaming row readers: CSV and JSON lines, in constant memory.
//!
//! Rows are parsed straight from the async object stream, one at a time, on the Lambda's
//! own thread: csv-async drives the same `csv-core` state machine as the `csv` crate over a
//! tokio reader. (A first version parsed with `csv` on a blocking thread behind a channel;
//! freeing every row on another thread than the one that allocated it cost more than the
//! parsing.) Memory is one row and the reader's buffer, never the file.

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};

use crate::kinds::Record;
use crate::ports::ObjectReader;

/// The format of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// From the file extension: `.jsonl`, `.ndjson` and `.json` are JSON lines, the rest CSV.
    #[default]
    Auto,
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    /// Resolves [`Format::Auto`] from a file name.
    pub fn resolve(self, name: &str) -> Format {
        match self {
            Format::Auto => {
                let lower = name.to_ascii_lowercase();
                if [".jsonl", ".ndjson", ".json"]
                    .iter()
                    .any(|ext| lower.ends_with(ext))
                {
                    Format::Jsonl
                } else {
                    Format::Csv
                }
            }
            other => other,
        }
    }
}

/// One row as read: its 1-based line (record) number, and the record or why it is unreadable.
pub type RowRead = (u64, Result<Record, String>);

/// A stream of rows.
pub enum Rows {
    /// CSV with its header.
    Csv {
        /// The reader.
        reader: Box<csv_async::AsyncReader<ObjectReader>>,
        /// The header row.
        headers: csv_async::StringRecord,
        /// The reused record buffer.
        record: csv_async::StringRecord,
        /// The current record number (the header is 1).
        number: u64,
    },
    /// JSON lines.
    Jsonl {
        /// The lines.
        lines: Lines<BufReader<ObjectReader>>,
        /// The current line number.
        number: u64,
    },
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rows")
    }
}

fn io(e: csv_async::Error) -> std::io::Error {
    match e.into_kind() {
        csv_async::ErrorKind::Io(io) => io,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

impl Rows {
    /// Starts reading; for CSV this reads the header row.
    pub async fn open(reader: ObjectReader, format: Format) -> std::io::Result<Self> {
        Ok(match format {
            Format::Jsonl => Rows::Jsonl {
                lines: BufReader::new(reader).lines(),
                number: 0,
            },
            Format::Csv | Format::Auto => {
                let mut reader = csv_async::AsyncReaderBuilder::new()
                    .flexible(false)
                    .create_reader(reader);
                let headers = reader.headers().await.map_err(io)?.clone();
                Rows::Csv {
                    reader: Box::new(reader),
                    headers,
                    record: csv_async::StringRecord::new(),
                    number: 1,
                }
            }
        })
    }

    /// The next row; `None` at the end. An I/O error ends the read: the file must be retried.
    pub async fn next(&mut self) -> std::io::Result<Option<RowRead>> {
        Ok(self
            .next_raw()
            .await?
            .map(|(number, row)| (number, row.into_record())))
    }

    /// The next row as read, before any record is built from it; `None` at the end.
    pub async fn next_raw(&mut self) -> std::io::Result<Option<(u64, RawRow<'_>)>> {
        match self {
            Rows::Csv {
                reader,
                headers,
                record,
                number,
            } => {
                *number += 1;
                match reader.read_record(record).await {
                    Ok(false) => Ok(None),
                    Ok(true) => Ok(Some((*number, RawRow::Csv { headers, record }))),
                    Err(e) if e.is_io_error() => Err(io(e)),
                    Err(e) => Ok(Some((
                        *number,
                        RawRow::Unreadable(format!("unreadable CSV row: {e}")),
                    ))),
                }
            }
            Rows::Jsonl { lines, number } => loop {
                let Some(line) = lines.next_line().await? else {
                    return Ok(None);
                };
                *number += 1;
                if line.trim().is_empty() {
                    continue;
                }
                let row = match serde_json::from_str::<Record>(&line) {
                    Ok(record) => RawRow::Record(record),
                    Err(e) => RawRow::Unreadable(format!("invalid JSON object: {e}")),
                };
                return Ok(Some((*number, row)));
            },
        }
    }
}

/// One row as read by [`Rows::next_raw`].
#[derive(Debug)]
pub enum RawRow<'a> {
    /// A CSV record and the header it is read against.
    Csv {
        /// The header row.
        headers: &'a csv_async::StringRecord,
        /// The record.
        record: &'a csv_async::StringRecord,
    },
    /// A JSON object.
    Record(Record),
    /// Why the row cannot be read.
    Unreadable(String),
}

impl RawRow<'_> {
    /// The row as a record (column name to text, for CSV), or why it is unreadable.
    pub fn into_record(self) -> Result<Record, String> {
        match self {
            RawRow::Csv { headers, record } => Ok(headers
                .iter()
                .zip(record.iter())
                .map(|(h, v)| (h.to_owned(), serde_json::Value::String(v.to_owned())))
                .collect()),
            RawRow::Record(record) => Ok(record),
            RawRow::Unreadable(reason) => Err(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(text: &str, format: Format) -> Vec<RowRead> {
        let reader: ObjectReader = Box::pin(std::io::Cursor::new(text.as_bytes().to_vec()));
        let mut rows = Rows::open(reader, format).await.unwrap();
        let mut out = Vec::new();
        while let Some(row) = rows.next().await.unwrap() {
            out.push(row);
        }
        out
    }

    #[tokio::test]
    async fn csv_rows_carry_their_record_numbers_and_bad_rows_do_not_stop_the_file() {
        let rows = read("id,email\n1,a@b.co\n2\n3,c@d.co\n", Format::Csv).await;
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].0, 2);
        assert_eq!(rows[0].1.as_ref().unwrap()["email"], "a@b.co");
        assert!(
            rows[1]
                .1
                .as_ref()
                .unwrap_err()
                .contains("unreadable CSV row")
        );
        assert_eq!(rows[2].0, 4);
        assert_eq!(rows[2].1.as_ref().unwrap()["id"], "3");
    }

    #[tokio::test]
    async fn quoted_fields_may_span_lines() {
        let rows = read("id,note\n1,\"two\nlines\"\n2,x\n", Format::Csv).await;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1.as_ref().unwrap()["note"], "two\nlines");
    }

    #[tokio::test]
    async fn json_lines_skip_blank_lines_and_reject_non_objects() {
        let rows = read("{\"id\":1}\n\n[1]\n{\"id\":2}\n", Format::Jsonl).await;
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].0, 1);
        assert!(rows[1].1.is_err());
        assert_eq!(rows[2].0, 4);
    }

    #[test]
    fn format_is_resolved_from_the_name() {
        assert_eq!(Format::Auto.resolve("a/B.NDJSON"), Format::Jsonl);
        assert_eq!(Format::Auto.resolve("a/b.csv"), Format::Csv);
        assert_eq!(Format::Csv.resolve("x.jsonl"), Format::Csv);
    }
}
