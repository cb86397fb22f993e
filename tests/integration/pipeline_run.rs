//! End to end: a generated pipeline runs on its local stack (`cargo xtask local`), with its
//! real compiled Lambdas, its Terraform applied to moto, and the mock Qualtrics API, under
//! faults; every record must reach Qualtrics exactly once.
//!
//! The tests share one stack (building and applying it takes minutes); they take turns on
//! it, and the last one out brings it down, so no server outlives the suite.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
    /// Terraform's CLI configuration must outlive the stack: `local run` and `down` read
    /// the outputs.
    fn up(pipeline: &str, scratch: &Scratch, terraform: &Terraform) -> Stack {
        let (_, root) = write_project(pipeline, scratch);
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
        stack
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

/// A pipeline's shared stack (and the folder of its repository), and how many tests want
/// it.
#[derive(Default)]
struct Shared {
    stack: Option<(Scratch, Terraform, Stack)>,
    users: usize,
}

/// By pipeline (its answers document).
static SHARED: Mutex<BTreeMap<&'static str, Shared>> = Mutex::new(BTreeMap::new());
/// One test on one stack at a time: two stacks up at once would fight for the two cores.
static TURN: Mutex<()> = Mutex::new(());

fn shared() -> MutexGuard<'static, BTreeMap<&'static str, Shared>> {
    SHARED.lock().unwrap_or_else(|e| e.into_inner())
}

/// One test's turn on a pipeline's stack; the last test of the pipeline out brings it down.
struct Turn {
    pipeline: &'static str,
    _turn: MutexGuard<'static, ()>,
}

impl Turn {
    fn take(pipeline: &'static str) -> Option<(Turn, Stack)> {
        shared().entry(pipeline).or_default().users += 1;
        let turn = Turn {
            pipeline,
            _turn: TURN.lock().unwrap_or_else(|e| e.into_inner()),
        };
        let existing = shared()[pipeline]
            .stack
            .as_ref()
            .map(|(_, _, stack)| stack.clone());
        let stack = match existing {
            Some(stack) => stack,
            None => {
                let terraform = Terraform::find()?;
                let scratch = Scratch::new();
                let stack = Stack::up(pipeline, &scratch, &terraform);
                shared().get_mut(pipeline).unwrap().stack =
                    Some((scratch, terraform, stack.clone()));
                stack
            }
        };
        Some((turn, stack))
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut shared = shared();
        let shared = shared.get_mut(self.pipeline).unwrap();
        shared.users -= 1;
        if shared.users == 0
            && let Some((_scratch, _terraform, stack)) = shared.stack.take()
        {
            stack.down();
        }
    }
}

/// `n` contacts, `bad` of them with an invalid e-mail, ids prefixed `prefix`.
fn contacts(prefix: &str, n: usize, bad: usize) -> String {
    let mut text = String::from("external_id,email,first_name,last_name\n");
    // Every `every`-th row is invalid, `bad` of them in all.
    let every = (n / bad.max(1)).max(1);
    for i in 0..n {
        let email = if bad > 0 && i % every == 0 && i / every < bad {
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
    let Some((_turn, stack)) = Turn::take(PIPELINE) else {
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
    // Needed: the list's creation, an import and a status poll per batch of 100, and the
    // distribution's creation. (The lookups for what a crashed delivery left happen only
    // after a crash.)
    let needed = 1 + 2 * 100 + 1;
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

/// What the stack's emulator says right now, straight from its control API (faster than a
/// process per look, which matters when catching a step mid-batch).
fn emulator_status(stack: &Stack) -> Value {
    let state: Value = serde_json::from_str(
        &fs_err::read_to_string(stack.root.join(".local/state.json")).unwrap(),
    )
    .unwrap();
    let address = state["control_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://");
    let mut socket = TcpStream::connect(address).expect("the Lambda emulator answers");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(socket, "GET /status HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("no status ({e}): {response}"))
}

/// The emulator's counters of the step's function.
fn function<'a>(status: &'a Value, step: &str) -> &'a Value {
    status["functions"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(name, _)| name.ends_with(&format!("-{step}")))
        .map(|(_, f)| f)
        .unwrap_or_else(|| panic!("no function for {step} in {status:#}"))
}

/// Python with boto3 (moto's dependency) against the stack's AWS emulator; its stdout.
fn boto3(stack: &Stack, code: &str) -> String {
    let out = python(stack, code);
    assert_ok(&out, "python (boto3)");
    String::from_utf8(out.stdout).unwrap()
}

/// [`boto3`], without judging the outcome.
fn python(stack: &Stack, code: &str) -> Output {
    let state = stack.root.join(".local/state.json");
    let prelude = format!(
        "import boto3, json\nstate = json.load(open({:?}))\n\
         def client(name):\n    return boto3.client(name, endpoint_url=state['aws_endpoint'], \
         region_name=state['region'], aws_access_key_id='local', aws_secret_access_key='local')\n",
        state.display().to_string()
    );
    Command::new(tool("python"))
        .arg("-c")
        .arg(format!("{prelude}{code}"))
        .output()
        .expect("python runs")
}

/// Sets the mock's faults from TOML text (empty clears them).
fn set_faults(stack: &Stack, toml: &str) {
    let file = stack.write("faults.toml", toml);
    assert_ok(
        &stack.xtask(&["local", "faults", file.to_str().unwrap()]),
        "cargo xtask local faults",
    );
}

/// Clears the mock's faults when a test ends, however it ends.
struct Faulty<'a>(&'a Stack);

impl Drop for Faulty<'_> {
    fn drop(&mut self) {
        let file = self.0.write("no-faults.toml", "");
        let _ = self.0.xtask(&["local", "faults", file.to_str().unwrap()]);
    }
}

#[test]
fn the_rejected_rows_are_reported_with_their_reasons() {
    let Some((_turn, stack)) = Turn::take(PIPELINE) else {
        return;
    };
    let file = stack.write("rejects.csv", &contacts("rej", 200, 4));
    let summary = stack.run(&file, "2026-11-06");
    assert_eq!(summary["status"], "complete", "{summary:#}");
    assert_eq!(summary["rows_rejected"], 4);
    let run_id = summary["run_id"].as_str().unwrap();
    let reports = boto3(
        &stack,
        &format!(
            "s3 = client('s3')\nbucket = [b['Name'] for b in s3.list_buckets()['Buckets'] if b['Name'].endswith('-data')][0]\n\
             prefix = 'reports/2026-11-06/{run_id}/validator/rejected-'\n\
             for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get('Contents', []):\n    \
             print(s3.get_object(Bucket=bucket, Key=o['Key'])['Body'].read().decode(), end='')\n"
        ),
    );
    let rows: Vec<&str> = reports.lines().filter(|l| l.contains("rej-")).collect();
    assert_eq!(rows.len(), 4, "{reports}");
    assert!(
        rows.iter().all(|r| r.contains("email")),
        "each reject names its reason: {reports}"
    );
}

#[test]
fn under_429s_500s_and_a_killed_step_every_contact_still_arrives_once() {
    let Some((_turn, stack)) = Turn::take(PIPELINE) else {
        return;
    };
    let _faulty = Faulty(&stack);
    set_faults(
        &stack,
        "rate_429 = 0.1\nrate_500 = 0.1\nretry_after_seconds = 1\nseed = 7\n",
    );
    let file = stack.write("flaky.csv", &contacts("flaky", 2_000, 0));
    let before = emulator_status(&stack);
    let crashes_before = function(&before, "contact-importer")["crashes"]
        .as_u64()
        .unwrap();
    let started = Instant::now();
    let mut run = stack
        .command(&[
            "local",
            "run",
            "--input",
            file.to_str().unwrap(),
            "--logical-date",
            "2026-11-03",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the run's list exists (a batch is done), kill the importer mid-batch, once.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut killed = None;
    while killed.is_none() && Instant::now() < deadline && run.try_wait().unwrap().is_none() {
        let now = emulator_status(&stack);
        let importer = function(&now, "contact-importer");
        let done = importer["messages_succeeded"].as_u64().unwrap()
            > function(&before, "contact-importer")["messages_succeeded"]
                .as_u64()
                .unwrap();
        if let (true, Some(pid)) = (done, importer["busy_pids"].as_array().unwrap().first()) {
            let pid = pid.as_u64().unwrap().to_string();
            assert_ok(
                &Command::new("kill").args(["-9", &pid]).output().unwrap(),
                "kill -9",
            );
            killed = Some(pid);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = run.wait_with_output().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no summary ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    println!("faults run: {summary:#}");
    assert!(killed.is_some(), "the importer was never caught mid-batch");
    let after = emulator_status(&stack);
    assert!(
        function(&after, "contact-importer")["crashes"]
            .as_u64()
            .unwrap()
            > crashes_before
    );
    assert_eq!(summary["status"], "complete", "{summary:#}");
    for (step, info) in summary["steps"].as_object().unwrap() {
        assert_eq!(info["dlq_depth"], 0, "{step} has dead letters");
    }
    let run_id = summary["run_id"].as_str().unwrap();
    let state = stack.json(&["local", "qualtrics"]);
    let lists = run_list(&state, run_id);
    assert_eq!(lists.len(), 1, "one mailing list, despite the crash");
    assert_eq!(
        contacts_of(lists[0]).len(),
        2_000,
        "every contact, once (upserted on extRef)"
    );
    assert_eq!(
        distributions_to(&state, lists[0]["id"].as_str().unwrap()),
        1
    );
    let (calls, faulted) = (
        summary["api"]["calls"].as_u64().unwrap(),
        summary["api"]["faulted"].as_u64().unwrap(),
    );
    assert!(faulted > 0, "faults were injected");
    println!(
        "under faults: 2000 rows in {seconds:.1} s; API calls {calls} made, {} needed; {faulted} retried after a fault",
        1 + 2 * 20 + 1
    );
}

#[test]
fn a_poison_message_reaches_the_dlq_and_a_redrive_completes_the_run() {
    let Some((_turn, stack)) = Turn::take(PIPELINE) else {
        return;
    };
    let _faulty = Faulty(&stack);
    set_faults(&stack, "poison = [\"poison-00007\"]\n");
    let file = stack.write("poison.csv", &contacts("poison", 300, 0));
    let summary = stack.run(&file, "2026-11-04");
    assert_eq!(summary["status"], "failed", "{summary:#}");
    // The emulator computes no CloudWatch metric: this is the attribute the alarm watches.
    assert_eq!(
        summary["steps"]["contact-importer"]["dlq_depth"], 1,
        "{summary:#}"
    );
    let run_id = summary["run_id"].as_str().unwrap().to_owned();
    let state = stack.json(&["local", "qualtrics"]);
    let list = run_list(&state, &run_id)[0].clone();
    assert_eq!(contacts_of(&list).len(), 200, "the two good batches are in");
    assert_eq!(
        distributions_to(&state, list["id"].as_str().unwrap()),
        0,
        "not before every batch"
    );

    set_faults(&stack, "");
    let redrive = stack.xtask(&["redrive", "contact-importer"]);
    assert_ok(&redrive, "cargo xtask redrive contact-importer");
    let settled = stack.json(&["local", "wait", "--timeout", "300"]);
    assert_eq!(settled["status"], "complete", "{settled:#}");
    let state = stack.json(&["local", "qualtrics"]);
    let list = run_list(&state, &run_id)[0];
    assert_eq!(contacts_of(list).len(), 300, "the redriven batch is in");
    assert_eq!(
        distributions_to(&state, list["id"].as_str().unwrap()),
        1,
        "the run completed"
    );
}

#[test]
fn a_replay_changes_nothing_and_a_backfill_processes_its_own_dates_raw_data() {
    let Some((_turn, stack)) = Turn::take(PIPELINE) else {
        return;
    };
    let week_ago = stack.run(
        &stack.write("week-ago.csv", &contacts("week", 300, 0)),
        "2026-10-28",
    );
    let today = stack.run(
        &stack.write("today.csv", &contacts("today", 500, 0)),
        "2026-11-05",
    );
    assert_eq!(
        (&week_ago["status"], &today["status"]),
        (&"complete".into(), &"complete".into())
    );
    let effects = |state: &Value| {
        let mut state = state.clone();
        state.as_object_mut().unwrap().remove("contact_imports");
        state
    };
    let before = stack.json(&["local", "qualtrics"]);

    let replay = stack.xtask(&["replay", "--run", today["run_id"].as_str().unwrap()]);
    assert_ok(&replay, "cargo xtask replay");
    let settled = stack.json(&["local", "wait", "--timeout", "300"]);
    assert_eq!(settled["status"], "complete", "{settled:#}");
    assert_eq!(
        effects(&stack.json(&["local", "qualtrics"])),
        effects(&before),
        "a replay changed Qualtrics"
    );

    let counts = emulator_status(&stack);
    let backfill = stack.xtask(&["backfill", "--from", "2026-10-27", "--to", "2026-10-29"]);
    assert_ok(&backfill, "cargo xtask backfill");
    let settled = stack.json(&["local", "wait", "--timeout", "300"]);
    assert_eq!(settled["status"], "complete", "{settled:#}");
    let delta = |step: &str| {
        let now = emulator_status(&stack);
        function(&now, step)["messages_succeeded"].as_u64().unwrap()
            - function(&counts, step)["messages_succeeded"]
                .as_u64()
                .unwrap()
    };
    assert_eq!(delta("validator"), 1, "one run had raw data in those dates");
    assert_eq!(
        delta("contact-importer"),
        3,
        "the week-old run's 3 batches, not today's 5"
    );
    assert_eq!(
        effects(&stack.json(&["local", "qualtrics"])),
        effects(&before),
        "nothing new at Qualtrics"
    );
}

/// Creates the notifier's topic again when a test ends, however it ends.
struct Restore<'a>(&'a Stack, String);

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let code = format!("client('sns').create_topic(Name={:?})\n", self.1);
        let out = python(self.0, &code);
        if !out.status.success() {
            eprintln!(
                "the notifier's topic was not restored: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn a_failing_notifier_never_triggers_the_imports_again() {
    let Some((_turn, stack)) = Turn::take(PIPELINE) else {
        return;
    };
    // The notifier's topic disappears: every publish fails, and nothing else does.
    let topic = boto3(
        &stack,
        "sns = client('sns')\n\
         arn = [t['TopicArn'] for t in sns.list_topics()['Topics'] if t['TopicArn'].endswith('-notifier')][0]\n\
         sns.delete_topic(TopicArn=arn)\nprint(arn.rsplit(':', 1)[1])\n",
    );
    let before = emulator_status(&stack);
    let restore = Restore(&stack, topic.trim().to_owned());
    let file = stack.write("notify.csv", &contacts("notify", 100, 0));
    let summary = stack.run(&file, "2026-11-07");
    drop(restore);
    std::thread::sleep(Duration::from_secs(5));
    let after = emulator_status(&stack);
    let delta = |step: &str, counter: &str| {
        function(&after, step)[counter].as_u64().unwrap()
            - function(&before, step)[counter].as_u64().unwrap()
    };
    let run_id = summary["run_id"].as_str().unwrap();
    // A publish to a missing topic is either retried (and fails) or rejected to a report.
    let rejected = boto3(
        &stack,
        &format!(
            "s3 = client('s3')\n\
             bucket = [b['Name'] for b in s3.list_buckets()['Buckets'] if b['Name'].endswith('-data')][0]\n\
             prefix = 'reports/2026-11-07/{run_id}/notifier/'\n\
             for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get('Contents', []):\n    print(o['Key'])\n"
        ),
    );
    println!("the notifier's rejects: {rejected}");
    assert!(
        delta("notifier", "messages_failed") > 0 || !rejected.trim().is_empty(),
        "the notifier never failed: {summary:#}"
    );
    assert_eq!(
        delta("contact-importer", "messages_received"),
        1,
        "the one batch, delivered once"
    );
    assert_eq!(
        delta("distribution-scheduler", "messages_received"),
        1,
        "{summary:#}"
    );
    let state = stack.json(&["local", "qualtrics"]);
    let lists = run_list(&state, run_id);
    assert_eq!(lists.len(), 1);
    assert!(
        contacts_of(lists[0]).iter().all(|c| c["writes"] == 1),
        "a contact imported again"
    );
    assert_eq!(
        distributions_to(&state, lists[0]["id"].as_str().unwrap()),
        1
    );
    // Whatever the notifier left in its DLQ goes back once the topic exists again.
    if summary["steps"]["notifier"]["dlq_depth"].as_u64().unwrap() > 0 {
        assert_ok(
            &stack.xtask(&["redrive", "notifier"]),
            "cargo xtask redrive notifier",
        );
        let settled = stack.json(&["local", "wait", "--timeout", "300"]);
        assert_eq!(settled["status"], "complete", "{settled:#}");
        assert_eq!(
            settled["steps"]["contact-importer"]["invocations"], 0,
            "{settled:#}"
        );
    }
}

/// A response-import pipeline: survey responses from the client's files into a survey.
const RESPONSES: &str = r#"
client = "e2e-resp"
source = "s3"

[[steps]]
kind = "validator"
settings = { primary_key = "response_id", columns = [{ name = "response_id", required = true }, { name = "score", type = "integer", required = true }] }

[[steps]]
kind = "response-importer"
"#;

/// `n` responses, `bad` of them with a score that is not a number.
fn responses(prefix: &str, n: usize, bad: usize) -> String {
    let mut text = String::from("response_id,score\n");
    for i in 0..n {
        let score = if i < bad {
            "not-a-number".to_owned()
        } else {
            (i % 11).to_string()
        };
        text.push_str(&format!("{prefix}-{i:05},{score}\n"));
    }
    text
}

#[test]
fn the_response_pipeline_imports_every_valid_response_once_under_faults() {
    let Some((_turn, stack)) = Turn::take(RESPONSES) else {
        return;
    };
    let _faulty = Faulty(&stack);
    set_faults(
        &stack,
        "rate_429 = 0.1\nrate_500 = 0.1\nretry_after_seconds = 1\nseed = 11\n",
    );
    let file = stack.write("responses.csv", &responses("resp", 1_000, 10));
    let started = Instant::now();
    let summary = stack.run(&file, "2026-11-08");
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(summary["status"], "complete", "{summary:#}");
    assert_eq!(
        (
            summary["rows_in"].as_u64(),
            summary["rows_rejected"].as_u64()
        ),
        (Some(1_000), Some(10))
    );
    let state = stack.json(&["local", "qualtrics"]);
    let recorded = state["responses"]["SV_REPLACE_ME"]
        .as_array()
        .expect("responses in the survey");
    let ids: std::collections::BTreeSet<&str> = recorded
        .iter()
        .filter_map(|r| r["values"]["response_id"].as_str())
        .collect();
    assert_eq!(recorded.len(), 990, "every valid response, once");
    assert_eq!(ids.len(), 990, "no response twice");
    let keys = state["idempotency_keys"].as_array().unwrap();
    assert_eq!(
        keys.len(),
        10,
        "one Idempotency-Key per batch of 100 records"
    );
    let (calls, faulted) = (
        summary["api"]["calls"].as_u64().unwrap(),
        summary["api"]["faulted"].as_u64().unwrap(),
    );
    assert!(faulted > 0, "faults were injected");
    println!(
        "response import: 1000 rows in {seconds:.1} s ({:.0} rows/s); API calls {calls} made, {} needed; {faulted} retried after a fault",
        1_000.0 / seconds,
        10 * 2
    );
}
