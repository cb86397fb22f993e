//! The rows whose key the filter could not decide, held on disk until the end of the file,
//! then decided exactly (see `seen`).
//!
//! Once dedup's exact set is full, three kinds of data go to `temp_dir`: the hash of every
//! key decided new (8 bytes a row), the hash of each row the filter may have seen with its
//! place among those rows (16 bytes), and that row itself, as it was read. Both kinds of
//! hash are split by their top bits into [`PARTS`] files, so that deciding needs only one
//! part's hashes at a time: per part, the waiting rows' hashes are looked for in one
//! sequential read of the hashes kept, as many rows at a time as fit the budget, and a row
//! is a duplicate if its hash is there or an earlier waiting row kept it. The verdicts are
//! one bit per waiting row; the rows are then read back in row order beside them.
//!
//! The files come from `tempfile::tempfile_in`: they have no name, so they vanish when
//! dropped, even if the Lambda is stopped mid-run. Reads and writes block; the validator
//! runs alone in its Lambda and the files are local.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::hashes::HashSet64;
use crate::error::StepError;
use crate::kinds::Record;

/// The files each kind of hash is split into, by the hash's top four bits. A filter much
/// smaller than the file's keys makes many rows wait; looked up against every hash kept,
/// each batch of them that fits the budget read all those hashes once more, and split, a
/// batch reads a sixteenth: the benchmark's 1 GB file with `dedup_memory_kb = 0` (37% of
/// its rows waiting) took 61.9 s unsplit and 15.2 s split (`docs/benchmarks.md`).
const PARTS: usize = 16;

/// The read and write buffer of each file.
const BUFFER: usize = 16 << 10;

/// A row as read, for reading it again at the end.
#[derive(Debug)]
pub(super) enum Waiting<'a> {
    /// A CSV record, and the header it was read against.
    Csv {
        headers: &'a csv_async::StringRecord,
        record: &'a csv_async::StringRecord,
    },
    /// A JSON object, before any hook saw it.
    Json(&'a Record),
}

/// A row the filter could not decide, decided.
#[derive(Debug)]
pub(super) struct Decision {
    /// The row's line.
    pub line: u64,
    /// Whether an earlier valid row has its key.
    pub repeated: bool,
    /// The row as it was read.
    pub row: Row,
}

/// A row as it was read, owned.
#[derive(Debug)]
pub(super) enum Row {
    Csv(csv_async::StringRecord),
    Json(Record),
}

/// Hashes in a file of their own, appended, counted.
#[derive(Debug)]
struct Hashes {
    file: BufWriter<File>,
    len: u64,
}

impl Hashes {
    fn new(dir: &Path) -> Result<Self, StepError> {
        let file = tempfile::tempfile_in(dir).map_err(|e| failed("creating a file in", dir, e))?;
        Ok(Self {
            file: BufWriter::with_capacity(BUFFER, file),
            len: 0,
        })
    }

    fn push(&mut self, words: &[u64]) -> std::io::Result<()> {
        self.len += 1;
        for word in words {
            self.file.write_all(&word.to_le_bytes())?;
        }
        Ok(())
    }

    /// A reader of the entries, from the first.
    fn reader(&mut self) -> std::io::Result<Entries<'_>> {
        self.file.flush()?;
        let file = self.file.get_mut();
        file.rewind()?;
        Ok(Entries {
            reader: BufReader::with_capacity(BUFFER, file),
            left: self.len,
        })
    }

    /// Calls `each` with every entry, from the first; entries may be pushed after.
    fn read(&mut self, mut each: impl FnMut(u64)) -> std::io::Result<()> {
        let mut entries = self.reader()?;
        while let Some([hash]) = entries.next()? {
            each(hash);
        }
        drop(entries);
        self.file.get_mut().seek(SeekFrom::End(0))?;
        Ok(())
    }
}

/// The entries of [`Hashes`], read in order.
struct Entries<'a> {
    reader: BufReader<&'a mut File>,
    left: u64,
}

