//! Streaming row readers: CSV and JSON lines, in constant memory.
//!
//! Rows are parsed straight from the async object stream, one at a time, on the Lambda's
//! own thread: csv-async drives the same `csv-core` state machine as the `csv` crate over a
//! tokio reader. (A first version parsed with `csv` on a blocking thread behind a channel;
//! freeing every row on another thread than the one that allocated it cost more than the
//! parsing.) Memory is the reader's buffer and [`AHEAD`] rows (each buffer keeps the room of
//! the longest row it held), never the file.
//!
//! CSV is read [`AHEAD`] records at a time, so the validator can look at the next rows'
//! keys before it checks them one by one (see [`Rows::fill_ahead`]).

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};

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

/// How many CSV records are read ahead of the one served.
pub const AHEAD: usize = 64;

/// A stream of rows.
pub enum Rows {
    /// CSV with its header.
    Csv {
        /// The reader.
        reader: Box<csv_async::AsyncReader<ObjectReader>>,
        /// The header row.
        headers: csv_async::StringRecord,
        /// The records read and not yet served.
        ahead: Box<Ahead>,
        /// The current record number (the header is 1).
        number: u64,
    },
    /// JSON lines.
    Jsonl {
        /// The reader.
        reader: BufReader<ObjectReader>,
        /// The current line's bytes, read as bytes so a line that is not UTF-8 is one
        /// unreadable row rather than the end of the file.
        line: Vec<u8>,
        /// The current line number.
        number: u64,
    },
}

/// CSV records read ahead, in reused buffers.
#[derive(Default)]
pub struct Ahead {
    records: Vec<csv_async::StringRecord>,
    /// Per record, why it cannot be read (`None` when it can).
    unreadable: Vec<Option<String>>,
    /// Records filled, and the next to serve.
    len: usize,
    next: usize,
    /// What ended the read: the end of the file, or an I/O error to return in turn.
    ended: bool,
    error: Option<std::io::Error>,
}

