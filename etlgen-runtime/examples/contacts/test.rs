//! Exercises the `import-contacts` hooks without a network.
#[path = "hooks.rs"]
mod hooks;

use etlgen_runtime::config::ConfigSources;
use etlgen_runtime::kinds::RecordBatch;
use etlgen_runtime::kinds::contacts::{ContactImporter, ContactsImported};
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

#[tokio::test]
async fn the_batch_is_upserted_into_one_list_per_run() {
    let h = Harness::<ContactImporter<hooks::ClientHooks>>::from_sources(
        "import-contacts",
        &CONFIG,
        "dev",
    );
    h.qualtrics
        .on(Method::Post, "directories/POOL_example/mailinglists", json!({"id": "CG_1"}))
        .on(Method::Post, "directories/POOL_example/mailinglists/CG_1/transactioncontacts", json!({"id": "PGRS_1"}))
        .on(Method::Get, "directories/POOL_example/mailinglists/CG_1/transactioncontacts/PGRS_1",
            json!({"percentComplete": 100.0, "status": "complete", "contacts": {"count": {"added": 1, "updated": 0, "failed": 0}}}));
    let record =
        json!({"id": "42", "email": "ann@example.com", "first_name": "Ann", "tier": "gold"});
    let batch = RecordBatch {
        records: vec![record.as_object().unwrap().clone()],
    };
    assert!(
        h.deliver(&h.envelope("batch-000001", batch.clone()))
            .await
            .batch_item_failures
            .is_empty()
    );
    assert!(
        h.deliver(&h.envelope("batch-000002", batch))
            .await
            .batch_item_failures
            .is_empty()
    );

    assert_eq!(
        h.qualtrics
            .requests_to(Method::Post, "directories/*/mailinglists")
            .len(),
        1,
        "one list per run"
    );
    let imports = h.qualtrics.requests_to(
        Method::Post,
        "directories/*/mailinglists/*/transactioncontacts",
    );
    assert_eq!(imports.len(), 2);
    let Body::Json(body) = &imports[0].body else {
        panic!("JSON body expected")
    };
    let contact = &body["contacts"][0];
    assert_eq!(contact["extRef"], "42");
    assert_eq!(contact["firstName"], "Ann");
    assert_eq!(
        contact["embeddedData"],
        json!({"segment": "example.com", "tier": "gold"})
    );
    let out = h.emitted::<ContactsImported>();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].payload.mailing_list_id, "CG_1");
    assert_eq!(
        h.objects
            .keys(h.data_bucket(), "runs/2024-05-01/run-1/batches/")
            .len(),
        2
    );
}