impl Entries<'_> {
    /// The next entry of `N` words.
    fn next<const N: usize>(&mut self) -> std::io::Result<Option<[u64; N]>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let mut entry = [0; N];
        let mut bytes = [0; 8];
        for word in &mut entry {
            self.reader.read_exact(&mut bytes)?;
            *word = u64::from_le_bytes(bytes);
        }
        Ok(Some(entry))
    }
}

/// The part of the files a hash goes to (truncation intended: the top four bits).
fn part(hash: u64) -> usize {
    (hash >> 60) as usize
}

/// What the filtered part of the file left on disk, while it is read.
#[derive(Debug)]
pub(super) struct Past {
    dir: PathBuf,
    /// The hash of every key decided new, by part.
    kept: Vec<Hashes>,
    /// `(place, hash)` of each waiting row, by part, in row order.
    waiting: Vec<Hashes>,
    /// Each waiting row, in row order: its line, `c` and the CSV fields, or `j` and the JSON
    /// object.
    rows: csv::Writer<File>,
    rows_waiting: u64,
    /// The CSV header, once a CSV row waits.
    headers: Option<csv_async::StringRecord>,
}

impl Past {
    /// Creates the files in `dir`.
    pub(super) fn new(dir: &Path) -> Result<Self, StepError> {
        let parts = || {
            (0..PARTS)
                .map(|_| Hashes::new(dir))
                .collect::<Result<Vec<_>, _>>()
        };
        let rows = tempfile::tempfile_in(dir).map_err(|e| failed("creating a file in", dir, e))?;
        Ok(Self {
            dir: dir.to_owned(),
            kept: parts()?,
            waiting: parts()?,
            rows: csv::WriterBuilder::new()
                .flexible(true)
                .buffer_capacity(BUFFER)
                .from_writer(rows),
            rows_waiting: 0,
            headers: None,
        })
    }

    /// Records that a row's key, `hash`, was decided new.
    pub(super) fn keep(&mut self, hash: u64) -> Result<(), StepError> {
        let pushed = self.kept[part(hash)].push(&[hash]);
        pushed.map_err(|e| failed("writing what dedup holds in", &self.dir, e))
    }

    /// Calls `each` with the hashes kept so far, for the filter that takes over from the set.
    pub(super) fn each_kept(&mut self, mut each: impl FnMut(u64)) -> Result<(), StepError> {
        for part in &mut self.kept {
            let read = part.read(&mut each);
            read.map_err(|e| failed("reading back what dedup wrote in", &self.dir, e))?;
        }
        Ok(())
    }

    /// Holds `row`, whose key is `hash`, until the end of the file.
    pub(super) fn wait(&mut self, hash: u64, line: u64, row: Waiting<'_>) -> Result<(), StepError> {
        let fail = |e| failed("writing what dedup holds in", &self.dir, e);
        self.waiting[part(hash)]
            .push(&[self.rows_waiting, hash])
            .map_err(fail)?;
        self.rows_waiting += 1;
        let line = line.to_string();
        let written = match row {
            Waiting::Csv { headers, record } => {
                self.headers.get_or_insert_with(|| headers.clone());
                let fields = [line.as_str(), "c"].into_iter().chain(record.iter());
                self.rows.write_record(fields)
            }
            Waiting::Json(record) => {
                let json = serde_json::to_string(record).map_err(|e| {
                    StepError::permanent("a JSON row is not serializable").with_source(e)
                })?;
                self.rows.write_record([line.as_str(), "j", json.as_str()])
            }
        };
        written.map_err(|e| fail(e.into()))
    }

    /// How many rows wait.
    pub(super) fn waiting(&self) -> u64 {
        self.rows_waiting
    }

