//! The only module that talks to git, through libgit2 (git2).
//!
//! A generated repository starts life as a git repository with one commit, so
//! the first diff an engineer sees is their own work. libgit2 is used instead
//! of the git CLI so etlgen needs no git on PATH and behaves the same
//! everywhere.

use std::path::Path;

use anyhow::{Context, Result};
use git2::{
    IndexAddOption, ObjectType, Oid, Repository, RepositoryInitOptions, Signature, Status,
    StatusOptions, TreeWalkMode, TreeWalkResult,
};

use crate::render::Tree;

/// The private ref holding every render etlgen made of a repository, as a
/// chain of commits whose trees are exactly what was rendered: the merge
/// base of the next `update`. Not fetched by a plain clone; see
/// docs/lifecycle.md for how it travels and what happens when it does not.
pub const PRISTINE_REF: &str = "refs/etlgen/pristine";

/// The branch a new repository starts on.
pub const INITIAL_BRANCH: &str = "main";

/// Who commits when git has no `user.name`/`user.email` configured.
const FALLBACK_NAME: &str = "etlgen";
const FALLBACK_EMAIL: &str = "etlgen@localhost";

/// Initialises a repository in `dir`, stages every file, commits them, and
/// records `render` (what etlgen wrote) under [`PRISTINE_REF`]. Returns the
/// commit id.
pub fn init_and_commit(dir: &Path, message: &str, render: &Tree) -> Result<git2::Oid> {
    let mut opts = RepositoryInitOptions::new();
    opts.initial_head(INITIAL_BRANCH);
    let repo = Repository::init_opts(dir, &opts)
        .with_context(|| format!("initialising a git repository in {}", dir.display()))?;
    let mut index = repo.index().context("opening the git index")?;
    index
        .add_all(["*"], IndexAddOption::DEFAULT, None)
        .context("staging the generated files")?;
    index.write().context("writing the git index")?;
    let tree_id = index.write_tree().context("writing the git tree")?;
    let tree = repo.find_tree(tree_id)?;
    let sig = signature(&repo)?;
    let id = repo
        .commit(Some("HEAD"), &sig, &sig, message, &tree, &[])
        .context("creating the initial commit")?;
    record_pristine(&repo, render, message)?;
    Ok(id)
}

/// The configured identity, else `$GIT_AUTHOR_NAME`/`$GIT_AUTHOR_EMAIL`, else
/// etlgen's own, so a fresh CI machine can still generate a repository.
fn signature(repo: &Repository) -> Result<Signature<'static>> {
    if let Ok(sig) = repo.signature() {
        return Ok(sig.to_owned());
    }
    let name = std::env::var("GIT_AUTHOR_NAME").unwrap_or_else(|_| FALLBACK_NAME.into());
    let email = std::env::var("GIT_AUTHOR_EMAIL").unwrap_or_else(|_| FALLBACK_EMAIL.into());
    Signature::now(&name, &email).context("building the commit signature")
}

/// Tracked files with uncommitted changes (staged or not); untracked and
/// ignored files do not count.
pub fn dirty_paths(repo: &Repository) -> Result<Vec<String>> {
    let mut opts = StatusOptions::new();
    opts.include_untracked(false).include_ignored(false);
    let statuses = repo
        .statuses(Some(&mut opts))
        .context("reading git status")?;
    Ok(statuses
        .iter()
        .filter(|s| s.status() != Status::CURRENT)
        .filter_map(|s| s.path().ok().map(str::to_string))
        .collect())
}

/// Every file of the commit HEAD points at.
pub fn head_tree(repo: &Repository) -> Result<Tree> {
    let commit = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .context("reading HEAD: the repository has no commit yet")?;
    read_tree(repo, &commit.tree()?)
}

/// The last render recorded under [`PRISTINE_REF`], if the ref exists.
pub fn pristine(repo: &Repository) -> Result<Option<Tree>> {
    let Ok(reference) = repo.find_reference(PRISTINE_REF) else {
        return Ok(None);
    };
    let commit = reference
        .peel_to_commit()
        .with_context(|| format!("{PRISTINE_REF} does not point at a commit"))?;
    read_tree(repo, &commit.tree()?).map(Some)
}

/// Records `tree` as the newest render under [`PRISTINE_REF`]; nothing
/// happens when it is the render recorded already.
pub fn record_pristine(repo: &Repository, tree: &Tree, message: &str) -> Result<Oid> {
    let tree_id = write_tree(repo, tree)?;
    let parent = repo
        .find_reference(PRISTINE_REF)
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    if let Some(parent) = &parent
        && parent.tree_id() == tree_id
    {
        return Ok(parent.id());
    }
    let sig = signature(repo)?;
    let tree = repo.find_tree(tree_id)?;
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let commit = repo
        .commit(None, &sig, &sig, message, &tree, &parents)
        .context("recording the render")?;
    repo.reference(PRISTINE_REF, commit, true, message)
        .with_context(|| format!("updating {PRISTINE_REF}"))?;
    Ok(commit)
}

