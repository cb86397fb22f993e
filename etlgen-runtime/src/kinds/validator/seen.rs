//! The primary keys a run has seen, for rejecting repeated keys, in bounded memory.
//!
//! A 64-bit hash of each key is kept, never the key. While the distinct keys fit the
//! step's budget they are a hash set, and a file is read once, as it always was. A file
//! with more keys cannot be decided row by row in that memory, and batches already sent
//! cannot be taken back, so once the set is full at row `P` the validator reads the rest
//! of the raw copy once more before going on (see `collect`). That pass pairs each row's
//! key hash with the row's number, beside the set's own hashes, and sorts the pairs on
//! disk (`spill`). Read back by hash, they tell for each row from `P` whose hash
//! another key has either that it repeats a key held before `P` (a duplicate if valid),
//! or which group of rows from `P` it shares its hash with; sorted again by row, they are
//! what the run then looks up, row by row, keeping one bit per group: set by the group's
//! first valid row, rejecting any later one.
//!
//! Validity is decided only by the run itself, so the collecting pass may pair rows that
//! turn out invalid (the run never looks them up, and their group's bit stays clear for a
//! later valid row). What it must get right is the hash of every row that turns out valid,
//! which is why it checks the key as the run does. A row is a duplicate either way iff an
//! earlier valid key has its hash, so the rows sent and rejected are the same as with an
//! unbounded set (hash collisions included), and a retry repeats them.
//!
//! Why not a smaller in-memory structure: a Bloom filter or a set of shorter hashes gives
//! false duplicates, which would drop valid rows; only an exact comparison keeps the
//! outputs identical, and an exact set grows with the keys. The groups' bits do grow with
//! the file, by at most one bit per two rows past `P` (under 2 MiB for the benchmark's 17
//! M-row file), against 16 bytes per row on disk.

use std::fmt::{self, Write as _};
use std::hash::Hasher;
use std::path::{Path, PathBuf};

use super::hashes::{self, HashSet64};
use super::schema::{ValueRef, trim};
use super::spill::{Merge, Sorter};
use crate::error::StepError;

/// The number paired with a hash the set held before the collecting pass; a row's key is
/// paired with the row's number plus one.
const HELD: u64 = 0;

/// The tag of a row that repeats a key held before the collecting pass.
const REPEATS_HELD: u64 = u64::MAX;

/// The keys seen so far.
#[derive(Debug)]
pub(super) struct Seen {
    mode: Mode,
    /// The hashes [`Seen::warm`] computed: of the keys of rows `ahead_from..`, as read.
    ahead: Vec<u64>,
    ahead_from: u64,
}

#[derive(Debug)]
enum Mode {
    /// The hashes, while at most `limit`.
    Memory { set: HashSet64, limit: usize },
    /// The pass that only collects `(hash, row)`; no key is a duplicate here.
    Collect {
        pairs: Sorter<(u64, u64)>,
        dir: PathBuf,
        memory: usize,
    },
    /// The rows that share their hash with another key, in row order.
    Lookup(Repeats),
}

/// What the collecting pass found: `(row, tag)` for each row from the pass whose key's
/// hash another key has, ascending; the tag is [`REPEATS_HELD`] or the row's group.
#[derive(Debug)]
pub(super) struct Repeats {
    rows: Merge<(u64, u64)>,
    next: Option<(u64, u64)>,
    /// One bit per group: whether a valid row of it was seen.
    kept: Vec<u64>,
}

impl Default for Seen {
    fn default() -> Self {
        Self::in_memory(usize::MAX)
    }
}

impl Seen {
    /// A set of at most the distinct keys that fit `memory` bytes (see [`keys_within`]).
    pub(super) fn in_memory(memory: usize) -> Self {
        Self {
            ahead: Vec::new(),
            ahead_from: 0,
            mode: Mode::Memory {
                set: HashSet64::default(),
                limit: keys_within(memory),
            },
        }
    }

    /// Whether the set holds as many keys as it may; one more could make it grow.
    pub(super) fn full(&self) -> bool {
        matches!(&self.mode, Mode::Memory { set, limit } if set.len() >= *limit)
    }

