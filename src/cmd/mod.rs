//! One module per subcommand, each with its `Args` and `run`.

pub mod add;
pub mod check;
pub mod list;
pub mod new;
pub mod plan;
pub mod remove;
pub mod update;

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::process::ExitCode;

use crate::answers::Answers;
use crate::catalog::Catalog;
use crate::cli::{Cli, Command};
use crate::prompt::TerminalPrompter;

/// Runs a parsed command line against the real terminal and stdout.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::New(args) => {
            let mut terminal = TerminalPrompter::default();
            let interactive = !args.yes && std::io::stdin().is_terminal();
            let prompter: Option<&mut dyn crate::prompt::Prompter> = if interactive {
                Some(&mut terminal)
            } else {
                None
            };
            new::run(&args, prompter, &mut stdout)
        }
        Command::List(args) => list::run(&args, &mut stdout),
        Command::Plan(args) => plan::run(&args, &mut stdout),
        Command::Add(args) => add::run(&args, &mut stdout),
        Command::Remove(args) => remove::run(&args, &mut stdout),
        Command::Update(args) => update::run(&args, &mut stdout),
        Command::Check(args) => check::run(&args, &mut stdout),
    }
}

/// A few lines saying what a pipeline is: shown before confirming, after a
/// dry run and after generating.
pub fn summary(answers: &Answers, catalog: &Catalog) -> String {
    let mut s = String::new();
    let when = match &answers.schedule {
        Some(schedule) => format!("on schedule {schedule}"),
        None => "when input arrives".to_string(),
    };
    let envs: Vec<&str> = answers.environments.iter().map(|e| e.as_str()).collect();
    let _ = writeln!(s, "Client:        {}", answers.client);
    let _ = writeln!(s, "Source:        {} (runs {when})", answers.source);
    let _ = writeln!(s, "AWS region:    {}", answers.region);
    let _ = writeln!(
        s,
        "Qualtrics:     https://{}.qualtrics.com/API/v3/",
        answers.datacenter
    );
    let _ = writeln!(s, "Environments:  {}", envs.join(", "));
    let _ = writeln!(s, "Steps (each an SQS queue + Lambda + DLQ):");
    for (i, step) in answers.steps.iter().enumerate() {
        let kind = catalog
            .kind(&step.kind)
            .expect("resolved against the catalog");
        let st = &step.settings.step;
        let queue = if st.fifo { "FIFO" } else { "standard" };
        let _ = writeln!(
            s,
            "  {}. {:<24} {:<23} {queue}, batch {}, concurrency {}, timeout {}s",
            i + 1,
            step.name,
            kind.id,
            st.batch_size,
            st.max_concurrency,
            st.timeout_seconds
        );
    }
    s
}
