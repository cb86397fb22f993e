//! Sorting more fixed-size items than memory should hold: sorted runs spilled to temporary
//! files, read back through one k-way merge.
//!
//! Dedup past its memory budget needs two such sorts (keys by hash, then repeated rows by
//! row number; see `seen`). The files come from `tempfile::tempfile_in`: they have no name, so
//! they vanish when dropped, even if the Lambda is stopped mid-run. Reads and writes block;
//! the validator runs alone in its Lambda and the files are local.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::StepError;

/// The most runs merged at once: past it, the runs are first merged into one, so the open
/// files and their read buffers stay bounded whatever the file's size.
const FAN_IN: usize = 64;
/// The read and write buffer of one run.
const BUFFER: usize = 64 << 10;

/// A fixed-size item, ordered as it sorts.
pub(super) trait Item: Copy + Ord {
    /// The item's bytes.
    type Bytes: AsRef<[u8]> + AsMut<[u8]> + Default;
    fn to_bytes(self) -> Self::Bytes;
    fn from_bytes(bytes: Self::Bytes) -> Self;
}

impl Item for u64 {
    type Bytes = [u8; 8];
    fn to_bytes(self) -> [u8; 8] {
        self.to_le_bytes()
    }
    fn from_bytes(bytes: [u8; 8]) -> Self {
        u64::from_le_bytes(bytes)
    }
}

impl Item for (u64, u64) {
    type Bytes = [u8; 16];
    fn to_bytes(self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.0.to_le_bytes());
        out[8..].copy_from_slice(&self.1.to_le_bytes());
        out
    }
    fn from_bytes(bytes: [u8; 16]) -> Self {
        let (a, b) = bytes.split_at(8);
        let word = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or_default());
        (word(a), word(b))
    }
}

/// Items pushed in any order, to be read back sorted.
#[derive(Debug)]
pub(super) struct Sorter<T> {
    dir: PathBuf,
    buffer: Vec<T>,
    capacity: usize,
    runs: Vec<File>,
}

