//! The primary keys a run has seen, for rejecting repeated keys, in bounded memory.
//!
//! A 64-bit hash of each key is kept, never the key. While the distinct keys fit the
//! step's budget they are a hash set, and a file is read once, as it always was. A file
//! with more keys cannot be decided row by row in that memory, and batches already sent
//! cannot be taken back, so the validator then reads the raw copy once more before going
//! on (see `Validator::process`): that pass only collects `(hash, n)` for the n-th key
//! checked, in sorted runs on disk (`spill`); the merged runs give every n whose hash came
//! earlier, sorted again by n; and the run goes on rejecting exactly those. A row is a
//! duplicate either way iff an earlier checked key has its hash, so the rows sent and
//! rejected are the same as with an unbounded set (hash collisions included), and a retry
//! repeats them.
//!
//! Why not a smaller in-memory structure: a Bloom filter or a set of shorter hashes gives
//! false duplicates, which would drop valid rows; only an exact comparison keeps the
//! outputs identical, and an exact set grows with the keys.

use std::fmt::{self, Write as _};
use std::hash::Hasher;
use std::path::{Path, PathBuf};

use super::hashes::{self, HashSet64};
use super::schema::{ValueRef, trim};
use super::spill::{Merge, Sorter};
use crate::error::StepError;

/// The keys seen so far.
#[derive(Debug)]
pub(super) struct Seen {
    /// Keys checked so far: the next one is key number `checked`.
    checked: u64,
    mode: Mode,
    /// The hashes of the keys [`Seen::warm`] looks up.
    scratch: Vec<u64>,
}

