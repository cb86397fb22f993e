//! The only module that writes a rendered tree to disk.
//!
//! Writes are all-or-nothing: the tree is staged in a hidden temporary
//! directory beside the target, finished there (git init and commit), and only
//! then renamed into place. Any failure before the rename drops the staging
//! directory, so a failed `new` leaves nothing behind and never touches a
//! directory that holds a user's files.

use std::io;
use std::path::{Path, PathBuf};

use crate::render::Tree;

mod changes;
pub use changes::{Applied, apply_changes};

/// Why a tree could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The target holds files already.
    #[error(
        "{} already exists and is not empty; choose another --output directory or remove it first",
        .0.display()
    )]
    TargetNotEmpty(PathBuf),
    /// The target exists but is not a directory.
    #[error("{} exists and is not a directory; choose another --output path", .0.display())]
    TargetNotADirectory(PathBuf),
    /// A rendered path would leave the target directory.
    #[error(
        "refusing to write {0:?}: it is not a plain relative path (a bug in etlgen's templates)"
    )]
    UnsafePath(String),
    /// An I/O operation failed; fs-err puts the path in the message.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The finishing step (git) failed; nothing was written.
    #[error("{0:#}")]
    Finish(anyhow::Error),
}

/// Checks that `target` does not exist or is an empty directory.
pub fn check_target(target: &Path) -> Result<(), WriteError> {
    match fs_err::metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
        Ok(meta) if !meta.is_dir() => Err(WriteError::TargetNotADirectory(target.to_path_buf())),
        Ok(_) => {
            if fs_err::read_dir(target)?.next().is_some() {
                Err(WriteError::TargetNotEmpty(target.to_path_buf()))
            } else {
                Ok(())
            }
        }
    }
}

/// Writes `tree` as a new directory `target`, running `finish` on the staged
/// copy before it is moved into place. Returns the final path.
///
/// An existing empty `target` is kept (a shell may be sitting in it, as with
/// `--output .`) and the staged entries are moved into it instead.
pub fn create_new(
    target: &Path,
    tree: &Tree,
    finish: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> Result<PathBuf, WriteError> {
    check_target(target)?;
    let existing = target.is_dir();
    let target = if existing {
        fs_err::canonicalize(target)?
    } else {
        target.to_path_buf()
    };
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let created = create_missing_dirs(&parent)?;
    let result = stage_and_move(&target, &parent, existing, tree, finish);
    if result.is_err()
        && let Some(first) = created
    {
        // Best effort: the directories were made for this write and are empty.
        let _ = fs_err::remove_dir_all(first);
    }
    result.map(|()| target)
}

fn stage_and_move(
    target: &Path,
    parent: &Path,
    existing: bool,
    tree: &Tree,
    finish: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> Result<(), WriteError> {
    let staging = tempfile::Builder::new()
        .prefix(".etlgen-new-")
        .tempdir_in(parent)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("creating a staging directory in {}: {e}", parent.display()),
            )
        })?;
    write_tree(staging.path(), tree)?;
    finish(staging.path()).map_err(WriteError::Finish)?;
    if !existing {
        let staged = staging.keep();
        return fs_err::rename(&staged, target).map_err(|e| {
            // Best effort: the rename's error is what matters to the user.
            let _ = fs_err::remove_dir_all(&staged);
            e.into()
        });
    }
    let mut moved = Vec::new();
    for entry in fs_err::read_dir(staging.path())? {
        let entry = entry?;
        let to = target.join(entry.file_name());
        if let Err(e) = fs_err::rename(entry.path(), &to) {
            // The target was empty, so everything in it now is ours to take back.
            for path in moved {
                let _ = fs_err::remove_dir_all(&path).or_else(|_| fs_err::remove_file(&path));
            }
            return Err(e.into());
        }
        moved.push(to);
    }
    Ok(())
}

/// Creates `dir` and its missing ancestors; returns the outermost one
/// created, so a failed write can remove exactly what it made.
fn create_missing_dirs(dir: &Path) -> Result<Option<PathBuf>, WriteError> {
    let mut first = None;
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        first = Some(d.to_path_buf());
        cur = d.parent();
    }
    fs_err::create_dir_all(dir)?;
    Ok(first)
}

/// Writes every file of `tree` under `root`, creating directories. Scripts
/// (files starting with `#!/`) are made executable.
pub fn write_tree(root: &Path, tree: &Tree) -> Result<(), WriteError> {
    for (rel, bytes) in tree {
        let path = safe_join(root, rel)?;
        if let Some(dir) = path.parent() {
            fs_err::create_dir_all(dir)?;
        }
        fs_err::write(&path, bytes)?;
        if bytes.starts_with(b"#!/") {
            make_executable(&path)?;
        }
    }
    Ok(())
}

