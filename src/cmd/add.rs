//! `etlgen add`: add a step to an existing repository. The answers gain the
//! step, and the new render is merged in as `update` merges: the new crate,
//! its Terraform wiring, CI, docs and diagram appear, and edits survive.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::answers::StepEntry;
use crate::catalog::Catalog;
use crate::lifecycle::repo::{Repo, resolve};
use crate::templates::Templates;

/// Arguments of `etlgen add`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kind of step to add (see `etlgen list`).
    pub kind: String,

    /// The step's name (default: the kind); needed when the kind is there already.
    #[arg(long)]
    pub name: Option<String>,

    /// A setting of the new step, `KEY=VALUE` (for example batch_size=5); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,

    /// The generated repository (default: the current directory).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub path: PathBuf,

    /// Print the diff that would be applied; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `add`.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<ExitCode> {
    let catalog = Catalog::builtin();
    if !catalog.kind(&args.kind).is_some_and(|k| k.selectable) {
        bail!(
            "unknown service {:?}; expected one of: {}",
            args.kind,
            catalog.selectable_ids()
        );
    }
    let repo = Repo::open(&args.path)?;
    repo.ensure_clean()?;
    let mut raw = repo.raw.clone();
    let mut settings = toml::Table::new();
    for set in &args.set {
        let (key, value) = set
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "invalid --set {set:?}: expected KEY=VALUE, for example batch_size=5"
                )
            })?;
        settings.insert(
            key.to_string(),
            super::new::setting_value(catalog, &args.kind, key, value),
        );
    }
    let name = args.name.clone().unwrap_or_else(|| args.kind.clone());
    let answers = repo.answers()?;
    if answers.step(&name).is_some() {
        bail!(
            "a step named {name:?} exists already; give the new {} another name with --name",
            args.kind
        );
    }
    raw.steps.get_or_insert_with(Vec::new).push(StepEntry {
        name: Some(name.clone()),
        kind: args.kind.clone(),
        settings,
    });
    let answers = resolve(&raw, &format!("adding {name}"))?;
    let prepared = repo.prepare(&answers, Templates::builtin())?;
    let message = format!(
        "Add the {name} step ({})\n\nAdded with etlgen add: its crate, queue, DLQ, Terraform \
         wiring and docs.",
        args.kind
    );
    super::update::finish(&repo, &prepared, args.dry_run, &message, out)
}
