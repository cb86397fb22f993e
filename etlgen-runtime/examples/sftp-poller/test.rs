//! Exercises the `poll-sftp` hooks without a network.
#[path = "hooks.rs"]
mod hooks;

use etlgen_runtime::config::ConfigSources;
use etlgen_runtime::kinds::sources::SftpPoller;
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
    let h = Harness::<SftpPoller<hooks::ClientHooks>>::from_sources("poll-sftp", &CONFIG, "dev");
    h.sftp.insert("/outbox/contacts.csv", "id\n1\n", 100);
    h.sftp.insert("/outbox/tmp_contacts.csv", "id\n", 100);
    h.sftp.insert("/outbox/readme.txt", "hi", 100);
    assert!(h.deliver_body("{}").await.batch_item_failures.is_empty());
    let bucket = h.data_bucket().to_owned();
    assert_eq!(
        h.objects.keys(&bucket, "landing/"),
        ["landing/2024-05-01/contacts.csv"]
    );

    h.objects.insert(
        &bucket,
        "landing/2024-05-01/contacts.csv",
        "already processed",
    );
    let tick = etlgen_runtime::testing::sqs_event(&["{\"tick\":2}"]);
    assert!(
        h.runner
            .handle_event(tick)
            .await
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(
        h.objects
            .text(&bucket, "landing/2024-05-01/contacts.csv")
            .as_deref(),
        Some("already processed"),
        "not copied twice"
    );
}
