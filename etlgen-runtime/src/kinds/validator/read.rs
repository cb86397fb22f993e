//! Streaming row readers: CSV and JSON lines, in constant memory.
//!
//! The `csv` crate is synchronous and the fastest CSV parser around, so the rows are read on
//! a blocking thread from the async object stream (tokio-util's `SyncIoBridge`) and handed
//! to the async side in small chunks over a bounded channel. Memory is bounded by the channel,
//! never by the file.

use std::io::{BufRead, BufReader, Read};

use serde::Deserialize;
use tokio::sync::mpsc;

use crate::kinds::Record;

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

/// Rows per message on the channel.
const CHUNK: usize = 256;

/// Reads rows from `reader` and sends them in chunks until the file ends or the receiver
/// is dropped. An I/O error ends the read and is returned: the whole file must be retried.
pub fn read_rows<R: Read>(
    reader: R,
    format: Format,
    tx: mpsc::Sender<Vec<RowRead>>,
) -> std::io::Result<()> {
    let mut chunk = Vec::with_capacity(CHUNK);
    let send = |chunk: &mut Vec<RowRead>| tx.blocking_send(std::mem::take(chunk)).is_ok();
    match format {
        Format::Jsonl => {
            for (index, line) in BufReader::new(reader).lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let row = serde_json::from_str::<Record>(&line)
                    .map_err(|e| format!("invalid JSON object: {e}"));
                chunk.push((index as u64 + 1, row));
                if chunk.len() == CHUNK && !send(&mut chunk) {
                    return Ok(());
                }
            }
        }
        Format::Csv | Format::Auto => {
            let mut csv = csv::ReaderBuilder::new()
                .flexible(false)
                .from_reader(reader);
            let headers = csv.headers().map_err(csv_io)?.clone();
            let mut record = csv::StringRecord::new();
            let mut number = 1;
            loop {
                number += 1;
                let row = match csv.read_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => Ok(headers
                        .iter()
                        .zip(record.iter())
                        .map(|(h, v)| (h.to_owned(), serde_json::Value::String(v.to_owned())))
                        .collect()),
                    Err(e) if e.is_io_error() => return Err(csv_io(e)),
                    Err(e) => Err(format!("unreadable CSV row: {e}")),
                };
                chunk.push((number, row));
                if chunk.len() == CHUNK && !send(&mut chunk) {
                    return Ok(());
                }
            }
        }
    }
    if !chunk.is_empty() {
        send(&mut chunk);
    }
    Ok(())
}

fn csv_io(e: csv::Error) -> std::io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => io,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, format: Format) -> Vec<RowRead> {
        let (tx, mut rx) = mpsc::channel(4);
        let text = text.to_owned();
        let handle = std::thread::spawn(move || read_rows(text.as_bytes(), format, tx));
        let mut rows = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            rows.extend(chunk);
        }
        handle.join().unwrap().unwrap();
        rows
    }

    #[test]
    fn csv_rows_carry_their_record_numbers_and_bad_rows_do_not_stop_the_file() {
        let rows = read("id,email\n1,a@b.co\n2\n3,c@d.co\n", Format::Csv);
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
        assert_eq!(rows[2].1.as_ref().unwrap()["id"], "3");
    }

    #[test]
    fn json_lines_skip_blank_lines_and_reject_non_objects() {
        let rows = read("{\"id\":1}\n\n[1]\n{\"id\":2}\n", Format::Jsonl);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].0, 1);
        assert!(rows[1].1.is_err());
        assert_eq!(rows[2].0, 4);
    }

    #[test]
    fn many_rows_arrive_in_chunks() {
        let mut text = String::from("id\n");
        for i in 0..1000 {
            text.push_str(&format!("{i}\n"));
        }
        assert_eq!(read(&text, Format::Csv).len(), 1000);
    }

    #[test]
    fn format_is_resolved_from_the_name() {
        assert_eq!(Format::Auto.resolve("a/B.NDJSON"), Format::Jsonl);
        assert_eq!(Format::Auto.resolve("a/b.csv"), Format::Csv);
        assert_eq!(Format::Csv.resolve("x.jsonl"), Format::Csv);
    }
}
