//! An existing generated repository: its answers, its lock record, its last
//! render, and the one way every lifecycle command changes it (render, merge,
//! apply, commit, record).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use super::lock::{LOCK_PATH, LockFile};
use super::merge::{Change, Merge, merge};
use crate::answers::{ANSWERS_PATH, Answers, AnswersFile};
use crate::catalog::Catalog;
use crate::plan::{ETLGEN_VERSION, Plan};
use crate::render::{Tree, render_with};
use crate::templates::{Owner, Templates};
use crate::{git, lockfile, write};

/// A generated repository, opened.
pub struct Repo {
    /// Its working tree.
    pub root: PathBuf,
    /// Its git repository, if it is one.
    pub git: Option<git2::Repository>,
    /// `.etlgen/answers.toml` as written.
    pub raw: AnswersFile,
    /// `.etlgen/lock.toml`.
    pub lock: LockFile,
}

impl Repo {
    /// Opens the generated repository at `root`: it must hold an answers file
    /// and a lock file that parse.
    pub fn open(root: &Path) -> Result<Repo> {
        let answers_path = root.join(ANSWERS_PATH);
        if !answers_path.is_file() {
            bail!(
                "{} is not an etlgen repository: it has no {ANSWERS_PATH} \
                 (run etlgen in the repository's root, pass --path, or create one with `etlgen new`)",
                root.display()
            );
        }
        let text = fs_err::read_to_string(&answers_path)?;
        let raw = AnswersFile::parse(&text).map_err(|e| {
            anyhow!(
                "{ANSWERS_PATH} is not valid{}: {}; fix it, or restore it with \
                 `git checkout -- {ANSWERS_PATH}`",
                e.at,
                e.message
            )
        })?;
        let lock_path = root.join(LOCK_PATH);
        if !lock_path.is_file() {
            bail!(
                "{} has no {LOCK_PATH}, the record of what etlgen rendered; restore it with \
                 `git checkout -- {LOCK_PATH}`",
                root.display()
            );
        }
        let lock = LockFile::parse(&fs_err::read_to_string(&lock_path)?)?;
        let git = git2::Repository::open(root).ok();
        Ok(Repo {
            root: root.to_path_buf(),
            git,
            raw,
            lock,
        })
    }

    /// The answers, checked against the catalog.
    pub fn answers(&self) -> Result<Answers> {
        resolve(&self.raw, ANSWERS_PATH)
    }

    /// The git repository, which changing the repository needs.
    pub fn git(&self) -> Result<&git2::Repository> {
        self.git.as_ref().ok_or_else(|| {
            anyhow!(
                "{} is not a git repository; etlgen merges against its history \
                 (run `git init && git add -A && git commit` there first)",
                self.root.display()
            )
        })
    }

    /// Refuses unless tracked files are as committed.
    pub fn ensure_clean(&self) -> Result<()> {
        let dirty = git::dirty_paths(self.git()?)?;
        if !dirty.is_empty() {
            let shown: Vec<&str> = dirty.iter().take(10).map(String::as_str).collect();
            bail!(
                "the working tree has uncommitted changes ({}{}); commit or stash them first, \
                 so etlgen's changes can be told from yours",
                shown.join(", "),
                if dirty.len() > 10 { ", …" } else { "" }
            );
        }
        Ok(())
    }

    /// Refuses answers for another client and a render by a newer etlgen.
    pub fn ensure_compatible(&self, answers: &Answers) -> Result<()> {
        if answers.client.as_str() != self.lock.client {
            bail!(
                "{ANSWERS_PATH} names client {:?} but this repository was rendered for {:?} \
                 ({LOCK_PATH}); it is not the repository these answers describe",
                answers.client.as_str(),
                self.lock.client
            );
        }
        let recorded = semver::Version::parse(&self.lock.etlgen_version)
            .with_context(|| format!("{LOCK_PATH}: etlgen_version is not a version"))?;
        let running = semver::Version::parse(ETLGEN_VERSION).expect("etlgen's own version");
        if recorded > running {
            bail!(
                "this repository was rendered by etlgen {recorded}, newer than this etlgen \
                 {running}; install etlgen {recorded} or later rather than downgrade it"
            );
        }
        Ok(())
    }

    /// The last render: the pristine ref, else a re-render of the answers
    /// when it is provably the same (same etlgen version, and every file
    /// hashes as the lock records).
    pub fn base(&self, templates: &Templates) -> Result<Tree> {
        if let Some(repo) = &self.git
            && let Some(tree) = git::pristine(repo)?
        {
            return Ok(tree);
        }
        let missing = format!(
            "{} is missing (a clone does not fetch it: `git fetch origin '{}:{}'`)",
            git::PRISTINE_REF,
            git::PRISTINE_REF,
            git::PRISTINE_REF
        );
        if self.lock.etlgen_version != ETLGEN_VERSION {
            bail!(
                "{missing}, and this etlgen ({ETLGEN_VERSION}) cannot re-render what etlgen {} \
                 rendered; fetch the ref, or run etlgen {} once",
                self.lock.etlgen_version,
                self.lock.etlgen_version
            );
        }
        let (_, tree) = render_answers(&self.answers()?, templates)?;
        if !self.lock.describes(&tree) {
            bail!(
                "{missing}, and re-rendering {ANSWERS_PATH} does not give the files {LOCK_PATH} \
                 records (was the answers file edited by hand?); fetch the ref, or restore both files \
                 from git"
            );
        }
        Ok(tree)
    }