    /// Starts the collecting pass: the set's hashes go to disk, spilling in `dir` past
    /// `memory` bytes, and the set is freed. The pass then inserts the keys of the rows
    /// after those the set saw.
    pub(super) fn start_collecting(self, dir: &Path, memory: usize) -> Result<Seen, StepError> {
        let Mode::Memory { set: held, .. } = self.mode else {
            return Err(StepError::permanent("dedup: collecting twice"));
        };
        let mut pairs = Sorter::new(dir, memory / 2);
        // Sorted in the set's own table, so the buffer fills only once the set is freed.
        pairs.push_sorted(held.into_sorted().into_iter().map(|hash| (hash, HELD)))?;
        Ok(Self {
            ahead: Vec::new(),
            ahead_from: 0,
            mode: Mode::Collect {
                pairs,
                dir: dir.to_owned(),
                memory: memory / 2,
            },
        })
    }

    /// Ends the collecting pass: which rows repeat which keys.
    pub(super) fn repeats(self) -> Result<Repeats, StepError> {
        let Mode::Collect { pairs, dir, memory } = self.mode else {
            return Err(StepError::permanent("dedup: not a collecting pass"));
        };
        let mut pairs = pairs.finish()?;
        let mut rows = Sorter::new(&dir, memory);
        let mut groups = 0u64;
        // Sorted by hash, then number (a held hash first): per hash, its first number,
        // and its rows' tag once it has a second.
        let mut group: Option<(u64, u64, Option<u64>)> = None;
        while let Some((hash, number)) = pairs.next()? {
            let row = number.wrapping_sub(1);
            match &mut group {
                Some((h, first, tag)) if *h == hash => {
                    let tag = match *tag {
                        Some(tag) => tag,
                        None if *first == HELD => *tag.insert(REPEATS_HELD),
                        None => {
                            rows.push((*first - 1, groups))?;
                            groups += 1;
                            *tag.insert(groups - 1)
                        }
                    };
                    rows.push((row, tag))?;
                }
                _ => group = Some((hash, number, None)),
            }
        }
        drop(pairs);
        let mut rows = rows.finish()?;
        let next = rows.next()?;
        // One bit per group, and a group has two rows (lossless on 64-bit targets).
        let kept = vec![0; groups.div_ceil(64) as usize];
        Ok(Repeats { rows, next, kept })
    }

    /// Goes on from the collecting pass's `repeats`.
    pub(super) fn look_up(&mut self, repeats: Repeats) {
        self.mode = Mode::Lookup(repeats);
    }

    /// Reads where the keys of the next rows (numbers `first_row..`), read ahead, would be
    /// in the set, without recording them, so that checking them one by one finds the
    /// set's memory in the cache. The hashes are kept for [`Seen::insert_as_read`].
    ///
    /// Each key is a random access into a table of up to the whole budget. Made one per row
    /// among the row's other work, the accesses wait on memory one after another; made here
    /// back to back, with no branch on what they read, they overlap. A key whose text
    /// differs from its checked value (a number written `007`) only misses the warm-up: what
    /// is recorded and decided is unchanged.
    pub(super) fn warm<'a>(&mut self, keys: impl Iterator<Item = &'a str>, first_row: u64) {
        self.ahead.clear();
        self.ahead_from = first_row;
        if let Mode::Memory { set, .. } = &self.mode {
            (self.ahead).extend(keys.map(|key| hash(Some(ValueRef::Text(trim(key))))));
            let read = (self.ahead.iter()).fold(0, |all, &hash| all ^ set.first_slot(hash));
            std::hint::black_box(read);
        }
    }

    /// [`Seen::insert`] for a key that is the row's key cell exactly as read (no value
    /// converted from it or put in its place), so the hash [`Seen::warm`] computed for the
    /// row is the key's own when the text has no blanks to trim.
    pub(super) fn insert_as_read(
        &mut self,
        column: &str,
        key: Option<ValueRef<'_>>,
        row: u64,
    ) -> Result<Result<(), String>, StepError> {
        let warmed = match key {
            Some(ValueRef::Text(s) | ValueRef::Integer(s)) if trim(s).len() == s.len() => {
                let at = row.checked_sub(self.ahead_from);
                let at = at.and_then(|at| usize::try_from(at).ok());
                at.and_then(|at| self.ahead.get(at)).copied()
            }
            _ => None,
        };
        self.insert_hashed(column, key, row, warmed)
    }

    /// Records the key of row number `row` (`None` when the row lacks the key column); a
    /// key seen before is the rejection reason. The outer error is a failure to spill or
    /// read back.
    pub(super) fn insert(
        &mut self,
        column: &str,
        key: Option<ValueRef<'_>>,
        row: u64,
    ) -> Result<Result<(), String>, StepError> {
        self.insert_hashed(column, key, row, None)
    }

    /// [`Seen::insert`], with the key's hash in memory if known.
    fn insert_hashed(
        &mut self,
        column: &str,
        key: Option<ValueRef<'_>>,
        row: u64,
        known: Option<u64>,
    ) -> Result<Result<(), String>, StepError> {
        let repeated = match &mut self.mode {
            Mode::Memory { set, .. } => !set.insert(known.unwrap_or_else(|| hash(key))),
            Mode::Collect { pairs, .. } => {
                pairs.push((hash(key), row + 1))?;
                false
            }
            Mode::Lookup(Repeats { rows, next, kept }) => {
                while next.is_some_and(|(n, _)| n < row) {
                    *next = rows.next()?;
                }
                match *next {
                    Some((n, tag)) if n == row => tag == REPEATS_HELD || !first_of(kept, tag),
                    _ => false,
                }
            }
        };
        Ok(if repeated {
            Err(format!("duplicate primary key {column} = {}", display(key)))
        } else {
            Ok(())
        })
    }
}

