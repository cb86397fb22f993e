//! The primary keys a run has seen, for rejecting repeated keys, in bounded memory.
//!
//! A 64-bit hash of each key is kept, never the key. While the distinct keys fit the
//! step's budget they are a hash set, and every row is decided as it is read. A file with
//! more keys cannot be decided row by row in that memory, and batches already sent cannot
//! be taken back, so once the set is full its hashes go to disk and a Bloom filter of the
//! same budget takes over (`bloom`). A key the filter has never seen is new for certain:
//! its row is decided at once, and its hash is written to disk. A key the filter may have
//! seen (a repeat, or another key's bits) is left for later: the row is written to disk as
//! it was read (`deferred`), and at the end of the file the rows left are decided exactly,
//! against the hashes written, and read once more through the run's own checks.
//!
//! So a file is read once, whatever its size. A row is a duplicate iff an earlier valid
//! row has its key's hash, exactly as with an unbounded set (hash collisions included), and
//! a retry decides every row the same way. What changes past the budget is when a row
//! the filter could not decide is sent or rejected: after every other row, in row order.
//!
//! Why that is exact: every valid key is added to the filter, so a row the filter calls
//! new has no earlier valid row with its key; and a later row with the key of a waiting
//! row finds the filter's bits set, so it waits too. A waiting row's key is therefore
//! repeated iff it is among the hashes written before it (all written ones are earlier
//! rows), or an earlier waiting row kept it.
//!
//! Why not the filter alone: it gives false duplicates, which would drop valid rows; only
//! an exact comparison keeps the outcome the same.

use std::fmt::{self, Write as _};
use std::hash::Hasher;
use std::path::PathBuf;

use super::bloom::Bloom;
use super::deferred::{Decisions, Past, Waiting};
use super::hashes::{self, HashSet64};
use super::schema::{ValueRef, trim};
use crate::error::StepError;

/// The least memory the filter and the end's look-ups hold, whatever `dedup_memory_kb`
/// says: 4 MiB, a filter of 131,072 blocks. A budget of 0 means no key in the exact set,
/// not a filter that calls every key a repeat.
pub(super) const FILTER_MEMORY_MIN: usize = 4 << 20;

/// What dedup says of a valid row's key.
#[derive(Debug)]
pub(super) enum Verdict {
    /// No earlier valid row has it.
    New,
    /// An earlier valid row has it: the rejection reason.
    Repeated(String),
    /// The filter cannot tell: the row waits for the end of the file ([`Seen::wait`]),
    /// with this hash.
    Later(u64),
}

/// The keys seen so far.
#[derive(Debug)]
pub(super) struct Seen {
    mode: Mode,
    /// The hashes [`Seen::warm`] computed: of the keys of rows `ahead_from..`, as read.
    ahead: Vec<u64>,
    ahead_from: u64,
    /// Where the keys past the set go.
    dir: PathBuf,
    sizes: Sizes,
}

#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// The most keys the exact set holds.
    keys: usize,
    /// The filter's bytes.
    filter: usize,
    /// The most waiting rows looked up at once at the end.
    chunk: usize,
}

#[derive(Debug)]
enum Mode {
    /// The hashes, while at most `sizes.keys`.
    Memory(HashSet64),
    /// Past the set: the filter, and what went to disk (boxed: its buffers' writers are
    /// far larger than a set's handle, and the mode lives in every run).
    Filter { filter: Bloom, past: Box<Past> },
}

impl Seen {
    /// Dedup within `memory` bytes (see [`keys_within`] and [`FILTER_MEMORY_MIN`]), past
    /// the set in `dir`.
    pub(super) fn new(memory: usize, dir: PathBuf) -> Self {
        let least = memory.max(FILTER_MEMORY_MIN);
        Self::with_sizes(
            dir,
            keys_within(memory),
            least,
            keys_within(least / 4).max(1),
        )
    }

