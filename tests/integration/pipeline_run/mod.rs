//! End to end: a generated pipeline runs on its local stack (`cargo xtask local`), with its
//! real compiled Lambdas, its Terraform applied to moto, and the mock Qualtrics API, under
//! faults; every record must reach Qualtrics exactly once.
//!
//! Three pipelines, each a module: the default one (S3 source, plus a notifier), the same
//! fed from an SFTP server (OpenSSH's sshd, which `local up` starts), and a response-import
//! pipeline. The tests of a pipeline share one stack (building and applying it takes
//! minutes); they take turns on it, and the last one out brings it down, so no server
//! outlives the suite. One stack runs at a time: two would fight for the two cores.

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

mod contacts;
mod default;
mod responses;
mod sftp;

/// A running local stack of a generated repository: where it is and how to reach it.
#[derive(Clone)]
pub(super) struct Stack {
    pub(super) root: PathBuf,
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

    pub(super) fn command(&self, args: &[&str]) -> Command {
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

    pub(super) fn xtask(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("xtask runs")
    }

    /// `xtask …`, which must succeed, as JSON.
    pub(super) fn json(&self, args: &[&str]) -> Value {
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

    pub(super) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.root.join(name);
        fs_err::write(&path, text).unwrap();
        path
    }

    /// `local run`; its summary, whatever the outcome.
    pub(super) fn run(&self, file: &Path, date: &str) -> Value {
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
pub(super) struct Turn {
    pipeline: &'static str,
    _turn: MutexGuard<'static, ()>,
}

impl Turn {
    pub(super) fn take(pipeline: &'static str) -> Option<(Turn, Stack)> {
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

/// What the stack's emulator says right now, straight from its control API (faster than a
/// process per look, which matters when catching a step mid-batch).
pub(super) fn emulator_status(stack: &Stack) -> Value {
    local_get(stack, "control_url", "/status")
}

/// How many calls changed the mock Qualtrics API's state so far (its `effects`).
fn mock_effects(stack: &Stack) -> u64 {
    local_get(stack, "qualtrics_url", "/__mock/stats")["effects"]
        .as_u64()
        .unwrap()
}

/// `GET path` from one of the local servers `.local/state.json` names (`url_field`), as JSON.
fn local_get(stack: &Stack, url_field: &str, path: &str) -> Value {
    let state: Value = serde_json::from_str(
        &fs_err::read_to_string(stack.root.join(".local/state.json")).unwrap(),
    )
    .unwrap();
    let address = state[url_field]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let mut socket =
        TcpStream::connect(address).unwrap_or_else(|e| panic!("{url_field} answers: {e}"));
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(socket, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("no JSON from {path} ({e}): {response}"))
}

/// The emulator's counters of the step's function.
pub(super) fn function<'a>(status: &'a Value, step: &str) -> &'a Value {
    status["functions"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(name, _)| name.ends_with(&format!("-{step}")))
        .map(|(_, f)| f)
        .unwrap_or_else(|| panic!("no function for {step} in {status:#}"))
}

/// Python with boto3 (moto's dependency) against the stack's AWS emulator; its stdout.
pub(super) fn boto3(stack: &Stack, code: &str) -> String {
    let out = python(stack, code);
    assert_ok(&out, "python (boto3)");
    String::from_utf8(out.stdout).unwrap()
}

/// [`boto3`], without judging the outcome.
pub(super) fn python(stack: &Stack, code: &str) -> Output {
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
pub(super) fn set_faults(stack: &Stack, toml: &str) {
    let file = stack.write("faults.toml", toml);
    assert_ok(
        &stack.xtask(&["local", "faults", file.to_str().unwrap()]),
        "cargo xtask local faults",
    );
}

/// Clears the mock's faults when a test ends, however it ends.
pub(super) struct Faulty<'a>(pub(super) &'a Stack);

impl Drop for Faulty<'_> {
    fn drop(&mut self) {
        let file = self.0.write("no-faults.toml", "");
        let _ = self.0.xtask(&["local", "faults", file.to_str().unwrap()]);
    }
}

/// `local run` of `file` for `date`, killing `step`'s process (`kill -9`) mid-batch once,
/// as soon as the run has changed something at the mock Qualtrics API, so the crash leaves
/// work half done; its summary and seconds. Fails unless the step was caught mid-batch and
/// the emulator saw the crash.
pub(super) fn run_killing(stack: &Stack, file: &Path, date: &str, step: &str) -> (Value, f64) {
    let before = emulator_status(stack);
    let effects_before = mock_effects(stack);
    let counter = |status: &Value, name: &str| function(status, step)[name].as_u64().unwrap();
    let started = Instant::now();
    let mut run = stack
        .command(&[
            "local",
            "run",
            "--input",
            file.to_str().unwrap(),
            "--logical-date",
            date,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut killed = None;
    while killed.is_none() && Instant::now() < deadline && run.try_wait().unwrap().is_none() {
        let now = emulator_status(stack);
        // Waiting for a finished batch instead loses the race when one invocation holds
        // most of the run's messages.
        let started = mock_effects(stack) > effects_before;
        if let (true, Some(pid)) = (
            started,
            function(&now, step)["busy_pids"]
                .as_array()
                .unwrap()
                .first(),
        ) {
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
    println!("run with {step} killed: {summary:#}");
    assert!(killed.is_some(), "{step} was never caught mid-batch");
    assert!(
        counter(&emulator_status(stack), "crashes") > counter(&before, "crashes"),
        "the emulator saw no crash of {step}"
    );
    (summary, seconds)
}

/// The validator's reject report of a run: every rejected row, one per line.
pub(super) fn rejected_rows(stack: &Stack, date: &str, run_id: &str) -> String {
    boto3(
        stack,
        &format!(
            "s3 = client('s3')\nbucket = [b['Name'] for b in s3.list_buckets()['Buckets'] if b['Name'].endswith('-data')][0]\n\
             prefix = 'reports/{date}/{run_id}/validator/rejected-'\n\
             for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get('Contents', []):\n    \
             print(s3.get_object(Bucket=bucket, Key=o['Key'])['Body'].read().decode(), end='')\n"
        ),
    )
}

/// Creates the notifier's topic again when a test ends, however it ends.
pub(super) struct Restore<'a>(&'a Stack, String);

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

/// The notifier's topic disappears, so every publish fails and nothing else does, while
/// `file` runs for `date`: the notifier fails (or rejects to its report), and each step of
/// `once` receives the run's one message exactly once. Whatever the notifier left in its DLQ
/// is redriven once the topic is back, and that triggers nothing else. The run's summary.
pub(super) fn a_failing_notifier_alone(
    stack: &Stack,
    file: &Path,
    date: &str,
    once: &[&str],
) -> Value {
    let topic = boto3(
        stack,
        "sns = client('sns')\n\
         arn = [t['TopicArn'] for t in sns.list_topics()['Topics'] if t['TopicArn'].endswith('-notifier')][0]\n\
         sns.delete_topic(TopicArn=arn)\nprint(arn.rsplit(':', 1)[1])\n",
    );
    let before = emulator_status(stack);
    let restore = Restore(stack, topic.trim().to_owned());
    let summary = stack.run(file, date);
    drop(restore);
    std::thread::sleep(Duration::from_secs(5));
    let after = emulator_status(stack);
    let delta = |step: &str, counter: &str| {
        function(&after, step)[counter].as_u64().unwrap()
            - function(&before, step)[counter].as_u64().unwrap()
    };
    let run_id = summary["run_id"].as_str().unwrap();
    // A publish to a missing topic is either retried (and fails) or rejected to a report.
    let rejected = boto3(
        stack,
        &format!(
            "s3 = client('s3')\n\
             bucket = [b['Name'] for b in s3.list_buckets()['Buckets'] if b['Name'].endswith('-data')][0]\n\
             prefix = 'reports/{date}/{run_id}/notifier/'\n\
             for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get('Contents', []):\n    print(o['Key'])\n"
        ),
    );
    println!("the notifier's rejects: {rejected}");
    assert!(
        delta("notifier", "messages_failed") > 0 || !rejected.trim().is_empty(),
        "the notifier never failed: {summary:#}"
    );
    for step in once {
        assert_eq!(
            delta(step, "messages_received"),
            1,
            "{step}: the one message, delivered once: {summary:#}"
        );
    }
    // Whatever the notifier left in its DLQ goes back once the topic exists again.
    if summary["steps"]["notifier"]["dlq_depth"].as_u64().unwrap() > 0 {
        assert_ok(
            &stack.xtask(&["redrive", "notifier"]),
            "cargo xtask redrive notifier",
        );
        let settled = stack.json(&["local", "wait", "--timeout", "300"]);
        assert_eq!(settled["status"], "complete", "{settled:#}");
        for step in once {
            assert_eq!(settled["steps"][step]["invocations"], 0, "{settled:#}");
        }
    }
    summary
}
