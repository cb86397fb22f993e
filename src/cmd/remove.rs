//! `etlgen remove`: the inverse of `add`. The step leaves the answers, and
//! the merge deletes exactly its files; it refuses when another step needs
//! what the named one produces.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::lifecycle::repo::{Repo, resolve};
use crate::templates::Templates;

/// Arguments of `etlgen remove`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The name of the step to remove.
    pub name: String,

    /// The generated repository (default: the current directory).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub path: PathBuf,

    /// Print the diff that would be applied; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `remove`.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<ExitCode> {
    let repo = Repo::open(&args.path)?;
    repo.ensure_clean()?;
    let current = repo.answers()?;
    let Some(step) = current.step(&args.name) else {
        let names: Vec<&str> = current.steps.iter().map(|s| s.name.as_str()).collect();
        bail!(
            "no step named {:?}; the steps are: {}",
            args.name,
            names.join(", ")
        );
    };
    if step.implied {
        bail!(
            "{} comes with the {} source and cannot be removed on its own; change the source instead",
            args.name,
            current.source
        );
    }
    let mut raw = repo.raw.clone();
    if let Some(steps) = &mut raw.steps {
        steps.retain(|e| e.name.as_deref().unwrap_or(&e.kind) != args.name);
    }
    let answers = resolve(
        &raw,
        &format!(
            "cannot remove {} (the pipeline without it is not valid)",
            args.name
        ),
    )?;
    let prepared = repo.prepare(&answers, Templates::builtin())?;
    let message = format!(
        "Remove the {} step\n\nRemoved with etlgen remove: its crate, queue, DLQ, Terraform \
         wiring and docs.",
        args.name
    );
    super::update::finish(&repo, &prepared, args.dry_run, &message, out)
}
