//! The only module that talks to git, through libgit2 (git2).
//!
//! A generated repository starts life as a git repository with one commit, so
//! the first diff an engineer sees is their own work. libgit2 is used instead
//! of the git CLI so etlgen needs no git on PATH and behaves the same
//! everywhere.

use std::path::Path;

use anyhow::{Context, Result};
use git2::{IndexAddOption, Repository, RepositoryInitOptions, Signature};

/// The branch a new repository starts on.
pub const INITIAL_BRANCH: &str = "main";

/// Who commits when git has no `user.name`/`user.email` configured.
const FALLBACK_NAME: &str = "etlgen";
const FALLBACK_EMAIL: &str = "etlgen@localhost";

/// Initialises a repository in `dir`, stages every file and commits them.
/// Returns the commit id.
pub fn init_and_commit(dir: &Path, message: &str) -> Result<git2::Oid> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_every_file_on_main() {
        let tmp = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(tmp.path().join("src")).unwrap();
        fs_err::write(tmp.path().join("src/lib.rs"), "pub fn f() {}\n").unwrap();
        fs_err::write(tmp.path().join(".gitignore"), "/target\n").unwrap();
        let id = init_and_commit(tmp.path(), "Generate client-x").unwrap();

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
    }
}
