//! The interactive flow in a real pseudo-terminal, so dialoguer itself (key
//! handling, defaults, the confirmation) is exercised, not only the scripted
//! prompter.

use std::process::Command;

use rexpect::session::{Options, spawn_with_options};

use crate::helpers::Scratch;

const ENTER: &str = "\r";

/// Sends keys and flushes them to the terminal at once.
fn keys(p: &mut rexpect::session::PtySession, text: &str) {
    p.send(text).unwrap();
    p.flush().unwrap();
}

#[test]
fn a_person_at_a_terminal_can_generate_a_repository() {
    let scratch = Scratch::new();
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("etlgen"));
    cmd.current_dir(scratch.path())
        .args(["new", "--no-git"])
        .env("TERM", "xterm")
        .env("NO_COLOR", "1");
    let mut p = spawn_with_options(
        cmd,
        Options::new()
            .timeout_ms(Some(30_000))
            .strip_ansi_escape_codes(true),
    )
    .expect("etlgen starts in a pty");

    p.exp_string("Client name").unwrap();
    // An invalid name is refused at the prompt, then a valid one accepted.
    keys(&mut p, "../x");
    keys(&mut p, ENTER);
    p.exp_string("must start with a letter").unwrap();
    // dialoguer clears the rejected text; type again.
    keys(&mut p, "term-client");
    keys(&mut p, ENTER);

    p.exp_string("Where does the client's data come from?")
        .unwrap();
    keys(&mut p, "\x1b[B"); // arrow down: sftp
    keys(&mut p, ENTER);
    p.exp_string("AWS region").unwrap();
    keys(&mut p, ENTER);
    p.exp_string("Qualtrics datacenter id").unwrap();
    keys(&mut p, "fra1");
    keys(&mut p, ENTER);
    p.exp_string("Environments").unwrap();
    keys(&mut p, ENTER);
    p.exp_string("How often does the sftp source poll?")
        .unwrap();
    keys(&mut p, ENTER);
    p.exp_string("Which services does the client need?")
        .unwrap();
    keys(&mut p, ENTER);
    p.exp_string("Step names for distribution-scheduler")
        .unwrap();
    keys(&mut p, ENTER);
    p.exp_string("Generate this repository?").unwrap();
    keys(&mut p, "y");
    p.exp_string("Created term-client").unwrap();
    p.exp_eof().unwrap();

    let root = scratch.join("term-client");
    let answers = fs_err::read_to_string(root.join(".etlgen/answers.toml")).unwrap();
    assert!(answers.contains("source = \"sftp\""), "{answers}");
    assert!(answers.contains("datacenter = \"fra1\""), "{answers}");
    assert!(answers.contains("schedule = \"rate(1 hour)\""), "{answers}");
    assert!(root.join("lambdas/sftp-poller/src/hooks.rs").is_file());
    assert!(
        root.join("lambdas/distribution-scheduler/src/main.rs")
            .is_file()
    );
}

#[test]
fn declining_the_summary_writes_nothing() {
    let scratch = Scratch::new();
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("etlgen"));
    cmd.current_dir(scratch.path())
        .args([
            "new",
            "acme",
            "--source",
            "s3",
            "--region",
            "us-east-1",
            "--datacenter",
            "iad1",
        ])
        .args(["--env", "dev", "--event-driven", "--services", "validator"])
        .env("TERM", "xterm");
    let mut p = spawn_with_options(
        cmd,
        Options::new()
            .timeout_ms(Some(30_000))
            .strip_ansi_escape_codes(true),
    )
    .unwrap();
    p.exp_string("Generate this repository?").unwrap();
    keys(&mut p, "n");
    p.exp_string("cancelled at the summary; nothing was written")
        .unwrap();
    p.exp_eof().unwrap();
    assert!(scratch.entries().is_empty(), "{:?}", scratch.entries());
}
