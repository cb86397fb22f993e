//! End to end: a generated pipeline runs on its local stack (`cargo xtask local`), with its
//! real compiled Lambdas, its Terraform applied to moto, and the mock Qualtrics API, under
//! faults; every record must reach Qualtrics exactly once.
//!
//! The tests share one stack (building and applying it takes minutes); they take turns on
//! it, and the last one out brings it down, so no server outlives the suite.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde_json::Value;

use crate::helpers::{Scratch, write_project};
use crate::terraform::Terraform;
use crate::tools::{Workspace, assert_ok, shared_target, tool};

/// The default pipeline, plus a notifier.
const PIPELINE: &str = r#"
client = "e2e-co"
source = "s3"

[[steps]]
kind = "validator"

[[steps]]
kind = "contact-importer"

[[steps]]
kind = "distribution-scheduler"

[[steps]]
kind = "notifier"
"#;

/// A running local stack of a generated repository: where it is and how to reach it.
#[derive(Clone)]
struct Stack {
    root: PathBuf,
    xtask: PathBuf,
    env: Vec<(String, String)>,
}

impl Stack {
    /// Generates the repository into `scratch`, builds it and brings its stack up.
    fn up(scratch: &Scratch) -> Option<Stack> {
        let terraform = Terraform::find()?;
        let (_, root) = write_project(PIPELINE, scratch);
        let moto = tool("moto_server");
        let path = std::env::join_paths(
            [terraform.bin_dir(), moto.parent().unwrap().to_path_buf()]
                .into_iter()
                .chain(std::env::split_paths(
                    &std::env::var_os("PATH").unwrap_or_default(),
                )),
        )
        .unwrap();
        let env = vec![
            (
                "TF_CLI_CONFIG_FILE".to_owned(),
                terraform.cli_config().display().to_string(),
            ),
            ("TF_IN_AUTOMATION".to_owned(), "1".to_owned()),
            ("CHECKPOINT_DISABLE".to_owned(), "1".to_owned()),
            ("MOTO_SERVER".to_owned(), moto.display().to_string()),
            ("PATH".to_owned(), path.to_string_lossy().into_owned()),
        ];
        let ws_root = root.clone();
        let ws = Workspace::take_turn(&ws_root);
        assert_ok(
            &ws.cargo(&["build", "--package", "xtask"]),
            "cargo build -p xtask",
        );
        // Other workspaces build an xtask into the shared target too: keep this one's.
        let xtask = root.join("xtask-bin");
        fs_err::copy(shared_target().join("debug/xtask"), &xtask).unwrap();
        let stack = Stack { root, xtask, env };
        // `up` builds the Lambdas into the shared target: still this workspace's turn.
        let out = stack.xtask(&["local", "up", "--retry-delay", "1"]);
        drop(ws);
        if !out.status.success() {
            stack.down();
        }
        assert_ok(&out, "cargo xtask local up");
        Some(stack)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.xtask);
        cmd.current_dir(&self.root)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("CARGO_TARGET_DIR", shared_target())
            .env("RUSTFLAGS", "-Dwarnings")
            .env("CARGO_PROFILE_RELEASE_LTO", "false")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
            .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
            .stdin(Stdio::null());
        cmd
    }

    fn xtask(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("xtask runs")
    }

    /// `xtask …`, which must succeed, as JSON.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.xtask(args);
        assert_ok(&out, &format!("cargo xtask {}", args.join(" ")));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "cargo xtask {} printed no JSON ({e}):\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.root.join(name);
        fs_err::write(&path, text).unwrap();
        path
    }

    /// `local run`; its summary, whatever the outcome.
    fn run(&self, file: &Path, date: &str) -> Value {
        let args = [
            "local",
            "run",
            "--input",
            file.to_str().unwrap(),
            "--logical-date",
            date,
        ];
        let out = self.xtask(&[&args[..], &["--timeout", "300"]].concat());
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "local run printed no summary ({e}):\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        println!("local run {}: {summary:#}", file.display());
        summary
    }

    /// Brings the stack down; never panics (it runs in `Drop`), but says what failed.
    fn down(&self) {
        let out = self.xtask(&["local", "down"]);
        if !out.status.success() {
            eprintln!(
                "cargo xtask local down failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The shared stack (and the folder of its repository) and how many tests want it.
struct Shared {
    stack: Option<(Scratch, Stack)>,
    users: usize,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared {
    stack: None,
    users: 0,
});
static TURN: Mutex<()> = Mutex::new(());

fn shared() -> MutexGuard<'static, Shared> {
    SHARED.lock().unwrap_or_else(|e| e.into_inner())
}

/// One test's turn on the stack; the last test out brings it down.
struct Turn {
    _turn: MutexGuard<'static, ()>,
}

impl Turn {
    fn take() -> Option<(Turn, Stack)> {
        shared().users += 1;
        let turn = Turn {
            _turn: TURN.lock().unwrap_or_else(|e| e.into_inner()),
        };
        let existing = shared().stack.as_ref().map(|(_, stack)| stack.clone());
        let stack = match existing {
            Some(stack) => stack,
            None => {
                let scratch = Scratch::new();
                let stack = Stack::up(&scratch)?;
                shared().stack = Some((scratch, stack.clone()));
                stack
            }
        };
        Some((turn, stack))
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut shared = shared();
        shared.users -= 1;
        if shared.users == 0
            && let Some((_scratch, stack)) = shared.stack.take()
        {
            stack.down();
        }
    }
}

/// `n` contacts, `bad` of them with an invalid e-mail, ids prefixed `prefix`.
fn contacts(prefix: &str, n: usize, bad: usize) -> String {
    let mut text = String::from("external_id,email,first_name,last_name\n");
    for i in 0..n {
        let email = if i % (n / bad.max(1)).max(1) == 0 && i / (n / bad.max(1)).max(1) < bad {
            "not-an-email".to_owned()
        } else {
            format!("{prefix}{i}@example.com")
        };
        text.push_str(&format!("{prefix}-{i:05},{email},First{i},Last{i}\n"));
    }
    text
}

/// The run's mailing list at the mock, by the run's name.
fn run_list<'a>(state: &'a Value, run_id: &str) -> Vec<&'a Value> {
    state["mailing_lists"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["name"].as_str().is_some_and(|n| n.ends_with(run_id)))
        .collect()
}

fn contacts_of(list: &Value) -> Vec<&Value> {
    list["contacts"].as_object().unwrap().values().collect()
}

fn distributions_to(state: &Value, list_id: &str) -> usize {
    state["distributions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["mailing_list_id"] == list_id)
        .count()
}

#[test]
fn the_default_pipeline_imports_every_valid_contact_once_and_reports_the_rejects() {
    let Some((_turn, stack)) = Turn::take() else {
        return;
    };
    let file = stack.write("happy.csv", &contacts("happy", 10_000, 50));
    let started = Instant::now();
    let summary = stack.run(&file, "2026-11-02");
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(summary["status"], "complete", "{summary:#}");
    assert_eq!(summary["rows_in"], 10_000);
    assert_eq!(summary["rows_rejected"], 50);
    let run_id = summary["run_id"].as_str().unwrap();
    let state = stack.json(&["local", "qualtrics"]);
    let lists = run_list(&state, run_id);
    assert_eq!(lists.len(), 1, "one mailing list per run");
    let imported = contacts_of(lists[0]);
    assert_eq!(imported.len(), 9_950, "every valid contact, once");
    assert!(
        imported.iter().all(|c| c["writes"] == 1),
        "no contact written twice"
    );
    let list_id = lists[0]["id"].as_str().unwrap();
    assert_eq!(
        distributions_to(&state, list_id),
        1,
        "one distribution per run, after all batches"
    );
    for (step, info) in summary["steps"].as_object().unwrap() {
        assert_eq!(info["dlq_depth"], 0, "{step} has dead letters");
    }
    let calls = summary["api"]["calls"].as_u64().unwrap();
    // Needed: one list lookup and creation, an import and a status poll per batch of 100,
    // a distribution lookup and creation.
    let needed = 2 + 2 * 100 + 2;
    println!(
        "happy path: 10000 rows in {seconds:.1} s ({:.0} rows/s end to end); API calls {calls} made, {needed} needed; {} retried",
        10_000.0 / seconds,
        summary["api"]["faulted"]
    );
    assert_eq!(
        calls, needed as u64,
        "no call beyond those needed without faults"
    );
}
