//! The response-import pipeline: survey responses from the client's files into a survey,
//! each batch under its own `Idempotency-Key`. On the happy path, under faults and a crash,
//! with a poison batch, on a replay and a backfill, and with a failing notifier, every
//! response is imported once.

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::Value;

use super::{
    Faulty, Turn, a_failing_notifier_alone, boto3, emulator_status, function, rejected_rows,
    run_killing, set_faults,
};
use crate::tools::assert_ok;

/// A response-import pipeline: survey responses from the client's files into a survey, the
/// run's responses exported back, and a notifier.
const RESPONSES: &str = r#"
client = "e2e-resp"
source = "s3"

[[steps]]
kind = "validator"
settings = { primary_key = "response_id", columns = [{ name = "response_id", required = true }, { name = "score", type = "integer", required = true }] }

[[steps]]
kind = "response-importer"

[[steps]]
kind = "exporter"

[[steps]]
kind = "notifier"
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
fn the_response_pipeline_imports_every_valid_response_once_and_reports_the_rejects() {
    let Some((_turn, stack)) = Turn::take(RESPONSES) else {
        return;
    };
    let file = stack.write("rhappy.csv", &responses("rhappy", 10_000, 50));
    let started = Instant::now();
    let summary = stack.run(&file, "2026-11-08");
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(summary["status"], "complete", "{summary:#}");
    assert_eq!(
        (
            summary["rows_in"].as_u64(),
            summary["rows_rejected"].as_u64()
        ),
        (Some(10_000), Some(50))
    );
    for (step, info) in summary["steps"].as_object().unwrap() {
        assert_eq!(info["dlq_depth"], 0, "{step} has dead letters");
    }
    let run_id = summary["run_id"].as_str().unwrap();
    let reports = rejected_rows(&stack, "2026-11-08", run_id);
    let rejects: Vec<&str> = reports.lines().filter(|l| l.contains("rhappy-")).collect();
    assert_eq!(rejects.len(), 50, "{reports}");
    assert!(
        rejects.iter().all(|r| r.contains("is not an integer")),
        "each reject names its reason: {reports}"
    );
    let state = stack.json(&["local", "qualtrics"]);
    assert_eq!(
        unique(&imported(&state, "rhappy-")),
        (9_950, 9_950),
        "every valid response, once"
    );
    let calls = summary["api"]["calls"].as_u64().unwrap();
    // Needed: an import and a progress poll per batch of 100 valid responses, and the run's
    // one export (start, progress, file).
    let needed = 2 * 9_950_u64.div_ceil(100) + 3;
    println!(
        "response import happy path: 10000 rows in {seconds:.1} s ({:.0} rows/s end to end); API calls {calls} made, {needed} needed; {} retried",
        10_000.0 / seconds,
        summary["api"]["faulted"]
    );
    assert_eq!(calls, needed, "no call beyond those needed without faults");
}

#[test]
fn the_response_pipeline_survives_429s_500s_and_a_killed_step() {
    let Some((_turn, stack)) = Turn::take(RESPONSES) else {
        return;
    };
    let _faulty = Faulty(&stack);
    set_faults(
        &stack,
        "rate_429 = 0.1\nrate_500 = 0.1\nretry_after_seconds = 1\nseed = 11\n",
    );
    let keys_before = stack.json(&["local", "qualtrics"])["idempotency_keys"]
        .as_array()
        .map_or(0, Vec::len);
    let file = stack.write("rflaky.csv", &responses("rflaky", 2_000, 0));
    let (summary, seconds) = run_killing(&stack, &file, "2026-11-10", "response-importer");
    assert_eq!(summary["status"], "complete", "{summary:#}");
    for (step, info) in summary["steps"].as_object().unwrap() {
        assert_eq!(info["dlq_depth"], 0, "{step} has dead letters");
    }
    let state = stack.json(&["local", "qualtrics"]);
    assert_eq!(
        unique(&imported(&state, "rflaky-")),
        (2_000, 2_000),
        "every response once, despite the faults and the crash"
    );
    let keys = state["idempotency_keys"].as_array().map_or(0, Vec::len) - keys_before;
    assert_eq!(keys, 20, "one Idempotency-Key per batch of 100 records");
    let (calls, faulted) = (
        summary["api"]["calls"].as_u64().unwrap(),
        summary["api"]["faulted"].as_u64().unwrap(),
    );
    assert!(faulted > 0, "faults were injected");
    println!(
        "response import under faults: 2000 rows in {seconds:.1} s ({:.0} rows/s); API calls {calls} made, {} needed; {faulted} retried after a fault",
        2_000.0 / seconds,
        20 * 2
    );
}

