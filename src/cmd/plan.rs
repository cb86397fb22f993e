//! `etlgen plan`: what a pipeline amounts to, for the people scoping it.
//!
//! Reads the answers (a file, or the generated repository's own) and prints
//! the scoping document of [`crate::scope`] as Markdown or JSON. It writes
//! nothing, so it is safe to run anywhere, before or after any code exists.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::answers::{ANSWERS_PATH, Answers};
use crate::catalog::Catalog;
use crate::scope::{self, Scope};

/// Output format of `plan`.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum Format {
    /// A Markdown page with a Mermaid diagram.
    #[default]
    Markdown,
    /// The same content as JSON (field reference: docs/plan.md).
    Json,
}

/// Arguments of `etlgen plan`.
#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Plan from this answers file (the format of `.etlgen/answers.toml`,
    /// see docs/answers.md) instead of a generated repository's.
    #[arg(long, value_name = "FILE", conflicts_with = "path")]
    pub answers: Option<PathBuf>,

    /// The generated repository whose `.etlgen/answers.toml` to plan
    /// (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,

    /// Records per run assumed when counting Qualtrics API calls.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub records: u64,
}

/// Prints the plan of the answers `args` point at.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<ExitCode> {
    let file = match &args.answers {
        Some(file) => file.clone(),
        None => {
            let dir = args.path.clone().unwrap_or_else(|| PathBuf::from("."));
            let file = dir.join(ANSWERS_PATH);
            if !file.is_file() {
                bail!(
                    "{} is not an etlgen repository: it has no {}; run etlgen plan in a \
                     generated repository, point --path at one, or give --answers FILE",
                    dir.display(),
                    file.display()
                );
            }
            file
        }
    };
    let raw = scope::read_answers(&file)?;
    if raw.client.is_none() {
        bail!(
            "the answers file {} has no `client`; add one, for example client = \"client-x\" \
             (see docs/answers.md)",
            file.display()
        );
    }
    let catalog = Catalog::builtin();
    let answers = Answers::resolve(&raw, catalog)
        .with_context(|| format!("invalid answers in {}", file.display()))?;
    let scope = Scope::new(&answers, catalog, args.records)?;
    match args.format {
        Format::Markdown => out.write_all(scope::markdown::render(&scope).as_bytes())?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &scope)?;
            writeln!(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
