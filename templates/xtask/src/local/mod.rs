//! `cargo xtask local`: the pipeline on loopback, for engineers and tests.
//!
//! - `up` builds and packages the Lambdas for this machine, starts an AWS emulator (moto)
//!   unless `--endpoint` names one, applies `infra/envs/local` to it, sets the secrets, and
//!   starts `serve` in the background: the mock Qualtrics API (unless `--qualtrics` names
//!   one) and the Lambda emulator, which polls every queue and invokes each step's real
//!   `bootstrap`. For an SFTP source it also starts OpenSSH's sshd on loopback, serving
//!   `.local/sftp/inbox` to the poller.
//! - `run --input FILE` drops the file where the pipeline's source picks it up, waits until
//!   every queue is drained and every invocation has ended, and prints one JSON summary.
//! - `wait` waits until every queue is drained (after a redrive, replay or backfill).
//! - `status` prints what the emulator has done and every queue's depth; `qualtrics`, what
//!   the mock Qualtrics API has recorded.
//! - `faults FILE` changes the mock Qualtrics API's faults while the stack is up.
//! - `down` stops everything `up` started.
//!
//! Everything lives in `.local/` (state, packages, logs). See docs/local.md.

mod outputs;
mod processes;
mod run;
mod serve;
mod sftp;
mod stack;

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

pub use outputs::{Outputs, StepOutputs};
pub use stack::State;

/// `cargo xtask local …`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build, deploy to the AWS emulator, and start the mock Qualtrics API and the Lambda
    /// emulator in the background.
    Up(stack::Up),
    /// Drop a file at the pipeline's source and wait for the run to end; prints a JSON summary.
    Run(run::RunArgs),
    /// Wait until every queue is drained (after a redrive, replay or backfill); prints what
    /// each step did meanwhile.
    Wait(run::WaitArgs),
    /// What the Lambda emulator has done, and every queue's depth, as JSON.
    Status,
    /// Everything the mock Qualtrics API has recorded (lists, contacts, distributions,
    /// responses), as JSON.
    Qualtrics,
    /// Replace the mock Qualtrics API's faults (a TOML file; see docs/local.md).
    Faults {
        /// The faults file; an empty file clears every fault.
        file: PathBuf,
    },
    /// Stop everything `up` started.
    Down,
    /// Run the mock Qualtrics API and the Lambda emulator in the foreground (`up` starts
    /// this in the background).
    #[command(hide = true)]
    Serve,
}

/// Runs a `local` command.
pub fn run(args: Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match args.command {
            Command::Up(up) => stack::up(up).await,
            Command::Run(args) => run::run(args).await,
            Command::Wait(args) => run::wait_quiet(args).await,
            Command::Status => stack::status().await,
            Command::Qualtrics => stack::qualtrics().await,
            Command::Faults { file } => stack::faults(&file).await,
            Command::Down => stack::down().await,
            Command::Serve => serve::serve().await,
        }
    })
}