#[test]
fn a_failing_notifier_never_triggers_the_response_import_again() {
    let Some((_turn, stack)) = Turn::take(RESPONSES) else {
        return;
    };
    let file = stack.write("rnotify.csv", &responses("rnotify", 100, 0));
    a_failing_notifier_alone(&stack, &file, "2026-11-11", &["response-importer"]);
    let state = stack.json(&["local", "qualtrics"]);
    assert_eq!(unique(&imported(&state, "rnotify-")), (100, 100));
}

/// How many responses, and how many distinct `response_id`s among them.
fn unique(responses: &[&Value]) -> (usize, usize) {
    let ids: BTreeSet<&str> = responses
        .iter()
        .filter_map(|r| r["values"]["response_id"].as_str())
        .collect();
    (responses.len(), ids.len())
}

/// The survey's responses at the mock whose `response_id` starts with `prefix`.
fn imported<'a>(state: &'a Value, prefix: &str) -> Vec<&'a Value> {
    state["responses"]["SV_REPLACE_ME"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|r| {
                    r["values"]["response_id"]
                        .as_str()
                        .is_some_and(|id| id.starts_with(prefix))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_poison_response_batch_waits_in_the_dlq_until_a_redrive() {
    let Some((_turn, stack)) = Turn::take(RESPONSES) else {
        return;
    };
    let _faulty = Faulty(&stack);
    set_faults(&stack, "poison = [\"rpoison-00107\"]\n");
    let file = stack.write("rpoison.csv", &responses("rpoison", 300, 0));
    let summary = stack.run(&file, "2026-11-09");
    assert_eq!(summary["status"], "failed", "{summary:#}");
    // The emulator computes no CloudWatch metric: this is the attribute the alarm watches.
    assert_eq!(
        summary["steps"]["response-importer"]["dlq_depth"], 1,
        "{summary:#}"
    );
    let state = stack.json(&["local", "qualtrics"]);
    assert_eq!(
        imported(&state, "rpoison").len(),
        200,
        "the two good batches are in"
    );

    set_faults(&stack, "");
    assert_ok(
        &stack.xtask(&["redrive", "response-importer"]),
        "cargo xtask redrive response-importer",
    );
    let settled = stack.json(&["local", "wait", "--timeout", "300"]);
    assert_eq!(settled["status"], "complete", "{settled:#}");
    let state = stack.json(&["local", "qualtrics"]);
    let ids: BTreeSet<&str> = imported(&state, "rpoison")
        .iter()
        .filter_map(|r| r["values"]["response_id"].as_str())
        .collect();
    assert_eq!(
        (imported(&state, "rpoison").len(), ids.len()),
        (300, 300),
        "the redriven batch is in, once"
    );
}

#[test]
fn a_response_replay_changes_nothing_and_a_backfill_takes_its_own_dates_data() {
    let Some((_turn, stack)) = Turn::take(RESPONSES) else {
        return;
    };
    let week_ago = stack.run(
        &stack.write("rweek.csv", &responses("rweek", 300, 0)),
        "2026-10-28",
    );
    let today = stack.run(
        &stack.write("rtoday.csv", &responses("rtoday", 500, 0)),
        "2026-11-05",
    );
    assert_eq!(
        (&week_ago["status"], &today["status"]),
        (&"complete".into(), &"complete".into())
    );
    // What a replay may not change: the responses and the imports that made them.
    let effects = |state: &Value| {
        (
            state["responses"].clone(),
            state["response_imports"].as_array().map(Vec::len),
        )
    };
    let before = stack.json(&["local", "qualtrics"]);
    assert_eq!(imported(&before, "rweek").len(), 300);
    assert_eq!(imported(&before, "rtoday").len(), 500);

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
    let now = emulator_status(&stack);
    let delta = |step: &str| {
        function(&now, step)["messages_succeeded"].as_u64().unwrap()
            - function(&counts, step)["messages_succeeded"]
                .as_u64()
                .unwrap()
    };
    assert_eq!(delta("validator"), 1, "one run had raw data in those dates");
    assert_eq!(
        delta("response-importer"),
        3,
        "the week-old run's 3 batches, not today's 5"
    );
    assert_eq!(
        effects(&stack.json(&["local", "qualtrics"])),
        effects(&before),
        "nothing new at Qualtrics"
    );
}

/// `replay --from-step exporter` delivers a lost export again and announces the run again,
/// sending the exporter the inputs it kept, without validating or importing anything again.
#[test]
fn a_replay_from_the_exporter_exports_the_run_again_and_imports_nothing() {
    let Some((_turn, stack)) = Turn::take(RESPONSES) else {
        return;
    };
    let file = stack.write("rexport.csv", &responses("rexport", 250, 0));
    let summary = stack.run(&file, "2026-11-12");
    assert_eq!(summary["status"], "complete", "{summary:#}");
    let run_id = summary["run_id"].as_str().unwrap();
    let export = |code: &str| {
        boto3(
            &stack,
            &format!(
                "s3 = client('s3')\n\
                 bucket = [b['Name'] for b in s3.list_buckets()['Buckets'] if b['Name'].endswith('-data')][0]\n\
                 key = 'exports/2026-11-12/{run_id}/responses.zip'\n{code}\n"
            ),
        )
    };
    let listed = "print(s3.list_objects_v2(Bucket=bucket, Prefix=key).get('KeyCount', 0))";
    assert_eq!(export(listed).trim(), "1", "the run was exported");
    // The client lost the file.
    export("s3.delete_object(Bucket=bucket, Key=key)");
    let before = (emulator_status(&stack), stack.json(&["local", "qualtrics"]));
    let sent = format!(
        "print(s3.get_object(Bucket=bucket, Key='runs/2026-11-12/{run_id}/notifier/completed-sent.json')['Body'].read().decode())"
    );
    let announced = export(&sent);
    assert!(announced.contains("message_id"), "{announced}");

    let args = ["replay", "--run", run_id, "--from-step", "exporter"];
    let dry = stack.xtask(&[&args[..], &["--dry-run"]].concat());
    assert_ok(&dry, "cargo xtask replay --from-step exporter --dry-run");
    let said = String::from_utf8_lossy(&dry.stdout);
    for line in [
        format!("Would run again, for run {run_id}: exporter, notifier."),
        "Would not send the raw copy: no step run again reads validator.".to_owned(),
        "Would send exporter 3 inputs it kept.".to_owned(),
    ] {
        assert!(said.contains(&line), "{line:?} in {said}");
    }
    let result = format!(
        "print(s3.list_objects_v2(Bucket=bucket, Prefix='runs/2026-11-12/{run_id}/exporter/result.json').get('KeyCount', 0))"
    );
    assert_eq!(export(&result).trim(), "1", "a dry run clears nothing");

    // What a replay cut short leaves: `runs` says so, and the replay run again finishes it.
    let unfinished = || {
        let runs = stack.json(&["runs", "--json"]);
        let run = (runs.as_array().unwrap().iter())
            .find(|r| r["run_id"] == run_id)
            .cloned()
            .unwrap_or_else(|| panic!("{run_id} is not listed: {runs:#}"));
        run["replay_unfinished"].as_bool().unwrap()
    };
    assert!(!unfinished());
    export(&format!(
        "s3.put_object(Bucket=bucket, Key='runs/2026-11-12/{run_id}/replay.json', Body=b'[]')"
    ));
    assert!(unfinished());

    assert_ok(
        &stack.xtask(&args),
        "cargo xtask replay --from-step exporter",
    );
    let settled = stack.json(&["local", "wait", "--timeout", "300"]);
    assert_eq!(settled["status"], "complete", "{settled:#}");

    assert_eq!(export(listed).trim(), "1", "the export is back");
    assert!(!unfinished(), "the finished replay removed its stash");
    let after = (emulator_status(&stack), stack.json(&["local", "qualtrics"]));
    let delta = |step: &str, counter: &str| {
        function(&after.0, step)[counter].as_u64().unwrap()
            - function(&before.0, step)[counter].as_u64().unwrap()
    };
    assert_eq!(
        delta("validator", "messages_received"),
        0,
        "nothing validated"
    );
    assert_eq!(
        delta("response-importer", "messages_received"),
        0,
        "nothing imported"
    );
    assert_eq!(
        delta("exporter", "messages_succeeded"),
        3,
        "the three batches' inputs the exporter kept, sent again"
    );
    // The exporter's deliveries race for its claim, and a loser re-emits the stored result,
    // which the notifier's ledger then skips: count the announcement, not the messages.
    assert!(delta("notifier", "messages_succeeded") >= 1);
    assert_ne!(
        export(&sent),
        announced,
        "announced again, by another message"
    );
    let exports = |state: &Value| state["exports"].as_array().map_or(0, Vec::len);
    assert_eq!(
        exports(&after.1),
        exports(&before.1) + 1,
        "exported again, once"
    );
    assert_eq!(
        (&after.1["responses"], &after.1["response_imports"]),
        (&before.1["responses"], &before.1["response_imports"]),
        "a re-export changed the responses"
    );

    // A step the pipeline does not have is refused, naming those it has.
    let refused = stack.xtask(&["replay", "--run", run_id, "--from-step", "nope"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("no step \"nope\"") && err.contains("exporter"),
        "{err}"
    );
}
