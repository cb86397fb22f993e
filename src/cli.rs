//! Command-line arguments. Doc comments here are the `--help` text.

use clap::{Parser, Subcommand};

/// Generate and maintain per-client Qualtrics ETL automation repositories:
/// Rust Lambda steps on SQS, Terraform, CI and release packaging.
#[derive(Debug, Parser)]
#[command(name = "etlgen", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// etlgen's subcommands; each lives in its own module under `cmd/`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a new client repository, asking for whatever flags leave open.
    New(Box<crate::cmd::new::Args>),
    /// Show the service catalog: sources, step kinds, defaults and hook points.
    List(crate::cmd::list::Args),
    /// Describe a pipeline for scoping: steps, hook points, AWS resources and
    /// Qualtrics calls per run, from an answers file or a generated repository.
    Plan(crate::cmd::plan::Args),
    /// Add a step to a generated repository, merging it in with your edits kept.
    Add(crate::cmd::add::Args),
    /// Remove a step from a generated repository, with exactly its files.
    Remove(crate::cmd::remove::Args),
    /// Re-render a generated repository with this etlgen and 3-way merge it.
    Update(crate::cmd::update::Args),
    /// Fail when etlgen-owned files differ from what etlgen rendered (for CI).
    Check(crate::cmd::check::Args),
}
