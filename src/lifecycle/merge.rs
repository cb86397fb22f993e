//! The 3-way merge behind `update`, `add` and `remove`: the last render
//! (base), the repository as committed (ours) and a new render (theirs)
//! become the files to write and delete. Pure: trees in, changes out.
//!
//! Each file is merged by its ownership class:
//! - **owned** files become theirs (or go, when theirs has none);
//! - **seeded** files are written once, when missing, and otherwise left
//!   alone; those of a removed component go with it;
//! - **merged** files take whichever side changed; when both did, TOML files
//!   are merged key by key, and other text line by line, leaving conflict
//!   markers where the two changed the same lines.
//!
//! A file the user deleted (or renamed) stays deleted, and `Cargo.lock` is
//! recomposed from the merged manifests, never merged.

use std::collections::{BTreeMap, BTreeSet};

use crate::render::Tree;
use crate::templates::Owner;

use super::tomlmerge;

/// What a merge does to one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Write these bytes.
    Write(Vec<u8>),
    /// Delete the file.
    Delete,
}

/// The result of a merge.
#[derive(Debug, Default)]
pub struct Merge {
    /// Every path whose file changes, with what happens to it.
    pub changes: BTreeMap<String, Change>,
    /// Paths written with conflict markers.
    pub conflicts: Vec<String>,
    /// Paths the user deleted that the new render changed: left deleted.
    pub kept_deleted: Vec<String>,
    /// Paths removed with their component although the user had edited
    /// them: the edits stay in git history.
    pub removed_edited: Vec<String>,
}