    fn with_sizes(dir: PathBuf, keys: usize, filter: usize, chunk: usize) -> Self {
        Self {
            mode: Mode::Memory(HashSet64::default()),
            ahead: Vec::new(),
            ahead_from: 0,
            dir,
            sizes: Sizes {
                keys,
                filter,
                chunk,
            },
        }
    }

    /// Whether a key may be left for later: the filter has taken over, or takes over at
    /// the next key.
    pub(super) fn may_wait(&self) -> bool {
        match &self.mode {
            Mode::Memory(set) => set.len() >= self.sizes.keys,
            Mode::Filter { .. } => true,
        }
    }

    /// Reads where the keys of the next rows (numbers `first_row..`), read ahead, would be
    /// in the set or the filter, without recording them, so that checking them one by one
    /// finds that memory in the cache. The hashes are kept for [`Seen::insert_as_read`].
    ///
    /// Each key is a random access into up to the whole budget. Made one per row among the
    /// row's other work, the accesses wait on memory one after another; made here back to
    /// back, with no branch on what they read, they overlap. A key whose text differs from
    /// its checked value (a number written `007`) only misses the warm-up: what is recorded
    /// and decided is unchanged.
    pub(super) fn warm<'a>(&mut self, keys: impl Iterator<Item = &'a str>, first_row: u64) {
        self.ahead.clear();
        self.ahead_from = first_row;
        (self.ahead).extend(keys.map(|key| hash(Some(ValueRef::Text(trim(key))))));
        let read = match &self.mode {
            Mode::Memory(set) => (self.ahead.iter()).fold(0, |all, &h| all ^ set.first_slot(h)),
            Mode::Filter { filter, .. } => {
                (self.ahead.iter()).fold(0, |all, &h| all ^ u64::from(filter.first_word(h)))
            }
        };
        std::hint::black_box(read);
    }

    /// [`Seen::insert`] for a key that is the row's key cell exactly as read (no value
    /// converted from it or put in its place), so the hash [`Seen::warm`] computed for the
    /// row is the key's own when the text has no blanks to trim.
    pub(super) fn insert_as_read(
        &mut self,
        column: &str,
        key: Option<ValueRef<'_>>,
        row: u64,
    ) -> Result<Verdict, StepError> {
        let warmed = match key {
            Some(ValueRef::Text(s) | ValueRef::Integer(s)) if trim(s).len() == s.len() => {
                let at = row.checked_sub(self.ahead_from);
                let at = at.and_then(|at| usize::try_from(at).ok());
                at.and_then(|at| self.ahead.get(at)).copied()
            }
            _ => None,
        };
        self.insert_hashed(column, key, warmed)
    }

    /// Records the key of a valid row (`None` when the row lacks the key column). The
    /// error is a failure to write to `temp_dir`.
    pub(super) fn insert(
        &mut self,
        column: &str,
        key: Option<ValueRef<'_>>,
    ) -> Result<Verdict, StepError> {
        self.insert_hashed(column, key, None)
    }

    /// [`Seen::insert`], with the key's hash if known.
    fn insert_hashed(
        &mut self,
        column: &str,
        key: Option<ValueRef<'_>>,
        known: Option<u64>,
    ) -> Result<Verdict, StepError> {
        let hash = known.unwrap_or_else(|| hash(key));
        if self.may_wait() {
            // Once, when the set is full: in the filter's mode this does nothing.
            self.start_filtering()?;
        }
        Ok(match &mut self.mode {
            Mode::Memory(set) => {
                if set.insert(hash) {
                    Verdict::New
                } else {
                    Verdict::Repeated(repeated(column, key))
                }
            }
            Mode::Filter { filter, past } => {
                if filter.insert(hash) {
                    past.keep(hash)?;
                    Verdict::New
                } else {
                    Verdict::Later(hash)
                }
            }
        })
    }

    /// Hands the set's hashes to disk and to a new filter, once the set is full. The set is
    /// freed before the filter is made, so the two never hold the budget twice.
    fn start_filtering(&mut self) -> Result<(), StepError> {
        let Mode::Memory(set) = &mut self.mode else {
            return Ok(());
        };
        let set = std::mem::take(set);
        let held = set.len();
        let mut past = Past::new(&self.dir)?;
        for hash in set.into_vec() {
            past.keep(hash)?;
        }
        let mut filter = Bloom::new(self.sizes.filter);
        past.each_kept(|hash| {
            filter.insert(hash);
        })?;
        tracing::info!(
            dir = %self.dir.display(),
            keys_held = held,
            filter_bytes = self.sizes.filter,
            "dedup past its memory budget: the rest of the keys go through a filter"
        );
        self.mode = Mode::Filter {
            filter,
            past: Box::new(past),
        };
        Ok(())
    }

    /// Holds a row [`Verdict::Later`] left for later, with the hash it gave.
    pub(super) fn wait(&mut self, hash: u64, line: u64, row: Waiting<'_>) -> Result<(), StepError> {
        match &mut self.mode {
            Mode::Filter { past, .. } => past.wait(hash, line, row),
            Mode::Memory(_) => Err(StepError::permanent("dedup: a row waits with no filter")),
        }
    }

    /// The rows left for later, decided in row order, if any; the filter is freed first.
    pub(super) fn decisions(&mut self) -> Result<Option<Decisions>, StepError> {
        let Mode::Filter { past, .. } =
            std::mem::replace(&mut self.mode, Mode::Memory(HashSet64::default()))
        else {
            return Ok(None);
        };
        if past.waiting() == 0 {
            return Ok(None);
        }
        tracing::info!(
            rows = past.waiting(),
            "dedup past its memory budget: deciding the rows the filter could not"
        );
        (*past).decide(self.sizes.chunk).map(Some)
    }
}

