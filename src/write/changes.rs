//! Applying a merge's changes to an existing repository, all or nothing.
//!
//! Every file is copied aside before it is overwritten or deleted, so a
//! failure part-way (or a later failure, such as the commit) puts the
//! repository back exactly as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{WriteError, make_executable, safe_join};
use crate::lifecycle::merge::Change;

/// Changes applied to a repository, with what it takes to undo them.
#[must_use = "dropping Applied keeps the changes; call undo() to revert them"]
pub struct Applied {
    root: PathBuf,
    backup: tempfile::TempDir,
    /// Paths touched, in order, and whether each existed before.
    touched: Vec<(String, bool)>,
    /// Directories created for new files, outermost first.
    created_dirs: Vec<PathBuf>,
}

/// Writes and deletes `changes` under `root`. On failure everything done so
/// far is undone before the error returns.
pub fn apply_changes(
    root: &Path,
    changes: &BTreeMap<String, Change>,
) -> Result<Applied, WriteError> {
    let backup = tempfile::Builder::new()
        .prefix("etlgen-backup-")
        .tempdir()?;
    let mut applied = Applied {
        root: root.to_path_buf(),
        backup,
        touched: Vec::new(),
        created_dirs: Vec::new(),
    };
    for (rel, change) in changes {
        if let Err(e) = applied.apply_one(rel, change) {
            // Undo is best effort; the error that stopped us is the one to report.
            let _ = applied.undo();
            return Err(e);
        }
    }
    Ok(applied)
}

impl Applied {
    fn apply_one(&mut self, rel: &str, change: &Change) -> Result<(), WriteError> {
        let path = safe_join(&self.root, rel)?;
        let existed = path.is_file();
        if existed {
            let saved = self.backup.path().join(rel);
            fs_err::create_dir_all(saved.parent().expect("a relative path has a parent"))?;
            fs_err::copy(&path, &saved)?;
        }
        self.touched.push((rel.to_string(), existed));
        match change {
            Change::Write(bytes) => {
                let dir = path.parent().expect("a joined path has a parent");
                self.create_dirs(dir)?;
                fs_err::write(&path, bytes)?;
                if bytes.starts_with(b"#!/") {
                    make_executable(&path)?;
                }
            }
            Change::Delete if existed => {
                fs_err::remove_file(&path)?;
                remove_empty_parents(&self.root, &path);
            }
            Change::Delete => {}
        }
        Ok(())
    }

    /// Creates `dir` and its missing parents, remembering each.
    fn create_dirs(&mut self, dir: &Path) -> Result<(), WriteError> {
        let missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.exists())
            .map(Path::to_path_buf)
            .collect();
        for d in missing.iter().rev() {
            fs_err::create_dir(d)?;
            self.created_dirs.push(d.clone());
        }
        Ok(())
    }

    /// Puts every touched file back as it was and removes the directories
    /// created for new files.
    pub fn undo(self) -> Result<(), WriteError> {
        for (rel, existed) in self.touched.iter().rev() {
            let path = self.root.join(rel);
            if *existed {
                if let Some(dir) = path.parent() {
                    fs_err::create_dir_all(dir)?;
                }
                fs_err::copy(self.backup.path().join(rel), &path)?;
            } else if path.is_file() {
                fs_err::remove_file(&path)?;
            }
        }
        for dir in self.created_dirs.iter().rev() {
            // Only if empty: anything else in it is not ours.
            let _ = fs_err::remove_dir(dir);
        }
        Ok(())
    }
}

/// Removes the directories a deletion left empty, up to `root`.
fn remove_empty_parents(root: &Path, file: &Path) {
    for dir in file.ancestors().skip(1) {
        if dir == root || fs_err::remove_dir(dir).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file and directory under `root`, with file contents.
    fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs_err::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if path.is_dir() {
                    out.insert(format!("{rel}/"), Vec::new());
                    stack.push(path);
                } else {
                    out.insert(rel, fs_err::read(&path).unwrap());
                }
            }
        }
        out
    }

    fn setup() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(dir.path().join("lambdas/old/src")).unwrap();
        fs_err::write(dir.path().join("README.md"), "readme\n").unwrap();
        fs_err::write(dir.path().join("lambdas/old/src/main.rs"), "fn main() {}\n").unwrap();
        dir
    }

    #[test]
    fn writes_deletes_and_prunes_empty_directories() {
        let dir = setup();
        let changes = BTreeMap::from([
            ("README.md".to_string(), Change::Write(b"new\n".to_vec())),
            (
                "lambdas/new/src/main.rs".to_string(),
                Change::Write(b"x\n".to_vec()),
            ),
            ("lambdas/old/src/main.rs".to_string(), Change::Delete),
        ]);
        let _applied = apply_changes(dir.path(), &changes).unwrap();
        assert_eq!(
            fs_err::read_to_string(dir.path().join("README.md")).unwrap(),
            "new\n"
        );
        assert!(dir.path().join("lambdas/new/src/main.rs").is_file());
        assert!(!dir.path().join("lambdas/old").exists());
    }

    #[test]
    fn a_failure_part_way_leaves_the_tree_as_it_was() {
        let dir = setup();
        // A file where a directory must go makes the last write fail.
        fs_err::write(dir.path().join("zz"), "in the way\n").unwrap();
        let before = snapshot(dir.path());
        let changes = BTreeMap::from([
            ("README.md".to_string(), Change::Write(b"new\n".to_vec())),
            (
                "lambdas/new/src/main.rs".to_string(),
                Change::Write(b"x\n".to_vec()),
            ),
            ("lambdas/old/src/main.rs".to_string(), Change::Delete),
            ("zz/file".to_string(), Change::Write(b"x\n".to_vec())),
        ]);
        let err = apply_changes(dir.path(), &changes)
            .err()
            .expect("the write fails");
        assert!(err.to_string().contains("zz"), "{err}");
        assert_eq!(snapshot(dir.path()), before);
    }

    #[test]
    fn undo_reverts_applied_changes() {
        let dir = setup();
        let before = snapshot(dir.path());
        let changes = BTreeMap::from([
            ("README.md".to_string(), Change::Write(b"new\n".to_vec())),
            (
                "lambdas/new/src/main.rs".to_string(),
                Change::Write(b"x\n".to_vec()),
            ),
            ("lambdas/old/src/main.rs".to_string(), Change::Delete),
        ]);
        apply_changes(dir.path(), &changes).unwrap().undo().unwrap();
        assert_eq!(snapshot(dir.path()), before);
    }
}
