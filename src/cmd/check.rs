//! `etlgen check`: for CI. Fails when an etlgen-owned file (the vendored
//! framework, `main.rs` of each step, xtask, the lock file, `.etlgen/`)
//! differs from what etlgen rendered, naming each with a short diff, or when
//! the answers changed without an `etlgen update`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::lifecycle::check::check;
use crate::lifecycle::repo::Repo;
use crate::templates::Templates;

/// Arguments of `etlgen check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The generated repository (default: the current directory).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub path: PathBuf,
}

/// Runs `check`: exit 0 when clean, 1 on drift.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<ExitCode> {
    let repo = Repo::open(&args.path)?;
    let report = check(&repo, Templates::builtin())?;
    for note in &report.notes {
        writeln!(out, "note: {note}")?;
    }
    if report.answers_changed {
        writeln!(
            out,
            "drift: .etlgen/answers.toml no longer renders what .etlgen/lock.toml records; \
             run `etlgen update` to apply it"
        )?;
    }
    for (path, diff) in &report.drifted {
        writeln!(
            out,
            "drift: {path} was edited by hand; etlgen owns it\n{diff}\n"
        )?;
    }
    if report.is_clean() {
        writeln!(
            out,
            "OK: every etlgen-owned file is as rendered ({} files).",
            repo.lock.files.len()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{} drifted. Move client code into hooks.rs or other files you own, then restore the \
         files with `git checkout`, or run `etlgen update` to re-render them.",
        match report.drifted.len() {
            1 => "1 file".to_string(),
            n => format!("{n} files"),
        }
    )?;
    Ok(ExitCode::FAILURE)
}
