//! Tasks of this workspace, run as `cargo xtask <task>` (the alias is in .cargo/config.toml).
//!
//! - `package`: builds every Lambda of `lambdas/` for Linux and zips each as `bootstrap`
//!   into `dist/`, with `SHA256SUMS` and `manifest.json` ([`package`]).
//! - `local up|run|wait|status|qualtrics|faults|down`: the whole pipeline on loopback, against
//!   an AWS emulator and a mock Qualtrics API, with each step's real binary ([`local`]; see
//!   docs/local.md).
//! - `redrive`, `replay`, `backfill`, `runs`: on-call operations on any environment
//!   ([`ops`]; see RUNBOOK.md).
//!
//! Owned by etlgen: `etlgen update` refreshes this crate.

mod local;
mod ops;
mod package;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// What `cargo xtask` can do.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "Tasks of this workspace")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Build every Lambda in release mode, zip each as `bootstrap`, write SHA256SUMS and
    /// manifest.json into dist/.
    Package(package::Package),
    /// Run the pipeline locally: `up`, `run --input FILE`, `wait`, `status`, `qualtrics`,
    /// `faults FILE`, `down`.
    Local(local::Args),
    /// Move a step's dead-letter messages back to its queue.
    Redrive(ops::Redrive),
    /// Re-enqueue a run from the raw zone.
    Replay(ops::Replay),
    /// Start runs for past logical dates from their raw data.
    Backfill(ops::Backfill),
    /// List recent runs with their state per step.
    Runs(ops::Runs),
}

fn main() -> std::process::ExitCode {
    let result: Result<()> = match Cli::parse().task {
        Task::Package(args) => package::package(&args),
        Task::Local(args) => local::run(args),
        Task::Redrive(args) => ops::redrive(args),
        Task::Replay(args) => ops::replay(args),
        Task::Backfill(args) => ops::backfill(args),
        Task::Runs(args) => ops::runs(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// An AWS SDK error with its whole chain of causes (the SDK's own `Display` says only
/// "service error").
pub fn sdk_error<E: std::error::Error>(e: E) -> anyhow::Error {
    anyhow::anyhow!("{}", etlgen_runtime::local::aws_sdk_sqs::error::DisplayErrorContext(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use package::{Arch, Builder};

    #[test]
    fn the_command_line_defaults_to_arm64() {
        let cli = Cli::try_parse_from(["xtask", "package"]).unwrap();
        let Task::Package(args) = cli.task else { panic!("not package") };
        assert_eq!(args.arch, Arch::Arm64);
        assert_eq!(args.builder, Builder::Auto);
        let cli = Cli::try_parse_from(["xtask", "package", "--arch", "x86_64", "--version", "v2"])
            .unwrap();
        let Task::Package(args) = cli.task else { panic!("not package") };
        assert_eq!((args.arch, args.version.as_deref()), (Arch::X86_64, Some("v2")));
        assert!(Cli::try_parse_from(["xtask", "package", "--arch", "sparc"]).is_err());
    }

    #[test]
    fn bad_arguments_are_refused_naming_the_flag() {
        let cases: [(&[&str], &str); 5] = [
            (
                &["local", "run", "--input", "f.csv", "--logical-date", "2024-13-01"],
                "--logical-date",
            ),
            (&["local", "run"], "--input"),
            (&["local", "up", "--set-env", "NO_EQUALS_SIGN"], "--set-env"),
            (&["backfill", "--from", "yesterday", "--to", "2024-05-01"], "--from"),
            (&["replay"], "--run"),
        ];
        for (args, flag) in cases {
            let error = Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))
                .unwrap_err()
                .to_string();
            assert!(error.contains(flag), "{args:?}: {error}");
        }
    }
}
