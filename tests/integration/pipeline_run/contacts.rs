//! The scenarios every contact pipeline (validator, contact importer, distribution
//! scheduler) must pass, whatever its source: each a function a pipeline's module calls
//! from its own tests, on its own stack.

use std::time::Instant;

use serde_json::Value;

use super::{Faulty, Stack, emulator_status, function, rejected_rows, run_killing, set_faults};
use crate::tools::assert_ok;

/// `n` contacts, `bad` of them with an invalid e-mail, ids prefixed `prefix`.
pub(super) fn contacts(prefix: &str, n: usize, bad: usize) -> String {
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
pub(super) fn run_list<'a>(state: &'a Value, run_id: &str) -> Vec<&'a Value> {
    state["mailing_lists"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["name"].as_str().is_some_and(|n| n.ends_with(run_id)))
        .collect()
}

pub(super) fn contacts_of(list: &Value) -> Vec<&Value> {
    list["contacts"].as_object().unwrap().values().collect()
}

pub(super) fn distributions_to(state: &Value, list_id: &str) -> usize {
    state["distributions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["mailing_list_id"] == list_id)
        .count()
}

/// 10,000 rows, 50 of them invalid: every valid contact once, one mailing list, one
/// distribution after every batch, the 50 rejects in the report with their reasons, and no
/// call beyond those needed.
pub(super) fn every_valid_contact_arrives_once(stack: &Stack, pipeline: &str) {
    let file = stack.write("happy.csv", &contacts("happy", 10_000, 50));
    let started = Instant::now();
    let summary = stack.run(&file, "2026-11-02");
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(summary["status"], "complete", "{summary:#}");
    assert_eq!(summary["rows_in"], 10_000);
    assert_eq!(summary["rows_rejected"], 50);
    let run_id = summary["run_id"].as_str().unwrap();
    let reports = rejected_rows(stack, "2026-11-02", run_id);
    let rejects: Vec<&str> = reports.lines().filter(|l| l.contains("happy-")).collect();
    assert_eq!(rejects.len(), 50, "{reports}");
    assert!(
        rejects
            .iter()
            .all(|r| r.contains("not-an-email") && r.contains("is not an e-mail address")),
        "each reject names its reason: {reports}"
    );
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
        "{pipeline} happy path: 10000 rows in {seconds:.1} s ({:.0} rows/s end to end); API calls {calls} made, {needed} needed; {} retried",
        10_000.0 / seconds,
        summary["api"]["faulted"]
    );
    assert_eq!(
        calls, needed as u64,
        "no call beyond those needed without faults"
    );
}

/// 10% 429s and 10% 500s, and the importer killed mid-batch once: still one list, every
/// contact once, one distribution, and nothing in any DLQ.
pub(super) fn every_contact_arrives_once_under_faults_and_a_kill(stack: &Stack, pipeline: &str) {
    let _faulty = Faulty(stack);
    set_faults(
        stack,
        "rate_429 = 0.1\nrate_500 = 0.1\nretry_after_seconds = 1\nseed = 7\n",
    );
    let file = stack.write("flaky.csv", &contacts("flaky", 2_000, 0));
    let (summary, seconds) = run_killing(stack, &file, "2026-11-03", "contact-importer");
    assert_eq!(summary["status"], "complete", "{summary:#}");
    for (step, info) in summary["steps"].as_object().unwrap() {
        assert_eq!(info["dlq_depth"], 0, "{step} has dead letters");
    }
    let run_id = summary["run_id"].as_str().unwrap();
    let state = stack.json(&["local", "qualtrics"]);
    let lists = run_list(&state, run_id);
    assert_eq!(lists.len(), 1, "one mailing list, despite the crash");
    let imported = contacts_of(lists[0]);
    assert_eq!(imported.len(), 2_000, "every contact (upserted on extRef)");
    // The API documents no Idempotency-Key for contact imports, so a batch the crash
    // interrupted after its import is sent again: whole, and only as updates on extRef.
    let list_id = lists[0]["id"].as_str().unwrap();
    let imports: Vec<&Value> = state["contact_imports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["mailing_list_id"] == list_id)
        .collect();
    let sum = |field: &str| {
        imports
            .iter()
            .map(|i| i[field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(sum("added"), 2_000, "each contact created once");
    assert_eq!(
        sum("updated"),
        100 * (imports.len() as u64 - 20),
        "every import beyond the 20 batches re-sent a whole batch as updates"
    );
    let written: u64 = imported.iter().map(|c| c["writes"].as_u64().unwrap()).sum();
    assert_eq!(written, sum("added") + sum("updated"));
    assert_eq!(distributions_to(&state, list_id), 1);
    let (calls, faulted) = (
        summary["api"]["calls"].as_u64().unwrap(),
        summary["api"]["faulted"].as_u64().unwrap(),
    );
    assert!(faulted > 0, "faults were injected");
    println!(
        "{pipeline} under faults: 2000 rows in {seconds:.1} s; API calls {calls} made, {} needed; {faulted} retried after a fault",
        1 + 2 * 20 + 1
    );
}

/// A batch that always fails lands in the importer's DLQ, the distribution waits for it,
/// and once the fault is gone a redrive completes the run.
pub(super) fn a_poison_batch_waits_in_the_dlq_until_a_redrive(stack: &Stack) {
    let _faulty = Faulty(stack);
    set_faults(stack, "poison = [\"poison-00007\"]\n");
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

    set_faults(stack, "");
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

/// A replay of a completed run changes nothing at Qualtrics; a backfill over a week-old date
/// replays that date's raw data (3 batches), not today's (5).
pub(super) fn a_replay_changes_nothing_and_a_backfill_takes_its_own_dates_data(stack: &Stack) {
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

    let counts = emulator_status(stack);
    let backfill = stack.xtask(&["backfill", "--from", "2026-10-27", "--to", "2026-10-29"]);
    assert_ok(&backfill, "cargo xtask backfill");
    let settled = stack.json(&["local", "wait", "--timeout", "300"]);
    assert_eq!(settled["status"], "complete", "{settled:#}");
    let delta = |step: &str| {
        let now = emulator_status(stack);
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