impl Merge {
    /// Whether the merge changes nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Merges `theirs` into `ours` from `base`. `owners` gives the class of every
/// path of `base` and `theirs` (theirs wins where both have one).
pub fn merge(base: &Tree, ours: &Tree, theirs: &Tree, owners: &BTreeMap<String, Owner>) -> Merge {
    let mut out = Merge::default();
    let paths: BTreeSet<&String> = base.keys().chain(theirs.keys()).collect();
    for path in paths {
        let owner = owners.get(path).copied().unwrap_or(Owner::Merged);
        let (b, o, t) = (base.get(path), ours.get(path), theirs.get(path));
        let change = match owner {
            Owner::Owned => owned(o, t),
            Owner::Seeded => seeded(path, b, o, t, &mut out),
            Owner::Merged => merged(path, b, o, t, &mut out),
        };
        if let Some(change) = change {
            out.changes.insert(path.clone(), change);
        }
    }
    out
}

type Bytes = Vec<u8>;

/// An owned file is whatever the new render says.
fn owned(ours: Option<&Bytes>, theirs: Option<&Bytes>) -> Option<Change> {
    match (ours, theirs) {
        (o, Some(t)) if o != Some(t) => Some(Change::Write(t.clone())),
        (Some(_), None) => Some(Change::Delete),
        _ => None,
    }
}

/// A seeded file is written when a component brings it and removed with its
/// component; in between it is the user's.
fn seeded(
    path: &str,
    base: Option<&Bytes>,
    ours: Option<&Bytes>,
    theirs: Option<&Bytes>,
    out: &mut Merge,
) -> Option<Change> {
    match (base, ours, theirs) {
        // New with this render (a new step): written unless the user already
        // has a file there.
        (None, None, Some(t)) => Some(Change::Write(t.clone())),
        // Its component is gone.
        (Some(b), Some(o), None) => {
            if o != b {
                out.removed_edited.push(path.to_string());
            }
            Some(Change::Delete)
        }
        _ => None,
    }
}

/// A merged file takes the side that changed, or both sides' changes.
fn merged(
    path: &str,
    base: Option<&Bytes>,
    ours: Option<&Bytes>,
    theirs: Option<&Bytes>,
    out: &mut Merge,
) -> Option<Change> {
    if ours == theirs || base == theirs {
        // Nothing new from the render: the user's version (or deletion) stands.
        return None;
    }
    if base == ours {
        // The user did not touch it: the render's version (or removal).
        return Some(match theirs {
            Some(t) => Change::Write(t.clone()),
            None => Change::Delete,
        });
    }
    match (base, ours, theirs) {
        (Some(_), None, Some(_)) => {
            out.kept_deleted.push(path.to_string());
            None
        }
        (Some(_), Some(_), None) => {
            // The component is gone, but the user had edited the file.
            out.removed_edited.push(path.to_string());
            Some(Change::Delete)
        }
        (b, Some(o), Some(t)) => {
            let empty = Vec::new();
            let b = b.unwrap_or(&empty);
            let (merged, clean) = merge_text(path, b, o, t);
            if !clean {
                out.conflicts.push(path.to_string());
            }
            (merged != *o).then_some(Change::Write(merged))
        }
        // (None, None, None) and (None, Some, None) cannot reach here.
        _ => None,
    }
}

/// Merges one file's three versions: key by key for TOML when that is
/// clean, else line by line with diff3-style conflict markers.
fn merge_text(path: &str, base: &[u8], ours: &[u8], theirs: &[u8]) -> (Vec<u8>, bool) {
    let texts = (
        std::str::from_utf8(base),
        std::str::from_utf8(ours),
        std::str::from_utf8(theirs),
    );
    let (Ok(b), Ok(o), Ok(t)) = texts else {
        // Not text: keep the user's bytes and say so.
        return (ours.to_vec(), false);
    };
    if path.ends_with(".toml")
        && let Some(merged) = tomlmerge::merge(b, o, t)
    {
        return (merged.into_bytes(), true);
    }
    match diffy::merge(b, o, t) {
        Ok(merged) => (merged.into_bytes(), true),
        Err(with_markers) => (with_markers.into_bytes(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> Tree {
        files
            .iter()
            .map(|(p, c)| ((*p).to_string(), c.as_bytes().to_vec()))
            .collect()
    }

    fn owners(files: &[(&str, Owner)]) -> BTreeMap<String, Owner> {
        files.iter().map(|(p, o)| ((*p).to_string(), *o)).collect()
    }

    fn write(text: &str) -> Option<Change> {
        Some(Change::Write(text.as_bytes().to_vec()))
    }

    #[test]
    fn owned_files_become_the_new_render_even_when_edited() {
        let base = tree(&[("o", "1\n"), ("gone", "x\n")]);
        let ours = tree(&[("o", "edited\n"), ("gone", "x\n")]);
        let theirs = tree(&[("o", "2\n")]);
        let m = merge(
            &base,
            &ours,
            &theirs,
            &owners(&[("o", Owner::Owned), ("gone", Owner::Owned)]),
        );
        assert_eq!(m.changes.get("o").cloned(), write("2\n"));
        assert_eq!(m.changes.get("gone"), Some(&Change::Delete));
    }

    #[test]
    fn seeded_files_are_written_once_and_removed_with_their_component() {
        let base = tree(&[("kept", "seed\n"), ("removed", "seed\n")]);
        let ours = tree(&[("kept", "the client's code\n"), ("removed", "edited\n")]);
        let theirs = tree(&[("kept", "new seed\n"), ("new", "seed\n")]);
        let o = owners(&[
            ("kept", Owner::Seeded),
            ("removed", Owner::Seeded),
            ("new", Owner::Seeded),
        ]);
        let m = merge(&base, &ours, &theirs, &o);
        assert_eq!(m.changes.get("kept"), None);
        assert_eq!(m.changes.get("new").cloned(), write("seed\n"));
        assert_eq!(m.changes.get("removed"), Some(&Change::Delete));
        assert_eq!(m.removed_edited, vec!["removed".to_string()]);
    }

    #[test]
    fn merged_files_combine_both_sides_and_mark_conflicts() {
        let base = tree(&[("a.md", "one\ntwo\nthree\n"), ("c.md", "x\n")]);
        let ours = tree(&[("a.md", "ONE\ntwo\nthree\n"), ("c.md", "mine\n")]);
        let theirs = tree(&[("a.md", "one\ntwo\nTHREE\n"), ("c.md", "theirs\n")]);
        let m = merge(&base, &ours, &theirs, &BTreeMap::new());
        assert_eq!(m.changes.get("a.md").cloned(), write("ONE\ntwo\nTHREE\n"));
        let Some(Change::Write(c)) = m.changes.get("c.md") else {
            panic!("c.md is written with markers")
        };
        let c = String::from_utf8(c.clone()).unwrap();
        assert!(
            c.contains("<<<<<<<") && c.contains("mine") && c.contains("theirs"),
            "{c}"
        );
        assert_eq!(m.conflicts, vec!["c.md".to_string()]);
    }

    #[test]
    fn a_deleted_file_stays_deleted_and_an_untouched_one_follows_the_render() {
        let base = tree(&[("deleted", "1\n"), ("untouched", "1\n"), ("same", "1\n")]);
        let ours = tree(&[("untouched", "1\n"), ("same", "1\n")]);
        let theirs = tree(&[("deleted", "2\n"), ("untouched", "2\n"), ("same", "1\n")]);
        let m = merge(&base, &ours, &theirs, &BTreeMap::new());
        assert_eq!(m.changes.get("deleted"), None);
        assert_eq!(m.kept_deleted, vec!["deleted".to_string()]);
        assert_eq!(m.changes.get("untouched").cloned(), write("2\n"));
        assert!(!m.changes.contains_key("same"));
    }

    #[test]
    fn nothing_new_merges_to_no_change() {
        let base = tree(&[("a", "1\n"), ("b", "1\n")]);
        let ours = tree(&[("a", "edited\n"), ("b", "1\n"), ("mine", "x\n")]);
        let m = merge(&base, &ours, &base, &BTreeMap::new());
        assert!(m.is_empty(), "{:?}", m.changes);
    }
}