impl Ahead {
    /// Reads up to [`AHEAD`] records, once every record read before has been served; none
    /// once the read has ended.
    async fn fill(&mut self, reader: &mut csv_async::AsyncReader<ObjectReader>) {
        self.len = 0;
        self.next = 0;
        while self.len < AHEAD && !self.ended {
            if self.records.len() == self.len {
                self.records.push(csv_async::StringRecord::new());
                self.unreadable.push(None);
            }
            let reason = match reader.read_record(&mut self.records[self.len]).await {
                Ok(false) => {
                    self.ended = true;
                    break;
                }
                Ok(true) => None,
                Err(e) if e.is_io_error() => {
                    self.error = Some(io(e));
                    self.ended = true;
                    break;
                }
                Err(e) => Some(format!("unreadable CSV row: {e}")),
            };
            self.unreadable[self.len] = reason;
            self.len += 1;
        }
    }
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
    /// Starts reading; for CSV this reads the header row. A header row that cannot be read
    /// as text (not UTF-8, say) is an error of kind [`std::io::ErrorKind::InvalidData`]: the
    /// file itself is wrong, and reading it again cannot help.
    pub async fn open(reader: ObjectReader, format: Format) -> std::io::Result<Self> {
        Ok(match format {
            Format::Jsonl => Rows::Jsonl {
                reader: BufReader::new(reader),
                line: Vec::new(),
                number: 0,
            },
            Format::Csv | Format::Auto => {
                let mut reader = csv_async::AsyncReaderBuilder::new()
                    .flexible(false)
                    .create_reader(reader);
                let headers = match reader.headers().await {
                    Ok(headers) => headers.clone(),
                    Err(e) if e.is_io_error() => return Err(io(e)),
                    Err(e) => {
                        let reason = format!("unreadable header row: {e}");
                        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, reason));
                    }
                };
                Rows::Csv {
                    reader: Box::new(reader),
                    headers,
                    ahead: Box::default(),
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

    /// Once every CSV record read ahead has been served, reads the next ones and returns
    /// the header and them (unreadable ones included, as whatever their buffer holds), for
    /// a look before [`Rows::next_raw`] serves them one by one. `None` otherwise, at the
    /// end, and for JSON lines.
    pub async fn fill_ahead(
        &mut self,
    ) -> Option<(&csv_async::StringRecord, &[csv_async::StringRecord])> {
        match self {
            Rows::Csv {
                reader,
                headers,
                ahead,
                ..
            } if ahead.next == ahead.len && !ahead.ended => {
                ahead.fill(reader).await;
                let read = &ahead.records[..ahead.len];
                (!read.is_empty()).then_some((&*headers, read))
            }
            _ => None,
        }
    }

    /// The next row as read, before any record is built from it; `None` at the end.
    pub async fn next_raw(&mut self) -> std::io::Result<Option<(u64, RawRow<'_>)>> {
        match self {
            Rows::Csv {
                reader,
                headers,
                ahead,
                number,
            } => {
                if ahead.next == ahead.len {
                    ahead.fill(reader).await;
                    if ahead.len == 0 {
                        // Past the last record: the error that ended the read, if any.
                        return ahead.error.take().map_or(Ok(None), Err);
                    }
                }
                let at = ahead.next;
                ahead.next += 1;
                *number += 1;
                Ok(Some((
                    *number,
                    match ahead.unreadable[at].take() {
                        None => RawRow::Csv {
                            headers,
                            record: &ahead.records[at],
                        },
                        Some(reason) => RawRow::Unreadable(reason),
                    },
                )))
            }
            Rows::Jsonl {
                reader,
                line,
                number,
            } => loop {
                line.clear();
                if reader.read_until(b'\n', line).await? == 0 {
                    return Ok(None);
                }
                *number += 1;
                let text = match std::str::from_utf8(line) {
                    Ok(text) => text,
                    Err(e) => {
                        let reason = format!("line is not UTF-8 text: {e}");
                        return Ok(Some((*number, RawRow::Unreadable(reason))));
                    }
                };
                if text.trim().is_empty() {
                    continue;
                }
                let row = match serde_json::from_str::<Record>(text) {
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

    /// A reader that fails with an I/O error after its text.
    struct FailsAfter(std::io::Cursor<Vec<u8>>);

    impl tokio::io::AsyncRead for FailsAfter {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let before = buf.filled().len();
            let read = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
            if buf.filled().len() == before {
                return std::task::Poll::Ready(Err(std::io::Error::other("connection reset")));
            }
            read
        }
    }

    #[tokio::test]
    async fn rows_read_ahead_are_served_in_order_and_an_io_error_comes_after_them() {
        let mut text = String::from("id\n");
        for i in 0..(AHEAD * 2 + 5) {
            text.push_str(if i == AHEAD + 1 { "x,y\n" } else { "x\n" });
        }
        let reader: ObjectReader = Box::pin(FailsAfter(std::io::Cursor::new(text.into_bytes())));
        let mut rows = Rows::open(reader, Format::Csv).await.unwrap();
        let (headers, first) = rows.fill_ahead().await.unwrap();
        assert_eq!((headers.len(), first.len()), (1, AHEAD));
        assert!(
            rows.fill_ahead().await.is_none(),
            "nothing more until those are served"
        );
        let mut numbers = Vec::new();
        let error = loop {
            match rows.next().await {
                Ok(Some((number, row))) => numbers.push((number, row.is_ok())),
                Ok(None) => panic!("the read ended without its error"),
                Err(e) => break e,
            }
        };
        assert_eq!(error.to_string(), "connection reset");
        assert!(rows.fill_ahead().await.is_none(), "nothing after the error");
        assert!(
            rows.next().await.unwrap().is_none(),
            "the error is returned once"
        );
        // Every row before the error, numbered from 2 (the header is 1), the one with two
        // fields unreadable.
        assert_eq!(numbers.len(), AHEAD * 2 + 5);
        for (i, &(number, readable)) in numbers.iter().enumerate() {
            assert_eq!((number, readable), (i as u64 + 2, i != AHEAD + 1));
        }
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

    #[tokio::test]
    async fn a_json_line_that_is_not_utf8_is_one_unreadable_row() {
        let text = b"{\"id\":1}\r\n{\"name\":\"Jos\xe9\"}\n{\"id\":2}".to_vec();
        let mut rows = Rows::open(Box::pin(std::io::Cursor::new(text)), Format::Jsonl)
            .await
            .unwrap();
        let mut read = Vec::new();
        while let Some(row) = rows.next().await.unwrap() {
            read.push(row);
        }
        assert_eq!(read.len(), 3, "the rows after it are read: {read:?}");
        assert_eq!(read[0].1.as_ref().unwrap()["id"], 1);
        assert!(read[1].1.as_ref().unwrap_err().contains("not UTF-8"));
        assert_eq!(
            (read[2].0, &read[2].1.as_ref().unwrap()["id"]),
            (3, &2.into())
        );
    }

    #[tokio::test]
    async fn a_csv_header_that_is_not_utf8_is_invalid_data() {
        let text = b"Pr\xe9nom,email\nx,a@b.co\n".to_vec();
        let error = Rows::open(Box::pin(std::io::Cursor::new(text)), Format::Csv)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
    }

    #[test]
    fn format_is_resolved_from_the_name() {
        assert_eq!(Format::Auto.resolve("a/B.NDJSON"), Format::Jsonl);
        assert_eq!(Format::Auto.resolve("a/b.csv"), Format::Csv);
        assert_eq!(Format::Csv.resolve("x.jsonl"), Format::Csv);
    }
}
