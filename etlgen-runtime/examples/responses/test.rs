//! Exercises the `import-responses` hooks without a network.
#[path = "hooks.rs"]
mod hooks;

use etlgen_runtime::config::ConfigSources;
use etlgen_runtime::kinds::RecordBatch;
use etlgen_runtime::kinds::responses::{ResponseImporter, ResponsesImported};
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

#[tokio::test(start_paused = true)]
async fn responses_are_imported_once_with_the_envelope_key() {
    let h = Harness::<ResponseImporter<hooks::ClientHooks>>::from_sources(
        "import-responses",
        &CONFIG,
        "dev",
    );
    h.qualtrics
        .on(
            Method::Post,
            "surveys/SV_example/import-responses",
            json!({"progressId": "PR_1", "percentComplete": 0, "status": "inProgress"}),
        )
        .on(
            Method::Get,
            "surveys/SV_example/import-responses/PR_1",
            json!({"status": "inProgress"}),
        )
        .on(
            Method::Get,
            "surveys/SV_example/import-responses/PR_1",
            json!({"status": "complete"}),
        );
    let record = json!({"id": "7", "score": 9});
    let input = h.envelope(
        "batch-000001",
        RecordBatch {
            records: vec![record.as_object().unwrap().clone()],
        },
    );
    assert!(h.deliver(&input).await.batch_item_failures.is_empty());
    assert!(
        h.deliver(&input).await.batch_item_failures.is_empty(),
        "redelivered"
    );

    let posts = h
        .qualtrics
        .requests_to(Method::Post, "surveys/*/import-responses");
    assert_eq!(posts.len(), 1, "the ledger skips the redelivery");
    let key = posts[0]
        .headers
        .iter()
        .find(|(n, _)| n == "Idempotency-Key")
        .map(|(_, v)| v.clone());
    assert_eq!(key, Some(input.idempotency_key.to_string()));
    assert_eq!(
        posts[0].body,
        Body::Text {
            content_type: "text/csv".into(),
            text: "Q1,id\n9,7\n".into()
        }
    );
    let out = h.emitted::<ResponsesImported>();
    assert_eq!(out[0].payload.status, "complete");
}
