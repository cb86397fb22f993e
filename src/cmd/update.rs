//! `etlgen update`: bring a repository up to the running etlgen's templates
//! and framework, keeping every edit its users made.
//!
//! The last render is the merge base, the committed repository is ours and a
//! fresh render of the same answers is theirs (see `lifecycle::merge`). A
//! clean merge is one commit; conflicts are left marked in the working tree.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::git::PRISTINE_REF;
use crate::lifecycle::repo::{Prepared, Repo};
use crate::plan::ETLGEN_VERSION;
use crate::templates::Templates;

/// Arguments of `etlgen update`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The generated repository (default: the current directory).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub path: PathBuf,

    /// Print the diff that would be applied; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `update` with the built-in templates.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<ExitCode> {
    run_with(args, Templates::builtin(), out)
}

/// Runs `update` with `templates` (tests simulate a template change so).
pub fn run_with(args: &Args, templates: &Templates, out: &mut dyn Write) -> Result<ExitCode> {
    let repo = Repo::open(&args.path)?;
    repo.ensure_clean()?;
    let answers = repo.answers()?;
    let prepared = repo.prepare(&answers, templates)?;
    let message = format!(
        "Update to etlgen {ETLGEN_VERSION}\n\nRe-rendered .etlgen/answers.toml (last rendered by etlgen {}) \
         and merged it with etlgen update.",
        repo.lock.etlgen_version
    );
    finish(&repo, &prepared, args.dry_run, &message, out)
}

/// Prints or applies a prepared merge, and says what happened; shared by
/// `update`, `add` and `remove`.
pub fn finish(
    repo: &Repo,
    prepared: &Prepared,
    dry_run: bool,
    message: &str,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    let merged = &prepared.merged;
    for note in &prepared.notes {
        writeln!(out, "note: {note}")?;
    }
    for path in &merged.kept_deleted {
        writeln!(
            out,
            "kept deleted: {path} (you deleted it; the new render changed it)"
        )?;
    }
    for path in &merged.removed_edited {
        writeln!(
            out,
            "removed with its step: {path} (your edits stay in git history)"
        )?;
    }
    if merged.is_empty() {
        writeln!(out, "Already up to date: nothing to change.")?;
        return Ok(ExitCode::SUCCESS);
    }
    if dry_run {
        write!(out, "{}", prepared.diff())?;
        writeln!(
            out,
            "Dry run: {} files would change; nothing was written.",
            merged.changes.len()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let commit = repo.apply(prepared, message)?;
    for (path, change) in &merged.changes {
        let what = match change {
            crate::lifecycle::merge::Change::Write(_) if prepared.ours.contains_key(path) => {
                "updated"
            }
            crate::lifecycle::merge::Change::Write(_) => "created",
            crate::lifecycle::merge::Change::Delete => "deleted",
        };
        writeln!(out, "  {what:<8} {path}")?;
    }
    match commit {
        Some(id) => {
            writeln!(
                out,
                "Committed {} ({} files).",
                &id.to_string()[..10],
                merged.changes.len()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            writeln!(
                out,
                "\nConflicts (resolve the <<<<<<< markers, then commit):"
            )?;
            for path in &merged.conflicts {
                writeln!(out, "  {path}")?;
            }
            writeln!(
                out,
                "Nothing was committed. To abandon the update instead: `git checkout -- .`, \
                 delete the files listed as created, and \
                 `git update-ref {PRISTINE_REF} {PRISTINE_REF}^` (the previous render)."
            )?;
            Ok(ExitCode::FAILURE)
        }
    }
}
