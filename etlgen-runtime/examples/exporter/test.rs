//! Exercises the `export` hooks without a network.
#[path = "hooks.rs"]
mod hooks;

use etlgen_runtime::config::ConfigSources;
use etlgen_runtime::kinds::exporter::{ExportWritten, Exporter};
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
async fn the_export_lands_where_the_hook_says() {
    let h = Harness::<Exporter<hooks::ClientHooks>>::from_sources("export", &CONFIG, "dev");
    h.qualtrics
        .on(
            Method::Post,
            "surveys/SV_example/export-responses",
            json!({"progressId": "ES_1", "status": "inProgress"}),
        )
        .on(
            Method::Get,
            "surveys/SV_example/export-responses/ES_1",
            json!({"status": "complete", "fileId": "F_1"}),
        )
        .on_bytes(
            Method::Get,
            "surveys/SV_example/export-responses/F_1/file",
            "PK-zip-bytes",
        );
    assert!(
        h.deliver(&h.envelope("distribution", json!({"distribution_id": "EMD_1"})))
            .await
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(
        h.objects
            .text("acme-inbox", "nps/2024-05-01.zip")
            .as_deref(),
        Some("PK-zip-bytes")
    );
    let start = &h
        .qualtrics
        .requests_to(Method::Post, "surveys/*/export-responses")[0];
    let Body::Json(body) = &start.body else {
        panic!("JSON body expected")
    };
    assert_eq!(body["startDate"], "2024-05-01T00:00:00Z");
    assert_eq!(body["endDate"], "2024-05-02T00:00:00Z");
    assert_eq!(h.emitted::<ExportWritten>()[0].payload.bytes, 12);
}
