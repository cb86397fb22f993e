//! `etlgen new`: generate a client repository.
//!
//! Answers are layered: the `--answers` file, then flags, then (on a
//! terminal, without `--yes`) prompts for whatever is still open; the catalog
//! defaults fill the rest. Everything is checked before anything is rendered,
//! and the rendered tree is written in one step or not at all.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::answers::{Answers, AnswersFile, StepEntry};
use crate::catalog::Catalog;
use crate::interview::interview;
use crate::plan::Plan;
use crate::prompt::Prompter;
use crate::{git, render, write};

/// Arguments of `etlgen new`.
#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Client name: lowercase letters, digits and hyphens, starting with a
    /// letter (for example client-x). Names the repository and every AWS
    /// resource.
    pub client: Option<String>,

    /// Services, comma-separated, each `kind` or `kind:name`; a kind may
    /// repeat under different names (validator,contact-importer,
    /// distribution-scheduler:invite,distribution-scheduler:reminder).
    /// See `etlgen list`.
    #[arg(long, value_delimiter = ',', value_name = "KIND[:NAME]")]
    pub services: Vec<String>,

    /// Where the client's data comes from: s3, sftp or http.
    #[arg(long)]
    pub source: Option<String>,

    /// AWS region to deploy to (for example eu-west-1).
    #[arg(long)]
    pub region: Option<String>,

    /// Qualtrics datacenter id (for example iad1, fra1).
    #[arg(long)]
    pub datacenter: Option<String>,

    /// Deployment environment; repeat or comma-separate (default: dev,prod).
    #[arg(long = "env", value_delimiter = ',', value_name = "ENV")]
    pub environments: Vec<String>,

    /// Run on an EventBridge schedule, `cron(...)` or `rate(...)`, in UTC.
    #[arg(long, conflicts_with = "event_driven")]
    pub schedule: Option<String>,

    /// Run when input arrives, with no schedule (the default).
    #[arg(long)]
    pub event_driven: bool,

    /// Override a step setting, `STEP.KEY=VALUE` (for example
    /// invite.batch_size=5); repeatable. Without --services the default
    /// services are used.
    #[arg(long = "set", value_name = "STEP.KEY=VALUE")]
    pub set: Vec<String>,

    /// Read answers from a TOML file (the format of `.etlgen/answers.toml`);
    /// flags override it.
    #[arg(long, value_name = "FILE")]
    pub answers: Option<PathBuf>,

    /// Accept defaults for everything not given; never prompt.
    #[arg(short, long)]
    pub yes: bool,

    /// Directory to create (default: ./<client>). It must not exist or be empty.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Print the files and a summary; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Do not initialise a git repository.
    #[arg(long)]
    pub no_git: bool,
}

