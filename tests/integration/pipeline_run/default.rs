//! The default pipeline (S3 source, validator, contact importer, distribution scheduler),
//! plus a notifier: the contact scenarios, and a notifier that fails alone.

use super::contacts::{self, contacts, contacts_of, distributions_to, run_list};
use super::{Turn, a_failing_notifier_alone};

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

#[test]
fn the_default_pipeline_imports_every_valid_contact_once_and_reports_the_rejects() {
    let Some((_turn, stack)) = Turn::take(PIPELINE) else {
        return;
    };
    contacts::every_valid_contact_arrives_once(&stack, "default");
}

#[test]
fn under_429s_500s_and_a_killed_step_every_contact_still_arrives_once() {
    let Some((_turn, stack)) = Turn::take(PIPELINE) else {
        return;
    };
    contacts::every_contact_arrives_once_under_faults_and_a_kill(&stack, "default");
}

#[test]
fn a_poison_message_reaches_the_dlq_and_a_redrive_completes_the_run() {
    let Some((_turn, stack)) = Turn::take(PIPELINE) else {
        return;
    };
    contacts::a_poison_batch_waits_in_the_dlq_until_a_redrive(&stack);
}

#[test]
fn a_replay_changes_nothing_and_a_backfill_processes_its_own_dates_raw_data() {
    let Some((_turn, stack)) = Turn::take(PIPELINE) else {
        return;
    };
    contacts::a_replay_changes_nothing_and_a_backfill_takes_its_own_dates_data(&stack);
}

#[test]
fn a_failing_notifier_never_triggers_the_imports_again() {
    let Some((_turn, stack)) = Turn::take(PIPELINE) else {
        return;
    };
    let file = stack.write("notify.csv", &contacts("notify", 100, 0));
    let summary = a_failing_notifier_alone(
        &stack,
        &file,
        "2026-11-07",
        &["contact-importer", "distribution-scheduler"],
    );
    let state = stack.json(&["local", "qualtrics"]);
    let lists = run_list(&state, summary["run_id"].as_str().unwrap());
    assert_eq!(lists.len(), 1);
    assert!(
        contacts_of(lists[0]).iter().all(|c| c["writes"] == 1),
        "a contact imported again"
    );
    assert_eq!(
        distributions_to(&state, lists[0]["id"].as_str().unwrap()),
        1
    );
}