/// Joins a rendered relative path onto `root`, refusing anything that could
/// climb out of it. Names are validated long before this; this is the last
/// line of defence against a template bug.
pub(crate) fn safe_join(root: &Path, rel: &str) -> Result<PathBuf, WriteError> {
    let plain = !rel.is_empty()
        && !rel.starts_with('/')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\\'));
    if plain {
        Ok(root.join(rel))
    } else {
        Err(WriteError::UnsafePath(rel.to_string()))
    }
}

#[cfg(unix)]
pub(crate) fn make_executable(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = fs_err::metadata(path)?.permissions();
    perms.set_mode(perms.mode() | 0o111);
    fs_err::set_permissions(path, perms)
}

#[cfg(not(unix))]
pub(crate) fn make_executable(_path: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> Tree {
        files
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs_err::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_a_new_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("client-x");
        create_new(
            &target,
            &tree(&[("a/b.txt", "hi"), ("run.sh", "#!/bin/sh\n")]),
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!(
            fs_err::read_to_string(target.join("a/b.txt")).unwrap(),
            "hi"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs_err::metadata(target.join("run.sh"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o111, 0o111);
        }
        assert_eq!(entries(tmp.path()), ["client-x"]);
    }

    #[test]
    fn fills_an_empty_directory() {
        let tmp = tempfile::tempdir().unwrap();
        create_new(tmp.path(), &tree(&[("x", "1")]), |_| Ok(())).unwrap();
        assert_eq!(entries(tmp.path()), ["x"]);
    }

    #[test]
    fn refuses_a_non_empty_target_and_leaves_it_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        fs_err::write(tmp.path().join("mine.txt"), "user data").unwrap();
        let err = create_new(tmp.path(), &tree(&[("x", "1")]), |_| Ok(())).unwrap_err();
        assert!(matches!(err, WriteError::TargetNotEmpty(_)), "{err}");
        assert!(err.to_string().contains("--output"));
        assert_eq!(entries(tmp.path()), ["mine.txt"]);
        assert_eq!(
            fs_err::read_to_string(tmp.path().join("mine.txt")).unwrap(),
            "user data"
        );
    }

    #[test]
    fn keeps_an_existing_empty_directory_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let here = tmp.path().join("here");
        fs_err::create_dir(&here).unwrap();
        #[cfg(unix)]
        let inode = {
            use std::os::unix::fs::MetadataExt;
            fs_err::metadata(&here).unwrap().ino()
        };
        create_new(&here.join("."), &tree(&[("a/b", "1"), ("c", "2")]), |_| {
            Ok(())
        })
        .unwrap();
        assert_eq!(entries(&here), ["a", "c"]);
        assert_eq!(
            entries(tmp.path()),
            ["here"],
            "no staging directory is left"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                fs_err::metadata(&here).unwrap().ino(),
                inode,
                "the same directory"
            );
        }
    }

    #[test]
    fn a_failure_removes_the_parents_it_created() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("new/deeper/client-x");
        let err = create_new(&target, &tree(&[("a", "1")]), |_| anyhow::bail!("no")).unwrap_err();
        assert!(err.to_string().contains("no"));
        assert!(entries(tmp.path()).is_empty(), "{:?}", entries(tmp.path()));
    }

    #[test]
    fn only_scripts_become_executable() {
        let tmp = tempfile::tempdir().unwrap();
        write_tree(
            tmp.path(),
            &tree(&[("run.sh", "#!/bin/sh\n"), ("lib.rs", "#![deny(x)]\n")]),
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &str| {
                fs_err::metadata(tmp.path().join(p))
                    .unwrap()
                    .permissions()
                    .mode()
            };
            assert_eq!(mode("run.sh") & 0o111, 0o111);
            assert_eq!(mode("lib.rs") & 0o111, 0);
        }
    }

    #[test]
    fn refuses_a_file_target() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs_err::write(&file, "x").unwrap();
        let err = create_new(&file, &tree(&[("x", "1")]), |_| Ok(())).unwrap_err();
        assert!(matches!(err, WriteError::TargetNotADirectory(_)), "{err}");
    }

    #[test]
    fn a_failed_finish_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("client-x");
        let err = create_new(&target, &tree(&[("a/b", "1")]), |staged| {
            assert!(staged.join("a/b").exists());
            anyhow::bail!("git exploded")
        })
        .unwrap_err();
        assert!(err.to_string().contains("git exploded"));
        assert!(entries(tmp.path()).is_empty(), "{:?}", entries(tmp.path()));
    }

    #[test]
    fn unsafe_paths_are_refused_and_nothing_is_left() {
        for bad in ["../escape", "/abs", "a/../../b", "a//b", ""] {
            let tmp = tempfile::tempdir().unwrap();
            let target = tmp.path().join("t");
            let err =
                create_new(&target, &tree(&[("ok", "1"), (bad, "x")]), |_| Ok(())).unwrap_err();
            assert!(matches!(err, WriteError::UnsafePath(_)), "{bad}: {err}");
            assert!(entries(tmp.path()).is_empty(), "{bad}");
        }
    }
}
