//! Exercises the `validate` hooks without a network.
#[path = "hooks.rs"]
mod hooks;

use etlgen_runtime::config::ConfigSources;
use etlgen_runtime::kinds::RecordBatch;
use etlgen_runtime::kinds::validator::Validator;
use etlgen_runtime::testing::Harness;

const CONFIG: ConfigSources = ConfigSources {
    default: include_str!("../config/default.toml"),
    environments: &[
        ("dev", include_str!("../config/dev.toml")),
        ("prod", include_str!("../config/prod.toml")),
    ],
};

const EVENT: &str = include_str!("../../tests/fixtures/s3-event.json");

#[tokio::test]
async fn a_landed_file_is_stored_raw_validated_and_batched() {
    let h = Harness::<Validator<hooks::ClientHooks>>::from_sources("validate", &CONFIG, "dev");
    let csv = "id,email,first_name\n1,ann@example.com,Ann\n2,bob@acme.example,Bob\n3,not-an-email,Cy\n1,dup@example.com,Dee\n";
    h.objects
        .insert("acme-landing", "landing/2024-05-01/contacts list.csv", csv);
    assert!(h.deliver_body(EVENT).await.batch_item_failures.is_empty());

    let bucket = h.data_bucket().to_owned();
    let raw = h.objects.keys(&bucket, "raw/2024-05-01/");
    assert_eq!(raw.len(), 1, "{raw:?}");
    assert_eq!(h.objects.text(&bucket, &raw[0]).as_deref(), Some(csv));

    let batches = h.emitted::<RecordBatch>();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].step, "import-contacts");
    let ids: Vec<_> = batches[0]
        .payload
        .records
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(ids, ["1"]);

    let reports = h.objects.keys(&bucket, "reports/2024-05-01/");
    let rejected = reports
        .iter()
        .find(|k| k.contains("rejected-"))
        .expect("a rejected-rows report");
    let report = h.objects.text(&bucket, rejected).unwrap();
    assert!(report.contains("internal address"), "{report}");
    assert!(report.contains("not an e-mail"), "{report}");
    assert!(report.contains("duplicate primary key"), "{report}");
}