/// The rejection reason of a repeated key.
pub(super) fn repeated(column: &str, key: Option<ValueRef<'_>>) -> String {
    format!("duplicate primary key {column} = {}", display(key))
}

/// The most keys a set may hold within `memory` bytes: the capacity of the largest table
/// (a power of two of slots) whose growth, old table and new, fits.
pub(super) fn keys_within(memory: usize) -> usize {
    if memory == usize::MAX {
        return usize::MAX;
    }
    let mut slots = 1usize;
    while slots < usize::MAX / 4 && hashes::peak_bytes(slots * 2) <= memory {
        slots *= 2;
    }
    hashes::capacity(slots)
}

/// A key's hash: text as itself, any other value as its JSON text, a missing key as "".
///
/// The text's bytes are hashed, then `0xff` (which no UTF-8 text holds) to end it. A
/// converted value's JSON is written straight into the hasher, which SipHash reads as one
/// stream of bytes however it arrives, so the number `7` and the text "7" hash alike
/// without a string allocated per row.
fn hash(key: Option<ValueRef<'_>>) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match key {
        Some(ValueRef::Text(s) | ValueRef::Integer(s)) => hasher.write(s.as_bytes()),
        Some(ValueRef::Other(other)) => {
            let _ = write!(HashText(&mut hasher), "{other}");
        }
        None => {}
    }
    hasher.write_u8(0xff);
    hasher.finish()
}

/// Feeds formatted text to a hasher.
struct HashText<'a, H>(&'a mut H);

impl<H: Hasher> fmt::Write for HashText<'_, H> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write(s.as_bytes());
        Ok(())
    }
}