/// Runs `new`. `prompter` is `Some` when the session is interactive.
pub fn run(
    args: &Args,
    prompter: Option<&mut dyn Prompter>,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    let catalog = Catalog::builtin();
    let raw = layered_answers(args, catalog)?;
    let answers = match prompter {
        Some(p) => interview(raw, p, catalog)?,
        None => Answers::resolve(&raw, catalog)?,
    };
    let target = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(answers.client.as_str()));
    // Fail on an occupied target before rendering, and again (atomically)
    // when writing.
    if !args.dry_run {
        write::check_target(&target)?;
    }
    let client = answers.client.clone();
    let plan = Plan::new(answers)?;
    let tree = render::render(&plan)?;
    let summary = super::summary(&plan.answers, catalog);

    if args.dry_run {
        writeln!(
            out,
            "Would create {} with {} files:",
            target.display(),
            tree.len()
        )?;
        for file in &plan.files {
            let size = tree.get(&file.path).map_or(0, Vec::len);
            writeln!(
                out,
                "  {:<7} {:>8}  {}",
                file.owner.as_str(),
                size,
                file.path
            )?;
        }
        writeln!(out, "\n{summary}\nDry run: nothing was written.")?;
        return Ok(ExitCode::SUCCESS);
    }

    let message = format!(
        "Generate {client} with etlgen {}\n\nRendered from .etlgen/answers.toml; etlgen update re-renders it.",
        crate::plan::ETLGEN_VERSION
    );
    let mut commit = None;
    write::create_new(&target, &tree, |staged| {
        if !args.no_git {
            commit = Some(git::init_and_commit(staged, &message, &tree)?);
        }
        Ok(())
    })?;
    let git_note = match commit {
        Some(id) => format!(", initial commit {}", &id.to_string()[..10]),
        None => String::new(),
    };
    writeln!(
        out,
        "Created {} ({} files{git_note}).\n\n{summary}\nNext:\n  cd {}\n  cargo test\n  \
         # then write the client's code in lambdas/*/src/hooks.rs",
        target.display(),
        tree.len(),
        target.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The answers file (if any) with the flags laid over it.
fn layered_answers(args: &Args, catalog: &Catalog) -> Result<AnswersFile> {
    let mut raw = match &args.answers {
        Some(path) => read_answers_file(path)?,
        None => AnswersFile::default(),
    };
    if let Some(client) = &args.client {
        raw.client = Some(client.clone());
    }
    for (flag, value, field) in [
        ("--source", &args.source, &mut raw.source),
        ("--region", &args.region, &mut raw.region),
        ("--datacenter", &args.datacenter, &mut raw.datacenter),
    ] {
        if let Some(v) = value {
            if v.trim().is_empty() {
                bail!("{flag} is empty; give a value or leave the flag out");
            }
            *field = Some(v.clone());
        }
    }
    if !args.environments.is_empty() {
        raw.environments = Some(args.environments.clone());
    }
    if let Some(s) = &args.schedule {
        raw.schedule = Some(s.clone());
    } else if args.event_driven {
        raw.schedule = Some(String::new());
    }
    if !args.services.is_empty() {
        raw.steps = Some(parse_services(&args.services, catalog)?);
    }
    for set in &args.set {
        apply_set(&mut raw, set, catalog)?;
    }
    Ok(raw)
}

fn read_answers_file(path: &Path) -> Result<AnswersFile> {
    let text = fs_err::read_to_string(path).context("reading --answers")?;
    AnswersFile::parse(&text).map_err(|e| {
        anyhow::anyhow!(
            "invalid --answers file {}{}: {}; its keys are those of .etlgen/answers.toml \
             (see docs/answers.md)",
            path.display(),
            e.at,
            e.message
        )
    })
}

/// `kind` or `kind:name` entries of `--services`.
fn parse_services(items: &[String], catalog: &Catalog) -> Result<Vec<StepEntry>> {
    items
        .iter()
        .map(|item| {
            let (kind, name) = match item.split_once(':') {
                Some((k, n)) => (k.trim(), Some(n.trim().to_string())),
                None => (item.trim(), None),
            };
            if !catalog.kind(kind).is_some_and(|k| k.selectable) {
                bail!(
                    "invalid --services entry {item:?}: unknown service {kind:?}; expected one of: {}",
                    catalog.selectable_ids()
                );
            }
            Ok(StepEntry { name, kind: kind.to_string(), settings: toml::Table::new() })
        })
        .collect()
}

/// Applies one `--set STEP.KEY=VALUE`. The value is read as TOML when it
/// parses (5, true) and as a string otherwise (CG_123).
fn apply_set(raw: &mut AnswersFile, set: &str, catalog: &Catalog) -> Result<()> {
    let usage = || {
        format!("invalid --set {set:?}: expected STEP.KEY=VALUE, for example invite.batch_size=5")
    };
    let (lhs, value) = set
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!(usage()))?;
    let (step, key) = lhs
        .split_once('.')
        .ok_or_else(|| anyhow::anyhow!(usage()))?;
    if step.is_empty() || key.is_empty() {
        bail!(usage());
    }
    let text = value;
    let source = raw
        .source
        .clone()
        .unwrap_or_else(|| catalog.defaults.source.clone());
    let source_step = catalog.source(&source).and_then(|s| s.step.clone());
    let steps = raw.steps.get_or_insert_with(|| catalog.default_steps());
    let position = steps
        .iter()
        .position(|e| e.name.as_deref().unwrap_or(&e.kind) == step);
    let entry = match (position, source_step) {
        (Some(i), _) => &mut steps[i],
        (None, Some(kind)) if kind == step => {
            steps.push(StepEntry {
                name: None,
                kind,
                settings: toml::Table::new(),
            });
            steps.last_mut().expect("just pushed")
        }
        (None, _) => {
            let names: Vec<&str> = steps
                .iter()
                .map(|e| e.name.as_deref().unwrap_or(&e.kind))
                .collect();
            bail!(
                "invalid --set {set:?}: no step named {step:?}; the steps are: {}",
                names.join(", ")
            );
        }
    };
    let value = setting_value(catalog, &entry.kind, key, text);
    entry.settings.insert(key.to_string(), value);
    Ok(())
}

/// The value of a `--set KEY=VALUE` for a step of `kind`. A string setting
/// takes the text as written (`subject=2024` is a subject); anything else is
/// read as a TOML value (5, true, [".csv"]) when it parses.
pub(crate) fn setting_value(catalog: &Catalog, kind: &str, key: &str, text: &str) -> toml::Value {
    let string_param = catalog
        .kind(kind)
        .and_then(|k| k.param(key))
        .is_some_and(|p| p.default.as_ref().is_none_or(|d| d.is_str()));
    match toml::from_str::<toml::Table>(&format!("v = {text}")) {
        Ok(mut t) if !string_param => t.remove("v").unwrap_or_else(|| text.into()),
        _ => toml::Value::String(text.to_string()),
    }
}
