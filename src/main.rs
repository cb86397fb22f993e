//! The `etlgen` binary: parse arguments, run, print the whole error chain.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = etlgen::cli::Cli::parse();
    match etlgen::cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