/// Stages `paths` as they are in the working tree (a missing file is
/// staged as deleted) and commits them on HEAD.
pub fn commit_paths(repo: &Repository, paths: &[&str], message: &str) -> Result<Oid> {
    let workdir = repo
        .workdir()
        .context("the repository has no working tree")?;
    let mut index = repo.index().context("opening the git index")?;
    for path in paths {
        let rel = Path::new(path);
        if workdir.join(rel).exists() {
            index.add_path(rel)
        } else {
            index.remove_path(rel)
        }
        .with_context(|| format!("staging {path}"))?;
    }
    index.write().context("writing the git index")?;
    let tree = repo.find_tree(index.write_tree().context("writing the git tree")?)?;
    let head = repo.head()?.peel_to_commit()?;
    let sig = signature(repo)?;
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &[&head])
        .context("committing")
}

/// The blobs under `tree`, by `/`-separated path.
fn read_tree(repo: &Repository, tree: &git2::Tree) -> Result<Tree> {
    let mut out = Tree::new();
    let mut failed = None;
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(ObjectType::Blob) {
            match repo.find_blob(entry.id()) {
                Ok(blob) => {
                    let name = entry.name().unwrap_or_default();
                    out.insert(format!("{dir}{name}"), blob.content().to_vec());
                }
                Err(e) => {
                    failed = Some(e);
                    return TreeWalkResult::Abort;
                }
            }
        }
        TreeWalkResult::Ok
    })?;
    match failed {
        Some(e) => Err(e).context("reading a git tree"),
        None => Ok(out),
    }
}

/// Writes `tree` into the object database; scripts (`#!`) are executable,
/// as [`crate::write`] makes them.
fn write_tree(repo: &Repository, tree: &Tree) -> Result<Oid> {
    let mut index = git2::Index::new().context("creating an in-memory index")?;
    for (path, bytes) in tree {
        let id = repo.blob(bytes).context("writing a blob")?;
        let mode = if bytes.starts_with(b"#!/") {
            0o100_755
        } else {
            0o100_644
        };
        let entry = git2::IndexEntry {
            ctime: git2::IndexTime::new(0, 0),
            mtime: git2::IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode,
            uid: 0,
            gid: 0,
            file_size: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            id,
            flags: 0,
            flags_extended: 0,
            path: path.as_bytes().to_vec(),
        };
        index
            .add(&entry)
            .with_context(|| format!("adding {path} to a tree"))?;
    }
    index
        .write_tree_to(repo)
        .context("writing the render's tree")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_every_file_on_main() {
        let tmp = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(tmp.path().join("src")).unwrap();
        fs_err::write(tmp.path().join("src/lib.rs"), "pub fn f() {}\n").unwrap();
        fs_err::write(tmp.path().join(".gitignore"), "/target\n").unwrap();
        let render = read_tree_of_dir(tmp.path());
        let id = init_and_commit(tmp.path(), "Generate client-x", &render).unwrap();

        let repo = Repository::open(tmp.path()).unwrap();
        let head = repo.head().unwrap();
        assert_eq!(head.shorthand().unwrap(), INITIAL_BRANCH);
        let commit = repo.find_commit(id).unwrap();
        assert_eq!(commit.message().unwrap(), "Generate client-x");
        let tree = commit.tree().unwrap();
        assert!(tree.get_path(Path::new("src/lib.rs")).is_ok());
        assert!(tree.get_path(Path::new(".gitignore")).is_ok());
        assert!(
            repo.statuses(None).unwrap().is_empty(),
            "working tree is clean"
        );
        assert!(!commit.author().name().unwrap_or_default().is_empty());
        assert_eq!(pristine(&repo).unwrap(), Some(render.clone()));
        assert_eq!(head_tree(&repo).unwrap(), render);
    }

    fn read_tree_of_dir(dir: &Path) -> Tree {
        Tree::from([
            (
                "src/lib.rs".to_string(),
                fs_err::read(dir.join("src/lib.rs")).unwrap(),
            ),
            (
                ".gitignore".to_string(),
                fs_err::read(dir.join(".gitignore")).unwrap(),
            ),
        ])
    }

    #[test]
    fn recording_the_same_render_twice_adds_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        fs_err::write(tmp.path().join("a"), "1\n").unwrap();
        let render = Tree::from([("a".to_string(), b"1\n".to_vec())]);
        init_and_commit(tmp.path(), "Generate", &render).unwrap();
        let repo = Repository::open(tmp.path()).unwrap();
        let first = repo.refname_to_id(PRISTINE_REF).unwrap();
        assert_eq!(record_pristine(&repo, &render, "again").unwrap(), first);
        let changed = Tree::from([("a".to_string(), b"2\n".to_vec())]);
        let second = record_pristine(&repo, &changed, "update").unwrap();
        assert_ne!(second, first);
        let commit = repo.find_commit(second).unwrap();
        assert_eq!(
            commit.parent_id(0).unwrap(),
            first,
            "renders form a history"
        );
        assert_eq!(pristine(&repo).unwrap(), Some(changed));
    }
}