    /// Re-renders for `answers` and merges the result into the committed
    /// repository. Writes nothing.
    pub fn prepare(&self, answers: &Answers, templates: &Templates) -> Result<Prepared> {
        self.ensure_compatible(answers)?;
        let base = self.base(templates)?;
        let ours = git::head_tree(self.git()?)?;
        let (plan, theirs) = render_answers(answers, templates)?;
        let mut owners: BTreeMap<String, Owner> = self
            .lock
            .files
            .iter()
            .map(|(p, f)| (p.clone(), f.owner))
            .collect();
        owners.extend(plan.files.iter().map(|f| (f.path.clone(), f.owner)));
        let mut merged = merge(&base, &ours, &theirs, &owners);
        let mut notes = Vec::new();
        recompose_lockfile(&ours, &mut merged, &mut notes);
        Ok(Prepared {
            ours,
            theirs,
            merged,
            notes,
        })
    }

    /// Applies a prepared merge: writes it, and commits it with `message`
    /// when it is clean; records the new render either way. Any failure
    /// before the commit leaves the repository as it was.
    pub fn apply(&self, prepared: &Prepared, message: &str) -> Result<Option<git2::Oid>> {
        let repo = self.git()?;
        let applied = write::apply_changes(&self.root, &prepared.merged.changes)?;
        let commit = if prepared.merged.conflicts.is_empty() {
            let paths: Vec<&str> = prepared.merged.changes.keys().map(String::as_str).collect();
            match git::commit_paths(repo, &paths, message) {
                Ok(id) => Some(id),
                Err(e) => {
                    applied.undo()?;
                    return Err(e.context("committing the merge; the repository is as it was"));
                }
            }
        } else {
            drop(applied);
            None
        };
        git::record_pristine(repo, &prepared.theirs, message)?;
        Ok(commit)
    }
}

/// A merge ready to apply.
pub struct Prepared {
    /// The committed files.
    pub ours: Tree,
    /// The new render.
    pub theirs: Tree,
    /// What the merge does.
    pub merged: Merge,
    /// Things the user should know that are not conflicts.
    pub notes: Vec<String>,
}

impl Prepared {
    /// A unified diff of every change, as `--dry-run` prints it.
    pub fn diff(&self) -> String {
        let mut out = String::new();
        for (path, change) in &self.merged.changes {
            let old = self
                .ours
                .get(path)
                .map(|b| String::from_utf8_lossy(b).into_owned());
            let new = match change {
                Change::Write(b) => Some(String::from_utf8_lossy(b).into_owned()),
                Change::Delete => None,
            };
            out.push_str(&file_diff(path, old.as_deref(), new.as_deref()));
        }
        out
    }
}

/// A unified diff of one file, git style.
pub fn file_diff(path: &str, old: Option<&str>, new: Option<&str>) -> String {
    let (from, to) = (
        if old.is_some() {
            format!("a/{path}")
        } else {
            "/dev/null".into()
        },
        if new.is_some() {
            format!("b/{path}")
        } else {
            "/dev/null".into()
        },
    );
    let patch = diffy::create_patch(old.unwrap_or(""), new.unwrap_or(""));
    let body = patch.to_string();
    // diffy's header names the files "original" and "modified".
    let hunks = body
        .split_once("+++ modified\n")
        .map_or(body.as_str(), |(_, h)| h);
    format!("--- {from}\n+++ {to}\n{hunks}")
}

/// Checks `raw` against the catalog; errors name `what` (the file).
pub fn resolve(raw: &AnswersFile, what: &str) -> Result<Answers> {
    Answers::resolve(raw, Catalog::builtin()).map_err(|e| anyhow!("{what}: {e}"))
}

/// Plans and renders `answers` with `templates`.
pub fn render_answers(answers: &Answers, templates: &Templates) -> Result<(Plan, Tree)> {
    let plan = Plan::with_templates(answers.clone(), templates, Catalog::builtin())?;
    let tree = render_with(&plan, templates)?;
    Ok((plan, tree))
}

/// `Cargo.lock` is composed from the merged manifests, so a dependency the
/// user added to a crate is kept; when it cannot be (a dependency etlgen
/// does not pin), the committed lock stays and Cargo updates it.
fn recompose_lockfile(ours: &Tree, merged: &mut Merge, notes: &mut Vec<String>) {
    const CARGO_LOCK: &str = "Cargo.lock";
    let mut result = ours.clone();
    for (path, change) in &merged.changes {
        match change {
            Change::Write(bytes) => result.insert(path.clone(), bytes.clone()),
            Change::Delete => result.remove(path),
        };
    }
    match lockfile::compose(&result) {
        Ok(lock) if ours.get(CARGO_LOCK).map(Vec::as_slice) == Some(lock.as_bytes()) => {
            merged.changes.remove(CARGO_LOCK);
        }
        Ok(lock) => {
            merged
                .changes
                .insert(CARGO_LOCK.into(), Change::Write(lock.into_bytes()));
        }
        Err(e) => {
            merged.changes.remove(CARGO_LOCK);
            notes.push(format!(
                "Cargo.lock was kept as committed ({e}); `cargo build` brings it up to date"
            ));
        }
    }
}
