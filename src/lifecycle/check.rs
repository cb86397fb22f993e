//! `check`'s comparison: the etlgen-owned files of a working tree against
//! the record of the last render, for CI to fail on hand edits that the
//! next `update` would overwrite.

use anyhow::Result;

use super::lock::{LOCK_PATH, sha256};
use super::repo::{Repo, file_diff, render_answers};
use crate::lockfile;
use crate::plan::ETLGEN_VERSION;
use crate::render::Tree;
use crate::templates::{Owner, Templates};

/// How a checked repository differs from what etlgen rendered.
#[derive(Debug, Default)]
pub struct Report {
    /// Owned files that differ from the render, each with a short diff.
    pub drifted: Vec<(String, String)>,
    /// The answers no longer render what the lock records.
    pub answers_changed: bool,
    /// Things to know that are not drift (versions, checks not made).
    pub notes: Vec<String>,
}

impl Report {
    /// Whether the repository is as etlgen rendered it.
    pub fn is_clean(&self) -> bool {
        self.drifted.is_empty() && !self.answers_changed
    }
}

/// Most lines of diff shown per drifted file.
const DIFF_LINES: usize = 20;

/// Compares the working tree of `repo` with its last render.
pub fn check(repo: &Repo, templates: &Templates) -> Result<Report> {
    let mut report = Report::default();
    let read = |path: &str| fs_err::read(repo.root.join(path)).ok();
    let drifted: Vec<(&String, Option<Vec<u8>>)> = repo
        .lock
        .files
        .iter()
        .filter(|(path, file)| file.owner == Owner::Owned && *path != "Cargo.lock")
        .map(|(path, file)| (path, file, read(path)))
        .filter(|(_, file, current)| current.as_deref().map(sha256).as_ref() != Some(&file.sha256))
        .map(|(path, _, current)| (path, current))
        .collect();
    // The render to diff against, made only when something drifted.
    let base = if drifted.is_empty() {
        None
    } else {
        repo.base(templates).ok()
    };
    for (path, current) in drifted {
        let old = base.as_ref().and_then(|b| b.get(path));
        report
            .drifted
            .push((path.clone(), short_diff(path, old, current.as_deref())));
    }
    check_cargo_lock(repo, &mut report);
    let running = semver::Version::parse(ETLGEN_VERSION).expect("etlgen's own version");
    match semver::Version::parse(&repo.lock.etlgen_version) {
        Ok(recorded) if recorded < running => report.notes.push(format!(
            "rendered by etlgen {recorded}; this is etlgen {running}: `etlgen update` brings the \
             newer templates and framework"
        )),
        Ok(recorded) if recorded > running => report.notes.push(format!(
            "rendered by etlgen {recorded}, newer than this etlgen {running}: check with etlgen \
             {recorded} or later"
        )),
        Ok(_) => {
            let (_, tree) = render_answers(&repo.answers()?, templates)?;
            report.answers_changed = !repo.lock.describes(&tree);
        }
        Err(_) => report.notes.push(format!(
            "{LOCK_PATH}: etlgen_version {:?} is not a version",
            repo.lock.etlgen_version
        )),
    }
    Ok(report)
}

/// `Cargo.lock` must be what the workspace's manifests compose to.
fn check_cargo_lock(repo: &Repo, report: &mut Report) {
    let mut manifests = Tree::new();
    for path in repo.lock.files.keys().filter(|p| p.ends_with("Cargo.toml")) {
        if let Ok(bytes) = fs_err::read(repo.root.join(path)) {
            manifests.insert(path.clone(), bytes);
        }
    }
    let current = fs_err::read(repo.root.join("Cargo.lock")).ok();
    match lockfile::compose(&manifests) {
        Ok(lock) if current.as_deref() == Some(lock.as_bytes()) => {}
        Ok(lock) => report.drifted.push((
            "Cargo.lock".into(),
            short_diff("Cargo.lock", Some(&lock.into_bytes()), current.as_deref()),
        )),
        Err(e) => report.notes.push(format!(
            "Cargo.lock not checked: the manifests use what etlgen does not pin ({e})"
        )),
    }
}

/// The first lines of a diff from the render to the working file.
fn short_diff(path: &str, rendered: Option<&Vec<u8>>, current: Option<&[u8]>) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let Some(current) = current else {
        return "deleted".into();
    };
    let Some(rendered) = rendered else {
        return "differs from the render (the render itself is not at hand to diff)".into();
    };
    let diff = file_diff(path, Some(&text(rendered)), Some(&text(current)));
    let lines: Vec<&str> = diff.lines().collect();
    let mut out = lines
        .iter()
        .take(DIFF_LINES)
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    if lines.len() > DIFF_LINES {
        out.push_str(&format!("\n… {} more lines", lines.len() - DIFF_LINES));
    }
    out
}
