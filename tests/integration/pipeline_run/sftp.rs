//! The contact pipeline fed from an SFTP server: `local up` starts OpenSSH's sshd on
//! loopback, the poller Lambda logs in with a key and a pinned host key, copies each new
//! file to the landing prefix under its tick's logical date, and the S3 notification starts
//! the validator. The contact scenarios, and the poller's own retry safety: a tick
//! delivered twice copies a file once, and a tick with nothing new starts nothing.

use serde_json::Value;

use super::contacts::{self, contacts, contacts_of, distributions_to, run_list};
use super::{Stack, Turn, a_failing_notifier_alone, boto3, emulator_status, function};
use crate::tools::on_path;

/// The default services and a notifier, from an SFTP source.
const SFTP: &str = r#"
client = "e2e-sftp"
source = "sftp"

[[steps]]
kind = "validator"

[[steps]]
kind = "contact-importer"

[[steps]]
kind = "distribution-scheduler"

[[steps]]
kind = "notifier"
"#;

/// The SFTP pipeline's stack, which needs OpenSSH's server (scripts/test installs it).
fn take() -> Option<(Turn, Stack)> {
    assert!(
        on_path("sshd").is_some() || std::path::Path::new("/usr/sbin/sshd").is_file(),
        "OpenSSH's sshd is not installed: run scripts/test, which installs it \
         (Debian: apt-get install openssh-server)"
    );
    Turn::take(SFTP)
}

#[test]
fn the_sftp_pipeline_imports_every_valid_contact_once() {
    let Some((_turn, stack)) = take() else {
        return;
    };
    contacts::every_valid_contact_arrives_once(&stack, "sftp");
}

#[test]
fn the_sftp_pipeline_survives_429s_500s_and_a_killed_step() {
    let Some((_turn, stack)) = take() else {
        return;
    };
    contacts::every_contact_arrives_once_under_faults_and_a_kill(&stack, "sftp");
}

#[test]
fn the_sftp_pipelines_poison_batch_waits_in_the_dlq_until_a_redrive() {
    let Some((_turn, stack)) = take() else {
        return;
    };
    contacts::a_poison_batch_waits_in_the_dlq_until_a_redrive(&stack);
}

#[test]
fn the_sftp_pipelines_replay_changes_nothing_and_its_backfill_takes_its_own_date() {
    let Some((_turn, stack)) = take() else {
        return;
    };
    contacts::a_replay_changes_nothing_and_a_backfill_takes_its_own_dates_data(&stack);
}

#[test]
fn a_failing_notifier_never_triggers_the_sftp_pipelines_imports_again() {
    let Some((_turn, stack)) = take() else {
        return;
    };
    let file = stack.write("notify.csv", &contacts("notify", 100, 0));
    let summary = a_failing_notifier_alone(
        &stack,
        &file,
        "2026-11-07",
        &[
            "sftp-poller",
            "validator",
            "contact-importer",
            "distribution-scheduler",
        ],
    );
    let state = stack.json(&["local", "qualtrics"]);
    let lists = run_list(&state, summary["run_id"].as_str().unwrap());
    assert_eq!(lists.len(), 1);
    assert!(contacts_of(lists[0]).iter().all(|c| c["writes"] == 1));
    assert_eq!(
        distributions_to(&state, lists[0]["id"].as_str().unwrap()),
        1
    );
}

/// Sends the poller a schedule tick, as EventBridge Scheduler would, `copies` times (the
/// scheduler delivers at least once, so the same tick may come twice).
fn tick(stack: &Stack, scheduled_time: &str, copies: usize) {
    boto3(
        stack,
        &format!(
            "sqs = client('sqs')\n\
             url = [u for u in sqs.list_queues()['QueueUrls'] if u.endswith('-sftp-poller.fifo')][0]\n\
             body = json.dumps({{'source': 'schedule', 'schedule': 'test', \
             'scheduled_time': {scheduled_time:?}, 'execution_id': 'tick-{scheduled_time}'}})\n\
             for copy in range({copies}):\n    \
             sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId='e2e-sftp', \
             MessageDeduplicationId=f'{scheduled_time}-{{copy}}')\n"
        ),
    );
}

/// The mock's mailing lists that hold the contact `ext_ref`.
fn lists_with<'a>(state: &'a Value, ext_ref: &str) -> Vec<&'a Value> {
    state["mailing_lists"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["contacts"].as_object().unwrap().contains_key(ext_ref))
        .collect()
}

#[test]
fn a_tick_delivered_twice_copies_a_file_once_and_a_tick_with_nothing_new_starts_nothing() {
    let Some((_turn, stack)) = take() else {
        return;
    };
    fs_err::write(
        stack.root.join(".local/sftp/inbox/twice.csv"),
        contacts("twice", 150, 0),
    )
    .unwrap();
    let before = emulator_status(&stack);
    tick(&stack, "2026-11-12T06:00:00Z", 2);
    let settled = stack.json(&["local", "wait", "--timeout", "300"]);
    assert_eq!(settled["status"], "complete", "{settled:#}");
    let after = emulator_status(&stack);
    let delta = |now: &Value, from: &Value, step: &str, counter: &str| {
        function(now, step)[counter].as_u64().unwrap()
            - function(from, step)[counter].as_u64().unwrap()
    };
    assert_eq!(
        delta(&after, &before, "sftp-poller", "messages_succeeded"),
        2,
        "both ticks handled"
    );
    assert_eq!(
        delta(&after, &before, "validator", "messages_received"),
        1,
        "the file copied once, so one run"
    );
    let state = stack.json(&["local", "qualtrics"]);
    let lists = lists_with(&state, "twice-00000");
    assert_eq!(lists.len(), 1, "one run, one mailing list");
    let imported = lists[0]["contacts"].as_object().unwrap();
    assert_eq!(imported.len(), 150);
    assert!(imported.values().all(|c| c["writes"] == 1));
    let landed = boto3(
        &stack,
        "s3 = client('s3')\n\
         bucket = [b['Name'] for b in s3.list_buckets()['Buckets'] if b['Name'].endswith('-data')][0]\n\
         for o in s3.list_objects_v2(Bucket=bucket, Prefix='landing/').get('Contents', []):\n    \
         print(o['Key'])\n",
    );
    // `landing/<date>/<copy id>/<file>`, once, though two ticks copied it.
    let copies: Vec<&str> = landed
        .lines()
        .filter(|k| k.ends_with("/twice.csv"))
        .collect();
    assert_eq!(copies.len(), 1, "one copy: {landed}");
    assert!(
        copies[0].starts_with("landing/2026-11-12/"),
        "the file lands under its tick's logical date: {landed}"
    );

    tick(&stack, "2026-11-13T06:00:00Z", 1);
    let settled = stack.json(&["local", "wait", "--timeout", "300"]);
    assert_eq!(settled["status"], "complete", "{settled:#}");
    let last = emulator_status(&stack);
    assert_eq!(delta(&last, &after, "sftp-poller", "messages_succeeded"), 1);
    assert_eq!(
        delta(&last, &after, "validator", "messages_received"),
        0,
        "every file on the server was copied before: no new run"
    );
}
