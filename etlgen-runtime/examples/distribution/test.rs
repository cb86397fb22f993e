//! Exercises the `invite` hooks without a network.
#[path = "hooks.rs"]
mod hooks;

use etlgen_runtime::config::ConfigSources;
use etlgen_runtime::kinds::contacts::ContactsImported;
use etlgen_runtime::kinds::distribution::{DistributionScheduled, DistributionScheduler};
use etlgen_runtime::qualtrics::{Body, Method};
use etlgen_runtime::serde_json::json;
use etlgen_runtime::testing::Harness;

const CONFIG: ConfigSources = ConfigSources {
    default: include_str!("../config/default.toml"),
    environments: &[
        ("dev", include_str!("../config/dev.toml")),
        ("prod", include_str!("../config/prod.toml")),
    ],
};

type Step = DistributionScheduler<hooks::ClientHooks>;

fn imported() -> ContactsImported {
    ContactsImported {
        mailing_list_id: "CG_1".into(),
        import_id: "PGRS_1".into(),
        added: 2,
        updated: 0,
        failed: 0,
    }
}

#[tokio::test]
async fn schedules_once_per_run_on_the_day_after_the_logical_date() {
    let h = Harness::<Step>::from_sources("invite", &CONFIG, "dev");
    h.qualtrics
        .on(Method::Post, "distributions", json!({"id": "EMD_1"}));
    let bucket = h.data_bucket().to_owned();
    // The validator sealed the run with two batches; only the first is imported so far.
    h.objects.insert(
        &bucket,
        "runs/2024-05-01/run-1/manifest.json",
        r#"{"batches":2,"valid":150,"rejected":0}"#,
    );
    h.objects.insert(
        &bucket,
        "runs/2024-05-01/run-1/batches/batch-000001.json",
        "{}",
    );
    let first = h.envelope("batch-000001", imported());
    assert!(h.deliver(&first).await.batch_item_failures.is_empty());
    assert!(h.qualtrics.requests().is_empty(), "waits for every batch");

    h.objects.insert(
        &bucket,
        "runs/2024-05-01/run-1/batches/batch-000002.json",
        "{}",
    );
    let second = h.envelope("batch-000002", imported());
    assert!(h.deliver(&second).await.batch_item_failures.is_empty());
    assert!(
        h.deliver(&second).await.batch_item_failures.is_empty(),
        "a redelivery is harmless"
    );

    let posts = h.qualtrics.requests_to(Method::Post, "distributions");
    assert_eq!(posts.len(), 1);
    let Body::Json(body) = &posts[0].body else {
        panic!("JSON body expected")
    };
    assert_eq!(
        body["sendDate"], "2024-05-02T09:00:00Z",
        "the hook moved it one day"
    );
    assert_eq!(body["recipients"]["mailingListId"], "CG_1");
    let out = h.emitted::<DistributionScheduled>();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].payload.distribution_id, "EMD_1");
    assert_eq!(out[0].step, "notify");
}
