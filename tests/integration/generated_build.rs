//! Generated repositories are real workspaces: their lock file is exactly
//! what Cargo writes, and they build and pass their own tests.
//!
//! Like the aws-lambda-rust-runtime examples, each is built as a standalone
//! workspace; all of them share one target directory, so the framework's
//! dependencies compile once per test run.

use crate::helpers::{Scratch, projects, write_project};
use crate::tools::{Workspace, assert_ok};

#[test]
fn the_lock_file_is_exactly_what_cargo_writes() {
    for doc in projects() {
        let scratch = Scratch::new();
        let (_, root) = write_project(&doc, &scratch);
        let ws = Workspace::take_turn(&root);
        let before = fs_err::read(root.join("Cargo.lock")).unwrap();
        // --locked fails if the lock is missing or contradicts a manifest.
        assert_ok(
            &ws.cargo(&["metadata", "--format-version", "1", "--locked"]),
            "cargo metadata --locked",
        );
        // Without --locked Cargo rewrites the file whenever its text differs.
        assert_ok(
            &ws.cargo(&["metadata", "--format-version", "1"]),
            "cargo metadata",
        );
        let after = fs_err::read(root.join("Cargo.lock")).unwrap();
        assert!(
            before == after,
            "Cargo rewrote the generated Cargo.lock for:\n{doc}"
        );
    }
}

#[test]
fn generated_workspaces_are_formatted_build_and_pass_their_tests() {
    for doc in projects() {
        let scratch = Scratch::new();
        let (answers, root) = write_project(&doc, &scratch);
        let ws = Workspace::take_turn(&root);
        assert_ok(
            &ws.cargo(&["fmt", "--all", "--", "--check"]),
            "cargo fmt --check",
        );
        let test = ws.cargo(&[
            "test",
            "--locked",
            "--workspace",
            "--exclude",
            "etlgen-runtime",
        ]);
        assert_ok(&test, "cargo test");
        // Every step has tests of its own, and they ran.
        for step in &answers.steps {
            let name = step.name.as_str();
            let list = ws.cargo(&[
                "test", "--locked", "-p", name, "--test", "hooks", "--", "--list",
            ]);
            assert_ok(&list, "cargo test -- --list");
            let listed = String::from_utf8_lossy(&list.stdout);
            let tests: Vec<&str> = listed
                .lines()
                .filter_map(|l| l.strip_suffix(": test"))
                .collect();
            assert!(!tests.is_empty(), "{name} has no tests:\n{listed}");
            let ran = String::from_utf8_lossy(&test.stdout);
            for t in tests {
                assert!(
                    ran.contains(&format!("test {t} ... ok")),
                    "{name}: {t} did not pass"
                );
            }
        }
    }
}

/// The generated tests run the client's hooks, not the framework's defaults:
/// an override in a seeded `hooks.rs` that rejects every row makes the
/// validator's generated test fail on exactly that.
#[test]
fn a_client_override_in_hooks_rs_is_what_the_generated_tests_run() {
    let scratch = Scratch::new();
    let (_, root) = write_project("client = \"custom-hooks\"", &scratch);
    fs_err::write(
        root.join("lambdas/validator/src/hooks.rs"),
        r#"use etlgen_runtime::kinds::Record;
use etlgen_runtime::kinds::validator::{self, Hooks, Settings};

#[derive(Debug, Default, Clone)]
pub struct ClientHooks;

impl Hooks for ClientHooks {
    fn validate_row(&self, row: &mut Record, settings: &Settings) -> Result<(), String> {
        validator::validate_row(row, settings)?;
        Err("the client's rule rejects every row".into())
    }
}
"#,
    )
    .unwrap();
    let out = Workspace::take_turn(&root).cargo(&[
        "test",
        "--locked",
        "-p",
        "validator",
        "--test",
        "hooks",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "the override changed nothing:\n{stdout}"
    );
    assert!(
        stdout.contains("every valid row goes on to contact-importer"),
        "the failure is not the override's:\n{stdout}"
    );
}
