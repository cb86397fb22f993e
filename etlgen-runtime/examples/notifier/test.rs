//! Exercises the `notify` hooks without a network.
#[path = "hooks.rs"]
mod hooks;

use etlgen_runtime::config::ConfigSources;
use etlgen_runtime::kinds::notifier::Notifier;
use etlgen_runtime::serde_json::json;
use etlgen_runtime::testing::Harness;

const CONFIG: ConfigSources = ConfigSources {
    default: include_str!("../config/default.toml"),
    environments: &[
        ("dev", include_str!("../config/dev.toml")),
        ("prod", include_str!("../config/prod.toml")),
    ],
};

#[tokio::test]
async fn only_failures_are_published() {
    let h = Harness::<Notifier<hooks::ClientHooks>>::from_sources("notify", &CONFIG, "dev");
    assert!(
        h.deliver(&h.envelope("ok", json!({"status": "complete"})))
            .await
            .batch_item_failures
            .is_empty()
    );
    assert!(h.notifications.published().is_empty());
    assert!(
        h.deliver(&h.envelope("bad", json!({"status": "failed"})))
            .await
            .batch_item_failures
            .is_empty()
    );
    let published = h.notifications.published();
    assert_eq!(published.len(), 1);
    assert!(published[0].0.ends_with("acme-nps-dev-notifications"));
    assert!(published[0].1.contains("failed"), "{}", published[0].1);
}