/// A key as the rejection reason shows it: as JSON.
fn display(key: Option<ValueRef<'_>>) -> String {
    match key {
        Some(ValueRef::Text(s)) => serde_json::Value::from(s).to_string(),
        Some(ValueRef::Other(other)) => other.to_string(),
        Some(ValueRef::Integer(s)) => s.to_owned(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::deferred::Row;
    use super::*;
    use crate::kinds::Record;
    use serde_json::json;

    fn check(seen: &mut Seen, key: Option<ValueRef<'_>>) -> Result<(), String> {
        match seen.insert("id", key).unwrap() {
            Verdict::New => Ok(()),
            Verdict::Repeated(reason) => Err(reason),
            Verdict::Later(_) => panic!("an unbounded set leaves nothing for later"),
        }
    }

    fn unbounded() -> Seen {
        Seen::new(usize::MAX, std::env::temp_dir())
    }

    #[test]
    fn a_repeated_key_is_rejected_with_its_json_text() {
        let mut seen = unbounded();
        assert!(check(&mut seen, Some(ValueRef::Text("a\"b"))).is_ok());
        assert_eq!(
            check(&mut seen, Some(ValueRef::Text("a\"b"))).unwrap_err(),
            r#"duplicate primary key id = "a\"b""#
        );
        let n = json!(42);
        assert!(check(&mut seen, Some(ValueRef::Other(&n))).is_ok());
        assert_eq!(
            check(&mut seen, Some(ValueRef::Other(&n))).unwrap_err(),
            "duplicate primary key id = 42"
        );
        assert!(check(&mut seen, None).is_ok());
        assert_eq!(
            check(&mut seen, None).unwrap_err(),
            "duplicate primary key id = "
        );
    }

    #[test]
    fn a_value_hashes_as_its_json_text_would() {
        for value in [json!(7), json!(-1.5), json!(12345678901234u64), json!(true)] {
            let text = value.to_string();
            assert_eq!(
                hash(Some(ValueRef::Other(&value))),
                hash(Some(ValueRef::Text(&text))),
                "{value}"
            );
        }
        for n in [0, 7, -42, i64::MIN, i64::MAX] {
            let (value, text) = (json!(n), n.to_string());
            assert_eq!(
                hash(Some(ValueRef::Integer(&text))),
                hash(Some(ValueRef::Other(&value)))
            );
            assert_eq!(
                display(Some(ValueRef::Integer(&text))),
                display(Some(ValueRef::Other(&value)))
            );
            assert_eq!(ValueRef::Integer(&text).to_value(), value);
        }
        assert_ne!(
            hash(Some(ValueRef::Text("7"))),
            hash(Some(ValueRef::Text("77")))
        );
        assert_eq!(hash(None), hash(Some(ValueRef::Text(""))));
    }

    /// Past the budget, which rows wait, and so which rows each batch holds, follows from
    /// the hashes' values, not only from their equality: a retry of a run built with another
    /// toolchain must hash alike. `std` does not promise its `DefaultHasher` stays the same
    /// algorithm; if this fails, pin the hash to a crate before taking the new toolchain.
    #[test]
    fn the_key_hash_is_the_same_on_every_toolchain() {
        assert_eq!(
            hash(Some(ValueRef::Text("person7@example.com"))),
            0x203c_65a9_316d_6ec4
        );
        assert_eq!(hash(None), 0x3040_6ea5_23c5_3def);
    }

    #[test]
    fn a_number_and_its_text_are_the_same_key() {
        let mut seen = unbounded();
        let n = json!(7);
        assert!(check(&mut seen, Some(ValueRef::Other(&n))).is_ok());
        assert!(check(&mut seen, Some(ValueRef::Text("7"))).is_err());
    }

    #[test]
    fn the_budget_allows_the_keys_of_a_table_that_fits() {
        assert_eq!(keys_within(32 << 20), 1_835_008);
        assert!(hashes::peak_bytes(1 << 21) <= 32 << 20);
        assert!(hashes::peak_bytes(1 << 22) > 32 << 20);
        assert_eq!(keys_within(0), 0);
        assert_eq!(keys_within(1024), 56);
    }

    /// Rows of `(key, valid)` checked as the validator checks them, with a set of at most
    /// `keys` keys, then a filter of `filter` bytes, deciding `chunk` waiting rows at once;
    /// `None` for an invalid row, whose key is never checked.
    fn bounded(
        rows: &[(String, bool)],
        (keys, filter, chunk): (usize, usize, usize),
    ) -> (Vec<Option<Result<(), String>>>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = Seen::with_sizes(dir.path().to_owned(), keys, filter, chunk);
        let mut out = vec![None; rows.len()];
        for (row, (key, valid)) in rows.iter().enumerate() {
            if !valid {
                continue;
            }
            let key = Some(ValueRef::Text(key));
            out[row] = match seen.insert("id", key).unwrap() {
                Verdict::New => Some(Ok(())),
                Verdict::Repeated(reason) => Some(Err(reason)),
                Verdict::Later(hash) => {
                    let record: Record = [("id".to_owned(), json!(rows[row].0))]
                        .into_iter()
                        .collect();
                    let line = u64::try_from(row).unwrap();
                    seen.wait(hash, line, Waiting::Json(&record)).unwrap();
                    None
                }
            };
        }
        let mut waited = 0;
        if let Some(mut decisions) = seen.decisions().unwrap() {
            while let Some(decision) = decisions.next().unwrap() {
                waited += 1;
                let Row::Json(record) = decision.row else {
                    panic!("a JSON row comes back as JSON");
                };
                let row = usize::try_from(decision.line).unwrap();
                assert!(out[row].is_none(), "row {row} decided twice");
                assert_eq!(record["id"], json!(rows[row].0));
                let key = Some(ValueRef::Text(&rows[row].0));
                out[row] = Some(if decision.repeated {
                    Err(repeated("id", key))
                } else {
                    Ok(())
                });
            }
        }
        assert!(seen.decisions().unwrap().is_none(), "decided once");
        (out, waited)
    }

    #[test]
    fn rows_left_for_later_are_decided_as_the_set_decides_them() {
        // 173 keys over 400 rows; every seventh row is invalid, so its key never counts,
        // and a later row with that key may be kept.
        let rows: Vec<(String, bool)> = (0..400u64)
            .map(|i| (((i * 7919) % 173).to_string(), i % 7 != 3))
            .collect();
        let mut seen = unbounded();
        let expected: Vec<_> = rows
            .iter()
            .map(|(key, valid)| valid.then(|| check(&mut seen, Some(ValueRef::Text(key)))))
            .collect();
        let mut kept = std::collections::HashSet::new();
        let counted = (rows.iter())
            .filter(|(key, valid)| *valid && !kept.insert(key))
            .count();
        let rejected = expected
            .iter()
            .filter(|r| matches!(r, Some(Err(_))))
            .count();
        assert_eq!(rejected, counted);
        assert!(rejected > 150, "{rejected}");
        // The set full at once, mid-file, or never; a filter of one block (nearly every
        // key waits, new ones too) or a roomy one (only repeats wait); the waiting rows
        // decided one, seven or all at a time.
        for keys in [0, 1, 100, 400] {
            for filter in [1, 1 << 16] {
                for chunk in [1, 7, 1000] {
                    let (out, waited) = bounded(&rows, (keys, filter, chunk));
                    assert_eq!(out, expected, "{keys} {filter} {chunk}");
                    match (keys, filter) {
                        (0, 1) => assert!(waited > rejected + 50, "new keys wait: {waited}"),
                        (0, _) => assert_eq!(waited, rejected, "only the repeats wait"),
                        (400, _) => assert_eq!(waited, 0, "the set holds every key"),
                        _ => {}
                    }
                }
            }
        }
    }

    #[test]
    fn the_budget_sizes_the_filter_and_the_end_s_look_ups() {
        let seen = Seen::new(32 << 20, std::env::temp_dir());
        assert_eq!(seen.sizes.keys, 1_835_008);
        assert_eq!(seen.sizes.filter, 32 << 20);
        assert_eq!(seen.sizes.chunk, keys_within(8 << 20));
        let seen = Seen::new(0, std::env::temp_dir());
        assert_eq!(seen.sizes.keys, 0);
        assert_eq!(seen.sizes.filter, FILTER_MEMORY_MIN);
        assert!(seen.sizes.chunk > 50_000, "{}", seen.sizes.chunk);
    }
}