impl<T: Item> Sorter<T> {
    /// A sorter holding at most `memory` bytes of items (at least one) before it spills a
    /// run to `dir`.
    pub(super) fn new(dir: &Path, memory: usize) -> Self {
        Self {
            dir: dir.to_owned(),
            buffer: Vec::new(),
            capacity: (memory / size_of::<T::Bytes>()).max(1),
            runs: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, item: T) -> Result<(), StepError> {
        if self.buffer.len() == self.capacity {
            self.spill()?;
        }
        if self.buffer.len() == self.buffer.capacity() {
            // Double (from 1024), but never past the budget, which doubling alone could pass.
            let len = self.buffer.len();
            let grown = (len + len.max(1024)).min(self.capacity);
            self.buffer.reserve_exact(grown - len);
        }
        self.buffer.push(item);
        Ok(())
    }

    /// Adds items already sorted as a run of their own, written as they come, so they need
    /// no room in the buffer.
    pub(super) fn push_sorted(
        &mut self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<(), StepError> {
        let mut items = items.into_iter();
        let run = write_run(&self.dir, || Ok(items.next()))?;
        self.add_run(run)
    }

    fn spill(&mut self) -> Result<(), StepError> {
        self.buffer.sort_unstable();
        let mut items = self.buffer.drain(..);
        let run = write_run(&self.dir, || Ok(items.next()))?;
        drop(items);
        self.add_run(run)
    }

    fn add_run(&mut self, run: File) -> Result<(), StepError> {
        self.runs.push(run);
        if self.runs.len() == FAN_IN {
            let runs = std::mem::take(&mut self.runs);
            let mut merge = Merge::<T>::new(&self.dir, runs, Vec::new())?;
            let run = write_run(&self.dir, || merge.next())?;
            self.runs.push(run);
        }
        Ok(())
    }

    /// Every item pushed, in order. Items still in memory stay there if nothing was spilled
    /// (the common case); otherwise they are spilled too, freeing the buffer.
    pub(super) fn finish(mut self) -> Result<Merge<T>, StepError> {
        if !self.runs.is_empty() && !self.buffer.is_empty() {
            self.spill()?;
        }
        self.buffer.sort_unstable();
        let buffer = std::mem::take(&mut self.buffer);
        Merge::new(&self.dir, self.runs, buffer)
    }
}

/// Sorted runs read back as one sorted sequence.
#[derive(Debug)]
pub(super) struct Merge<T> {
    dir: PathBuf,
    runs: Vec<BufReader<File>>,
    memory: std::vec::IntoIter<T>,
    heap: BinaryHeap<Reverse<(T, usize)>>,
}

impl<T: Item> Merge<T> {
    fn new(dir: &Path, runs: Vec<File>, memory: Vec<T>) -> Result<Self, StepError> {
        let mut merge = Self {
            dir: dir.to_owned(),
            runs: runs
                .into_iter()
                .map(|run| BufReader::with_capacity(BUFFER, run))
                .collect(),
            memory: memory.into_iter(),
            heap: BinaryHeap::new(),
        };
        for source in 0..=merge.runs.len() {
            if let Some(item) = read(&mut merge.runs, &mut merge.memory, dir, source)? {
                merge.heap.push(Reverse((item, source)));
            }
        }
        Ok(merge)
    }

    /// The smallest item not yet returned; `None` at the end.
    ///
    /// The run it came from refills the heap's top in place, one sift down, where a pop
    /// and a push sifted twice: in a profile of the 1 GB dedup run (15 M items merged) the
    /// heap's own `sift_up` and `push` were 3% of the samples, beside 2.9% in this function.
    pub(super) fn next(&mut self) -> Result<Option<T>, StepError> {
        let Some(mut top) = self.heap.peek_mut() else {
            return Ok(None);
        };
        let Reverse((item, source)) = *top;
        match read(&mut self.runs, &mut self.memory, &self.dir, source)? {
            Some(next) => *top = Reverse((next, source)),
            None => drop(PeekMut::pop(top)),
        }
        Ok(Some(item))
    }
}

/// The next item of run `source` of a merge's `runs`; the one past the files is `memory`.
fn read<T: Item>(
    runs: &mut [BufReader<File>],
    memory: &mut std::vec::IntoIter<T>,
    dir: &Path,
    source: usize,
) -> Result<Option<T>, StepError> {
    let Some(run) = runs.get_mut(source) else {
        return Ok(memory.next());
    };
    let mut bytes = T::Bytes::default();
    match run.read_exact(bytes.as_mut()) {
        Ok(()) => Ok(Some(T::from_bytes(bytes))),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(failed("reading a dedup run in", dir, e)),
    }
}

/// Writes a sorted run to a new temporary file in `dir`, rewound for reading.
fn write_run<T: Item>(
    dir: &Path,
    mut next: impl FnMut() -> Result<Option<T>, StepError>,
) -> Result<File, StepError> {
    let fail = |e| failed("writing a dedup run in", dir, e);
    let file = tempfile::tempfile_in(dir).map_err(fail)?;
    let mut out = BufWriter::with_capacity(BUFFER, file);
    while let Some(item) = next()? {
        out.write_all(item.to_bytes().as_ref()).map_err(fail)?;
    }
    let mut file = out.into_inner().map_err(|e| fail(e.into_error()))?;
    file.rewind().map_err(fail)?;
    Ok(file)
}

/// A retryable error naming the directory: a full or unwritable temp dir may be a passing
/// state of the Lambda's ephemeral storage, and the message says which setting to check.
fn failed(what: &str, dir: &Path, e: std::io::Error) -> StepError {
    StepError::retryable(format!("{what} {} (validator temp_dir)", dir.display())).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain<T: Item>(mut merge: Merge<T>) -> Vec<T> {
        let mut out = Vec::new();
        while let Some(item) = merge.next().unwrap() {
            out.push(item);
        }
        out
    }

    #[test]
    fn items_come_back_sorted_from_memory_and_from_runs() {
        let dir = tempfile::tempdir().unwrap();
        // Past FAN_IN runs of three, so runs are merged before the end too.
        let items: Vec<(u64, u64)> = (0..500u64).map(|i| ((i * 7919) % 211, i)).collect();
        let mut expected = items.clone();
        expected.sort_unstable();
        for memory in [16 * 3, 1 << 20] {
            let mut sorter = Sorter::new(dir.path(), memory);
            for &item in &items {
                sorter.push(item).unwrap();
            }
            let spilled = !sorter.runs.is_empty();
            assert_eq!(spilled, memory < 1 << 20);
            assert_eq!(drain(sorter.finish().unwrap()), expected, "memory {memory}");
        }
    }

    /// The buffer doubles, as a `Vec` would, up to the budget and no further.
    #[test]
    fn the_buffer_doubles_up_to_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        for (memory, pushed, room) in [
            (1 << 20, 1025, 2048),
            (1 << 20, 5000, 8192),
            (8 * 1500, 1025, 1500),
        ] {
            let mut sorter = Sorter::new(dir.path(), memory);
            for item in 0..pushed {
                sorter.push(item as u64).unwrap();
            }
            assert!(sorter.runs.is_empty());
            assert_eq!(
                sorter.buffer.capacity(),
                room,
                "{pushed} items in {memory} bytes"
            );
        }
    }

    #[test]
    fn sorted_runs_merge_with_pushed_items() {
        let dir = tempfile::tempdir().unwrap();
        let mut sorter = Sorter::new(dir.path(), 8 * 4);
        for item in [9u64, 1, 5] {
            sorter.push(item).unwrap();
        }
        sorter.push_sorted([0, 5, 8]).unwrap();
        sorter.push(3).unwrap();
        assert_eq!(drain(sorter.finish().unwrap()), [0, 1, 3, 5, 5, 8, 9]);
    }

    #[test]
    fn an_unwritable_dir_is_a_retryable_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let missing = file.join("tmp");
        let mut sorter = Sorter::<u64>::new(&missing, 8);
        sorter.push(2).unwrap();
        let error = sorter.push(1).unwrap_err();
        assert!(error.is_retryable());
        assert!(
            error.message().contains(&missing.display().to_string()),
            "{}",
            error.message()
        );
    }
}
