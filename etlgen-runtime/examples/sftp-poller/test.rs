//! Exercises the `poll-sftp` hooks without a network.
#[path = "hooks.rs"]
mod hooks;

use etlgen_runtime::config::ConfigSources;
use etlgen_runtime::kinds::sources::SftpPoller;
use etlgen_runtime::kinds::sources::sftp::copy_id;
use etlgen_runtime::ports::RemoteFile;
use etlgen_runtime::testing::Harness;

const CONFIG: ConfigSources = ConfigSources {
    default: include_str!("../config/default.toml"),
    environments: &[
        ("dev", include_str!("../config/dev.toml")),
        ("prod", include_str!("../config/prod.toml")),
    ],
};

#[tokio::test]
async fn new_files_are_copied_once_and_temporary_ones_skipped() {
    let h = harness();
    h.sftp.insert("/outbox/contacts.csv", "id\n1\n", 100);
    h.sftp.insert("/outbox/tmp_contacts.csv", "id\n", 100);
    h.sftp.insert("/outbox/readme.txt", "hi", 100);
    assert!(h.deliver_body("{}").await.batch_item_failures.is_empty());
    let bucket = h.data_bucket().to_owned();
    let landed = h.objects.keys(&bucket, "landing/");
    assert_eq!(landed, [landing("/outbox/contacts.csv", "id\n1\n", 100)]);

    h.objects.insert(&bucket, &landed[0], "already processed");
    // Another tick (a message of its own, so its ledger entry does not skip it).
    assert_eq!(tick(&h, 2).await, 0);
    assert_eq!(
        h.objects.text(&bucket, &landed[0]).as_deref(),
        Some("already processed"),
        "not copied twice"
    );
}

/// Where the poller remembers the files it copied.
const COPIED: &str = "state/acme-nps/poll-sftp/copied/";

/// Where the default `landing_key` puts a remote file for the harness's date.
fn landing(path: &str, body: &str, modified: u64) -> String {
    let file = RemoteFile {
        path: path.into(),
        size: body.len() as u64,
        modified,
    };
    let name = path.rsplit('/').next().unwrap_or(path);
    format!("landing/2024-05-01/{}/{name}", copy_id("acme-nps", &file))
}

fn harness() -> Harness<SftpPoller<hooks::ClientHooks>> {
    Harness::from_sources("poll-sftp", &CONFIG, "dev")
}

/// Delivers schedule tick number `n`: each tick is a message of its own, as EventBridge
/// Scheduler sends them; the failed message ids.
async fn tick(h: &Harness<SftpPoller<hooks::ClientHooks>>, n: u32) -> usize {
    let event = etlgen_runtime::testing::sqs_message(&format!("tick-{n}"), "{}");
    h.runner.handle_event(event).await.batch_item_failures.len()
}

#[tokio::test]
async fn a_file_that_landed_before_its_marker_is_not_uploaded_again() {
    let h = harness();
    h.sftp.insert("/outbox/contacts.csv", "id\n1\n", 100);
    let key = landing("/outbox/contacts.csv", "id\n1\n", 100);
    let bucket = h.data_bucket().to_owned();
    // A tick killed between its upload and its marker left the object and no marker.
    h.objects
        .insert(&bucket, &key, "uploaded by the attempt that died");
    assert_eq!(tick(&h, 1).await, 0);
    assert_eq!(
        h.objects.text(&bucket, &key).as_deref(),
        Some("uploaded by the attempt that died"),
        "not uploaded again, which under SSE-KMS would start a second run"
    );
    assert_eq!(
        h.objects.keys(&bucket, "landing/"),
        std::slice::from_ref(&key)
    );
    let markers = h.objects.keys(&bucket, COPIED);
    assert_eq!(markers.len(), 1, "{markers:?}");
    assert_eq!(h.objects.text(&bucket, &markers[0]), Some(key));
}

#[tokio::test]
async fn a_file_still_being_written_waits_for_a_later_tick() {
    let h = harness();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    h.sftp.insert("/outbox/contacts.csv", "id\n1\n", now);
    assert_eq!(tick(&h, 1).await, 0);
    let bucket = h.data_bucket().to_owned();
    assert!(
        h.objects.keys(&bucket, "landing/").is_empty(),
        "copied half written"
    );
    assert!(h.objects.keys(&bucket, COPIED).is_empty());

    // Done being written (a minute and more ago): the next tick copies it.
    h.sftp
        .insert("/outbox/contacts.csv", "id\n1\n2\n", now - 61);
    assert_eq!(tick(&h, 2).await, 0);
    assert_eq!(
        h.objects.keys(&bucket, "landing/"),
        [landing("/outbox/contacts.csv", "id\n1\n2\n", now - 61)]
    );
}

#[tokio::test]
async fn an_unreadable_file_does_not_hold_back_the_others() {
    let h = harness();
    h.sftp.insert("/outbox/a.csv", "id\n1\n", 100);
    h.sftp.insert("/outbox/b.csv", "id\n2\n", 100);
    h.sftp.insert("/outbox/c.csv", "id\n3\n", 100);
    h.sftp.deny("/outbox/a.csv");
    assert_eq!(tick(&h, 1).await, 1, "retried, so it reaches the DLQ");
    let bucket = h.data_bucket().to_owned();
    let mut copied = vec![
        landing("/outbox/b.csv", "id\n2\n", 100),
        landing("/outbox/c.csv", "id\n3\n", 100),
    ];
    copied.sort();
    assert_eq!(h.objects.keys(&bucket, "landing/"), copied);
    assert_eq!(h.objects.keys(&bucket, COPIED).len(), 2);
}