/// Sets the bit of `group`; whether it was clear.
fn first_of(kept: &mut [u64], group: u64) -> bool {
    // The bits were allocated for every group, so the word exists (truncation impossible).
    let word = &mut kept[(group / 64) as usize];
    let bit = 1 << (group % 64);
    let first = *word & bit == 0;
    *word |= bit;
    first
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
    use super::*;
    use serde_json::json;

    fn check(seen: &mut Seen, key: Option<ValueRef<'_>>) -> Result<(), String> {
        seen.insert("id", key, 0).unwrap()
    }

    #[test]
    fn a_repeated_key_is_rejected_with_its_json_text() {
        let mut seen = Seen::default();
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

    #[test]
    fn a_number_and_its_text_are_the_same_key() {
        let mut seen = Seen::default();
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

    /// Rows of `(key, valid)` checked as the validator checks them: in memory for the first
    /// `switch_at`, then collected (every row from there, valid or not) and looked up.
    fn external(
        rows: &[(String, bool)],
        switch_at: usize,
        memory: usize,
    ) -> Vec<Option<Result<(), String>>> {
        let dir = tempfile::tempdir().unwrap();
        let numbered = || rows.iter().zip(0u64..);
        let check = |seen: &mut Seen, ((key, valid), row): (&(String, bool), u64)| {
            valid.then(|| seen.insert("id", Some(ValueRef::Text(key)), row).unwrap())
        };
        let mut seen = Seen::in_memory(usize::MAX);
        let mut out: Vec<_> = numbered()
            .take(switch_at)
            .map(|row| check(&mut seen, row))
            .collect();
        let mut collect = std::mem::take(&mut seen)
            .start_collecting(dir.path(), memory)
            .unwrap();
        for ((key, _), row) in numbered().skip(switch_at) {
            let outcome = collect.insert("id", Some(ValueRef::Text(key)), row);
            assert!(outcome.unwrap().is_ok(), "collecting decides nothing");
        }
        seen.look_up(collect.repeats().unwrap());
        out.extend(numbered().skip(switch_at).map(|row| check(&mut seen, row)));
        out
    }

    #[test]
    fn looking_up_the_collected_repeats_rejects_what_the_set_rejects() {
        // 173 keys over 400 rows; every seventh row is invalid, so the run never checks its
        // key, and a later row with that key may be kept.
        let rows: Vec<(String, bool)> = (0..400u64)
            .map(|i| (((i * 7919) % 173).to_string(), i % 7 != 3))
            .collect();
        let mut seen = Seen::default();
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
        // Runs of one, three and all pairs (past the merge fan-in with one).
        for memory in [0, 96, 1 << 20] {
            for switch_at in [0, 1, 100, 399, 400] {
                assert_eq!(
                    external(&rows, switch_at, memory),
                    expected,
                    "{memory} {switch_at}"
                );
            }
        }
    }
}