    /// Decides every waiting row, looking up at most `chunk` of them at once (at least one),
    /// and returns them in row order.
    pub(super) fn decide(mut self, chunk: usize) -> Result<Decisions, StepError> {
        let dir = self.dir.clone();
        let fail = |e: std::io::Error| failed("reading back what dedup wrote in", &dir, e);
        // One bit per waiting row (lossless: each row's place is below a `usize` count of
        // bits this machine allocates).
        let mut repeated = vec![0u64; self.rows_waiting.div_ceil(64) as usize];
        let parts = self.kept.iter_mut().zip(&mut self.waiting);
        for (kept, waiting) in parts {
            decide_part(kept, waiting, chunk.max(1), &mut repeated).map_err(fail)?;
        }
        drop((self.kept, self.waiting));
        let mut rows = self.rows.into_inner().map_err(|e| fail(e.into_error()))?;
        rows.rewind().map_err(fail)?;
        let rows = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(BUFFER)
            .from_reader(rows);
        Ok(Decisions {
            dir,
            rows,
            headers: self.headers.unwrap_or_default(),
            repeated,
            next: 0,
            left: self.rows_waiting,
            record: csv::StringRecord::new(),
        })
    }
}

/// Decides the waiting rows of one part, `chunk` at a time: which hashes of the chunk were
/// kept is one read of the part's kept hashes, then the chunk's rows keep or repeat in row
/// order. The hashes a chunk kept are added to the part's for the chunks after it.
fn decide_part(
    kept: &mut Hashes,
    waiting: &mut Hashes,
    chunk: usize,
    repeated: &mut [u64],
) -> std::io::Result<()> {
    let mut entries = waiting.reader()?;
    let mut rows = Vec::new();
    loop {
        rows.clear();
        while rows.len() < chunk {
            match entries.next()? {
                Some([place, hash]) => rows.push((place, hash)),
                None => break,
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut wanted = HashSet64::default();
        for &(_, hash) in &rows {
            wanted.insert(hash);
        }
        let mut hits = HashSet64::default();
        kept.read(|hash| {
            if wanted.contains(hash) {
                hits.insert(hash);
            }
        })?;
        drop(wanted);
        for &(place, hash) in &rows {
            if !hits.insert(hash) {
                // A place is below the number of waiting rows (truncation impossible).
                repeated[(place / 64) as usize] |= 1 << (place % 64);
            }
        }
        if entries.left > 0 {
            for hash in hits.into_vec() {
                kept.push(&[hash])?;
            }
        }
    }
}

/// The waiting rows, decided, in row order.
#[derive(Debug)]
pub(super) struct Decisions {
    dir: PathBuf,
    rows: csv::Reader<File>,
    headers: csv_async::StringRecord,
    /// One bit per waiting row: whether it repeats a key.
    repeated: Vec<u64>,
    next: u64,
    left: u64,
    record: csv::StringRecord,
}

impl Decisions {
    /// The CSV header the waiting CSV rows were read against (empty if none).
    pub(super) fn headers(&self) -> csv_async::StringRecord {
        self.headers.clone()
    }

    /// The next waiting row, decided.
    pub(super) fn next(&mut self) -> Result<Option<Decision>, StepError> {
        if self.left == 0 {
            return Ok(None);
        }
        let fail = |e| failed("reading back what dedup wrote in", &self.dir, e);
        if !(self.rows.read_record(&mut self.record)).map_err(|e| fail(e.into()))? {
            return Err(fail(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let place = self.next;
        self.next += 1;
        self.left -= 1;
        // As in `decide` (truncation impossible).
        let repeated = self.repeated[(place / 64) as usize] & (1 << (place % 64)) != 0;
        let line = self.record.get(0).and_then(|l| l.parse().ok()).unwrap_or(0);
        let row = match self.record.get(1) {
            Some("j") => {
                let json = serde_json::from_str(self.record.get(2).unwrap_or_default());
                Row::Json(json.map_err(|e| fail(e.into()))?)
            }
            _ => Row::Csv(self.record.iter().skip(2).collect::<Vec<_>>().into()),
        };
        Ok(Some(Decision {
            line,
            repeated,
            row,
        }))
    }
}

/// A retryable error naming the directory: a full or unwritable temp dir may be a passing
/// state of the Lambda's ephemeral storage, and the message says which setting to check.
fn failed(what: &str, dir: &Path, e: std::io::Error) -> StepError {
    StepError::retryable(format!("{what} {} (validator temp_dir)", dir.display())).with_source(e)
}