#[derive(Debug)]
enum Mode {
    /// The hashes, while at most `limit`.
    Memory { set: HashSet64, limit: usize },
    /// The pass that only collects `(hash, key number)`; no key is a duplicate here.
    Collect(Sorter<(u64, u64)>, PathBuf, usize),
    /// The numbers of the keys that repeat an earlier one, ascending; `next` is the first
    /// not yet passed.
    Lookup {
        duplicates: Merge<u64>,
        next: Option<u64>,
    },
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
            checked: 0,
            scratch: Vec::new(),
            mode: Mode::Memory {
                set: HashSet64::default(),
                limit: keys_within(memory),
            },
        }
    }

    /// The collecting pass, spilling to `dir` past `memory` bytes.
    pub(super) fn collect(dir: &Path, memory: usize) -> Self {
        Self {
            checked: 0,
            scratch: Vec::new(),
            mode: Mode::Collect(Sorter::new(dir, memory / 2), dir.to_owned(), memory / 2),
        }
    }

    /// Whether the set holds as many keys as it may; one more could make it grow.
    pub(super) fn full(&self) -> bool {
        matches!(&self.mode, Mode::Memory { set, limit } if set.len() >= *limit)
    }

    /// Frees the set before the collecting pass (decisions so far are kept by the caller).
    pub(super) fn forget(&mut self) {
        if let Mode::Memory { set, .. } = &mut self.mode {
            *set = HashSet64::default();
        }
    }

    /// Goes on from the collecting pass's `duplicates`, at the key number reached so far.
    pub(super) fn look_up(&mut self, mut duplicates: Merge<u64>) -> Result<(), StepError> {
        let next = duplicates.next()?;
        self.mode = Mode::Lookup { duplicates, next };
        Ok(())
    }

    /// After the collecting pass: the numbers of the keys that repeat an earlier key's
    /// hash, ascending.
    pub(super) fn duplicates(self) -> Result<Merge<u64>, StepError> {
        let Mode::Collect(sorter, dir, memory) = self.mode else {
            return Err(StepError::permanent("dedup: not a collecting pass"));
        };
        let mut pairs = sorter.finish()?;
        let mut duplicates = Sorter::new(&dir, memory);
        let mut last = None;
        // Sorted by hash, then number: the first of each hash is the one kept.
        while let Some((hash, number)) = pairs.next()? {
            if last == Some(hash) {
                duplicates.push(number)?;
            }
            last = Some(hash);
        }
        drop(pairs);
        duplicates.finish()
    }

    /// Looks up the keys of the next rows, read ahead, without recording them, so that
    /// checking them one by one finds the set's memory in the cache.
    ///
    /// Each key is a random access into a table of up to the whole budget. Made one per row
    /// among the row's other work, the accesses wait on memory one after another; made here
    /// back to back, they overlap. A key whose text differs from its checked value (a number
    /// written `007`) only misses the warm-up: what is recorded and decided is unchanged.
    pub(super) fn warm<'a>(&mut self, keys: impl Iterator<Item = &'a str>) {
        if let Mode::Memory { set, .. } = &self.mode {
            self.scratch.clear();
            self.scratch
                .extend(keys.map(|key| hash(Some(ValueRef::Text(trim(key))))));
            for hash in &self.scratch {
                std::hint::black_box(set.contains(*hash));
            }
        }
    }

    /// Records the key of a row (`None` when the row lacks the key column); a key seen
    /// before is the rejection reason. The outer error is a failure to spill or read back.
    pub(super) fn insert(
        &mut self,
        column: &str,
        key: Option<ValueRef<'_>>,
    ) -> Result<Result<(), String>, StepError> {
        let number = self.checked;
        self.checked += 1;
        let repeated = match &mut self.mode {
            Mode::Memory { set, .. } => !set.insert(hash(key)),
            Mode::Collect(sorter, ..) => {
                sorter.push((hash(key), number))?;
                false
            }
            Mode::Lookup { duplicates, next } => {
                while next.is_some_and(|n| n < number) {
                    *next = duplicates.next()?;
                }
                *next == Some(number)
            }
        };
        Ok(if repeated {
            Err(format!("duplicate primary key {column} = {}", display(key)))
        } else {
            Ok(())
        })
    }
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
        Some(ValueRef::Text(s)) => hasher.write(s.as_bytes()),
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
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(seen: &mut Seen, key: Option<ValueRef<'_>>) -> Result<(), String> {
        seen.insert("id", key).unwrap()
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

    /// Keys checked through the collecting pass and then looked up, switching after
    /// `switch_at` keys as the validator does, against the in-memory set.
    fn external(keys: &[String], switch_at: usize, memory: usize) -> Vec<Result<(), String>> {
        let dir = tempfile::tempdir().unwrap();
        let mut collect = Seen::collect(dir.path(), memory);
        for key in keys {
            check(&mut collect, Some(ValueRef::Text(key))).unwrap();
        }
        let mut seen = Seen::in_memory(usize::MAX);
        let mut out: Vec<_> = keys[..switch_at]
            .iter()
            .map(|key| check(&mut seen, Some(ValueRef::Text(key))))
            .collect();
        seen.forget();
        seen.look_up(collect.duplicates().unwrap()).unwrap();
        out.extend(
            keys[switch_at..]
                .iter()
                .map(|key| check(&mut seen, Some(ValueRef::Text(key)))),
        );
        out
    }

    #[test]
    fn looking_up_the_spilled_duplicates_rejects_what_the_set_rejects() {
        let keys: Vec<String> = (0..400u64)
            .map(|i| ((i * 7919) % 173).to_string())
            .collect();
        let mut seen = Seen::default();
        let expected: Vec<_> = keys
            .iter()
            .map(|key| check(&mut seen, Some(ValueRef::Text(key))))
            .collect();
        assert_eq!(expected.iter().filter(|r| r.is_err()).count(), 400 - 173);
        // Runs of one, three and all pairs (past the merge fan-in with one).
        for memory in [0, 96, 1 << 20] {
            for switch_at in [0, 100, 400] {
                assert_eq!(
                    external(&keys, switch_at, memory),
                    expected,
                    "{memory} {switch_at}"
                );
            }
        }
    }
}
