//! The default hooks of every kind, called directly and through the harness.

use etlgen_runtime::kinds::validator::{self, Source, Validator};
use etlgen_runtime::kinds::{
    RecordBatch, RunManifest, contacts, distribution, exporter, notifier, responses, sources,
};
use etlgen_runtime::ports::RemoteFile;
use etlgen_runtime::qualtrics::Method;
use etlgen_runtime::testing::Harness;
use etlgen_runtime::{Envelope, LogicalDate, RunId};
use serde_json::json;

#[derive(Debug, Default)]
struct Defaults;
impl validator::Hooks for Defaults {}
impl exporter::Hooks for Defaults {}

const VALIDATOR: &str = r#"
[pipeline]
name = "acme"
data_bucket = "data"
[steps.validate]
next_step = "load"
next_queue_url = "https://sqs.test/load"
batch_size = 2
columns = [{ name = "id", type = "integer", required = true }]
"#;

fn record(value: serde_json::Value) -> etlgen_runtime::kinds::Record {
    value.as_object().unwrap().clone()
}

fn envelope<T>(payload: T) -> Envelope<T> {
    Envelope::new(
        "acme",
        RunId::new("r1"),
        LogicalDate::from_ymd(2024, 5, 1).unwrap(),
        "s",
        "k",
        payload,
    )
}

#[tokio::test]
async fn an_http_submission_is_stored_raw_batched_and_sealed_before_its_last_batch() {
    let h = Harness::<Validator<Defaults>>::new("validate", VALIDATOR);
    let body = r#"{"logical_date":"2024-06-01","records":[{"id":"1"},{"id":"2"},{"id":"x"},{"id":"3"},{"id":"4"},{"id":"5"}]}"#;
    assert!(h.deliver_body(body).await.batch_item_failures.is_empty());
    let raw = h.objects.keys("data", "raw/2024-06-01/");
    assert_eq!(raw.len(), 1);
    assert!(raw[0].ends_with("/submission.jsonl"), "{raw:?}");
    let batches = h.emitted::<RecordBatch>();
    let sizes: Vec<_> = batches.iter().map(|b| b.payload.records.len()).collect();
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(
        batches[0].payload.records[0]["id"], 1,
        "converted to the declared type"
    );
    let keys: Vec<_> = batches.iter().map(|b| b.record_key.as_str()).collect();
    assert_eq!(keys, ["batch-000001", "batch-000002", "batch-000003"]);
    let run = &batches[0].run_id;
    let manifest: RunManifest = serde_json::from_str(
        &h.objects
            .text("data", &format!("runs/2024-06-01/{run}/manifest.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest,
        RunManifest {
            batches: 3,
            valid: 5,
            rejected: 1
        }
    );
    let report = h
        .objects
        .text(
            "data",
            &format!("reports/2024-06-01/{run}/validate/rejected-000001.csv"),
        )
        .unwrap();
    assert_eq!(
        report,
        "line,reason,record\n3,\"column \"\"id\"\": \"\"x\"\" is not an integer\",\"{\"\"id\"\":\"\"x\"\"}\"\n"
    );
}

#[tokio::test]
async fn the_same_submission_is_the_same_run() {
    let h = Harness::<Validator<Defaults>>::new("validate", VALIDATOR);
    let body = "id\n1\n";
    h.deliver_body(body).await;
    h.deliver_body(body).await;
    let runs: std::collections::BTreeSet<_> = h
        .emitted::<RecordBatch>()
        .into_iter()
        .map(|e| e.run_id)
        .collect();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        h.emitted::<RecordBatch>().len(),
        1,
        "the ledger absorbed the redelivery"
    );
}

#[tokio::test]
async fn a_landed_object_deleted_before_validation_is_reported_not_retried() {
    let h = Harness::<Validator<Defaults>>::new("validate", VALIDATOR);
    let input = Envelope::new(
        "acme",
        RunId::new("r1"),
        LogicalDate::from_ymd(2024, 5, 1).unwrap(),
        "validate",
        "file",
        Source::Object {
            bucket: "landing".into(),
            key: "gone.csv".into(),
            version_id: None,
        },
    );
    // S3 is strongly consistent: an object missing after its event was deleted, and
    // retrying would only fill the dead-letter queue.
    assert!(h.deliver(&input).await.batch_item_failures.is_empty());
    let reports = h
        .objects
        .keys("data", "reports/2024-05-01/r1/validate/rejected/");
    assert_eq!(reports.len(), 1);
    assert!(
        h.objects
            .text("data", &reports[0])
            .unwrap()
            .contains("gone.csv")
    );
}

#[test]
fn contact_defaults() {
    let settings: contacts::Settings = toml::from_str("directory_id = 'POOL_1'").unwrap();
    let contact = contacts::map(
        &record(json!({"id": 5, "email": "a@b.co", "language": "", "x": 1})),
        &settings,
    )
    .unwrap();
    assert_eq!(
        (
            contact.ext_ref.as_str(),
            contact.email.as_deref(),
            contact.language.as_deref()
        ),
        ("5", Some("a@b.co"), None)
    );
    assert_eq!(contact.embedded_data, record(json!({"x": 1})));
    assert!(
        !contacts::map(&record(json!({"email": "a@b.co"})), &settings)
            .unwrap_err()
            .is_retryable()
    );
    let request = contacts::build_request(&[contact], "CG_1", &settings);
    assert_eq!(
        request.path,
        "directories/POOL_1/mailinglists/CG_1/transactioncontacts"
    );
    let failed = contacts::ImportStatus {
        id: "PGRS_1".into(),
        status: "failed".into(),
        ..Default::default()
    };
    assert!(
        !contacts::handle_response(failed, "CG_1")
            .unwrap_err()
            .is_retryable()
    );
    let done = contacts::ImportStatus {
        id: "PGRS_1".into(),
        status: "complete".into(),
        added: 3,
        ..Default::default()
    };
    let imported = contacts::handle_response(done, "CG_1").unwrap();
    assert_eq!(
        (imported.added, imported.mailing_list_id.as_str()),
        (3, "CG_1")
    );
    let outputs = contacts::choose_output(&envelope(RecordBatch::default()), imported);
    assert_eq!(outputs[0].record_key, "k");
}

#[test]
fn distribution_defaults() {
    let settings: distribution::Settings = toml::from_str(
        "survey_id='SV_1'\nlibrary_id='UR_1'\nmessage_id='MS_1'\nfrom_email='a@b.co'\nfrom_name='A'\nsubject='S'\nreply_to_email='r@b.co'",
    )
    .unwrap();
    let at = distribution::send_time(LogicalDate::from_ymd(2024, 2, 28).unwrap(), &settings);
    assert_eq!(distribution::qualtrics_time(at), "2024-02-28T09:00:00Z");
    let etlgen_runtime::qualtrics::Body::Json(body) =
        distribution::build_request("CG_1", at, &settings).body
    else {
        panic!()
    };
    assert_eq!(body["header"]["replyToEmail"], "r@b.co");
    assert_eq!(body["surveyLink"]["expirationDate"], "2024-03-29T09:00:00Z");
    let out = distribution::choose_output(distribution::DistributionScheduled {
        distribution_id: "EMD_1".into(),
        mailing_list_id: "CG_1".into(),
        send_date: "d".into(),
    });
    assert_eq!(out[0].record_key, "distribution");
}

#[test]
fn response_defaults() {
    let records = [record(json!({"a": "x,y", "b": null, "c": 1}))];
    assert_eq!(
        responses::to_csv(&records, &[]).unwrap(),
        "a,b,c\n\"x,y\",,1\n"
    );
    assert_eq!(
        responses::to_csv(&records, &["c".into(), "z".into()]).unwrap(),
        "c,z\n1,\n"
    );
    // Without declared columns, a column only a later record has is kept, after the ones
    // seen before it.
    let uneven = [
        record(json!({"id": 1})),
        record(json!({"id": 2, "Q1": "5"})),
        record(json!({"Q2": "no", "id": 3})),
    ];
    assert_eq!(
        responses::to_csv(&uneven, &[]).unwrap(),
        "id,Q1,Q2\n1,,\n2,5,\n3,,no\n"
    );
    let failed = responses::ResponsesImported {
        progress_id: "P".into(),
        status: "failed".into(),
        records: 1,
    };
    assert!(responses::handle_response(failed).is_err());
    assert_eq!(responses::map(records[0].clone()).unwrap(), records[0]);
}

#[test]
fn exporter_defaults() {
    let mut settings: exporter::Settings = toml::from_str("survey_id='SV_1'").unwrap();
    let input = envelope(json!({}));
    assert_eq!(
        exporter::destination(&input, &settings, "data"),
        exporter::Destination::S3 {
            bucket: "data".into(),
            key: "exports/2024-05-01/r1/responses.zip".into()
        }
    );
    settings.sftp_dir = Some("/inbox/".into());
    assert_eq!(
        exporter::destination(&input, &settings, "data"),
        exporter::Destination::Sftp {
            path: "/inbox/2024-05-01_r1_responses.zip".into()
        }
    );
    let etlgen_runtime::qualtrics::Body::Json(body) =
        exporter::build_request(&input, &settings).body
    else {
        panic!()
    };
    assert_eq!(
        (body["format"].as_str(), body["compress"].as_bool()),
        (Some("csv"), Some(true))
    );
}

#[test]
fn notifier_defaults() {
    let settings = notifier::Settings {
        topic_arn: "t".into(),
        subject_prefix: "[acme dev]".into(),
        ..Default::default()
    };
    let ok = notifier::render(&envelope(json!({"status": "complete"})), &settings).unwrap();
    assert_eq!(ok.subject, "[acme dev] acme run 2024-05-01 succeeded");
    let failed = notifier::render(&envelope(json!({"status": "FAILED"})), &settings).unwrap();
    assert!(failed.subject.ends_with("failed") && failed.message.contains("run: r1"));
}

#[test]
fn sftp_poller_defaults() {
    let settings: sources::Settings =
        toml::from_str("remote_dir='/out'\nsuffixes=['.csv']").unwrap();
    let file = |path: &str| RemoteFile {
        path: path.into(),
        size: 1,
        modified: 1,
    };
    assert!(sources::sftp::select(&file("/out/a.csv"), &settings));
    assert!(!sources::sftp::select(&file("/out/a.txt"), &settings));
    let tick = envelope(json!(null));
    let id = sources::sftp::copy_id(&tick.pipeline, &file("/out/a.csv"));
    assert_eq!(
        sources::sftp::landing_key(&file("/out/a.csv"), &tick, &settings),
        format!("landing/2024-05-01/{id}/a.csv")
    );
    let replaced = RemoteFile {
        modified: 2,
        ..file("/out/a.csv")
    };
    assert_ne!(sources::sftp::copy_id(&tick.pipeline, &replaced), id);
    assert_eq!(settings.settle_seconds, 60);
    assert!(sources::sftp::settling(&file("/out/a.csv"), 60, 60));
    assert!(!sources::sftp::settling(&file("/out/a.csv"), 61, 60));
    assert!(!sources::sftp::settling(
        &RemoteFile {
            modified: 0,
            ..file("/out/a.csv")
        },
        0,
        60
    ));
    assert_eq!(sources::KIND, "sftp-poller");
}

#[test]
fn every_kind_names_its_catalog_id_and_hooks() {
    let kinds = [
        (validator::KIND, validator::HOOKS),
        (contacts::KIND, contacts::HOOKS),
        (distribution::KIND, distribution::HOOKS),
        (responses::KIND, responses::HOOKS),
        (sources::KIND, sources::HOOKS),
        (exporter::KIND, exporter::HOOKS),
        (notifier::KIND, notifier::HOOKS),
    ];
    let ids: Vec<_> = kinds.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        ids,
        [
            "validator",
            "contact-importer",
            "distribution-scheduler",
            "response-importer",
            "sftp-poller",
            "exporter",
            "notifier"
        ]
    );
    for (kind, hooks) in kinds {
        assert!(!hooks.is_empty(), "{kind}");
        let source = match kind {
            "validator" => include_str!("../src/kinds/validator/mod.rs"),
            "contact-importer" => include_str!("../src/kinds/contacts.rs"),
            "distribution-scheduler" => include_str!("../src/kinds/distribution.rs"),
            "response-importer" => include_str!("../src/kinds/responses.rs"),
            "sftp-poller" => include_str!("../src/kinds/sources/sftp.rs"),
            "exporter" => include_str!("../src/kinds/exporter.rs"),
            _ => include_str!("../src/kinds/notifier.rs"),
        };
        let hooks_trait = &source[source.find("pub trait Hooks").unwrap()..];
        let hooks_trait = &hooks_trait[..hooks_trait.find("\n}\n").unwrap()];
        let declared = hooks_trait.matches("    fn ").count();
        assert_eq!(
            declared,
            hooks.len(),
            "{kind}: HOOKS must list every hook method"
        );
        for hook in hooks {
            assert!(
                hooks_trait.contains(&format!("    fn {hook}(")),
                "{kind}: no hook {hook}"
            );
            assert!(
                source.contains(&format!("pub fn {hook}")),
                "{kind}: {hook} has no public default function"
            );
        }
    }
}

fn claim_context(
    lease: u64,
    message_id: &str,
    objects: std::sync::Arc<dyn etlgen_runtime::ports::ObjectStore>,
) -> etlgen_runtime::step::StepContext {
    use etlgen_runtime::ports::{Services, Unconfigured};
    use etlgen_runtime::testing::{MemoryNotifications, MemoryQueue};
    use std::sync::Arc;
    let config = etlgen_runtime::config::Config::from_toml(
        "test",
        &format!(
            "[pipeline]\nname='acme'\ndata_bucket='data'\n[runtime]\nclaim_lease_seconds={lease}\n"
        ),
    )
    .unwrap();
    let services = Services {
        qualtrics: Arc::new(Unconfigured("q")),
        objects,
        queue: Arc::new(MemoryQueue::default()),
        notifications: Arc::new(MemoryNotifications::default()),
        sftp: Arc::new(Unconfigured("s")),
    };
    etlgen_runtime::step::StepContext::new("s".into(), Arc::new(config), services, message_id)
}

#[tokio::test]
async fn a_claim_is_held_by_one_delivery_until_its_lease_expires() {
    use etlgen_runtime::kinds::{Claim, claim};
    let objects = std::sync::Arc::new(etlgen_runtime::testing::MemoryObjectStore::default());
    let first = claim_context(300, "m1", objects.clone());
    assert_eq!(claim(&first, "runs/x/claim", 1).await.unwrap(), Claim::Won);
    assert_eq!(
        claim(&first, "runs/x/claim", 1).await.unwrap(),
        Claim::Resumed,
        "the same delivery again"
    );
    assert_eq!(
        claim(&first, "runs/x/claim", 2).await.unwrap(),
        Claim::HeldByOther,
        "its redelivery waits for the lease"
    );
    let other = claim_context(300, "m2", objects.clone());
    assert_eq!(
        claim(&other, "runs/x/claim", 1).await.unwrap(),
        Claim::HeldByOther
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let after_lease = claim_context(0, "m2", objects.clone());
    assert_eq!(
        claim(&after_lease, "runs/x/claim", 1).await.unwrap(),
        Claim::Resumed,
        "an expired claim is taken over"
    );
    // Taken over as the claim's next generation; the first is left as it was.
    assert!(
        objects
            .text("data", "runs/x/claim.1")
            .unwrap()
            .contains("m2#1")
    );
    assert!(
        objects
            .text("data", "runs/x/claim")
            .unwrap()
            .contains("m1#1")
    );
}

#[tokio::test]
async fn new_runs_carry_the_configured_record_schema() {
    let h =
        Harness::<Validator<Defaults>>::new("validate", &format!("{VALIDATOR}record_schema = 2\n"));
    h.deliver_body("id\n1\n").await;
    assert_eq!(h.emitted::<RecordBatch>()[0].record_schema, 2);
}

const EXPORTER: &str = r#"
[pipeline]
name = "acme"
data_bucket = "data"
[qualtrics]
datacenter = "fra1"
secret_id = "s"
[steps.export]
next_step = "notify"
next_queue_url = "https://sqs.test/notify"
survey_id = "SV_1"
poll_interval_ms = 1
max_polls = 2
"#;

/// Where the exporter under test starts its exports.
const EXPORTS: &str = "surveys/SV_1/export-responses";

/// An exporter whose Qualtrics starts the exports `started`, in turn, and answers the
/// progress of each export in `progress` with its answers, in turn.
fn exporter_answering(
    started: &[&str],
    progress: &[(&str, serde_json::Value)],
) -> Harness<exporter::Exporter<Defaults>> {
    let h = Harness::<exporter::Exporter<Defaults>>::new("export", EXPORTER);
    for id in started {
        h.qualtrics
            .on(Method::Post, EXPORTS, json!({"progressId": id}));
    }
    for (id, answer) in progress {
        h.qualtrics
            .on(Method::Get, &format!("{EXPORTS}/{id}"), answer.clone());
    }
    h
}

/// Delivers the same message twice; the number of exports started.
async fn export_twice(h: &Harness<exporter::Exporter<Defaults>>) -> usize {
    let input = h.envelope("distribute", json!({"distribution_id": "EMD_1"}));
    let first = h.deliver(&input).await;
    assert_eq!(
        first.batch_item_failures.len(),
        1,
        "the polls ran out: retried"
    );
    assert!(h.deliver(&input).await.batch_item_failures.is_empty());
    h.qualtrics.requests_to(Method::Post, EXPORTS).len()
}

fn running() -> serde_json::Value {
    json!({"status": "inProgress"})
}

/// An export slower than a delivery's polls: the redelivery polls the export the first
/// delivery started instead of starting another and waiting from the beginning again.
#[tokio::test]
async fn a_redelivered_export_polls_the_export_it_started() {
    let done = json!({"status": "complete", "fileId": "F_1"});
    let h = exporter_answering(
        &["ES_1"],
        &[("ES_1", running()), ("ES_1", running()), ("ES_1", done)],
    );
    h.qualtrics
        .on_bytes(Method::Get, &format!("{EXPORTS}/F_1/file"), "zip");
    assert_eq!(
        export_twice(&h).await,
        1,
        "one export, polled across both deliveries"
    );
    let polls = h
        .qualtrics
        .requests_to(Method::Get, &format!("{EXPORTS}/ES_1"));
    assert_eq!(polls.len(), 3);
    assert_eq!(h.emitted::<exporter::ExportWritten>()[0].payload.bytes, 3);
}

/// A recorded export that failed is replaced by a new one on the next delivery.
#[tokio::test]
async fn a_recorded_export_that_failed_is_started_again() {
    let done = json!({"status": "complete", "fileId": "F_2"});
    let failed = json!({"status": "failed"});
    let h = exporter_answering(
        &["ES_1", "ES_2"],
        &[
            ("ES_1", running()),
            ("ES_1", running()),
            ("ES_1", failed),
            ("ES_2", done),
        ],
    );
    h.qualtrics
        .on_bytes(Method::Get, &format!("{EXPORTS}/F_2/file"), "zip2");
    assert_eq!(export_twice(&h).await, 2);
    assert_eq!(h.emitted::<exporter::ExportWritten>()[0].payload.bytes, 4);
}

const CONTACTS: &str = r#"
[pipeline]
name = "acme"
data_bucket = "data"
[qualtrics]
datacenter = "fra1"
secret_id = "s"
[steps.import]
next_step = "distribute"
next_queue_url = "https://sqs.test/distribute"
directory_id = "POOL_1"
poll_interval_ms = 1
"#;

/// A batch that fails permanently is rejected, and still counts toward the run's fan-in
/// and is passed on: otherwise the distribution would wait for it forever.
#[tokio::test]
async fn a_rejected_contact_batch_still_counts_toward_the_fan_in() {
    let h = Harness::<contacts::ContactImporter<Defaults>>::new("import", CONTACTS);
    h.qualtrics.on(
        Method::Post,
        "directories/POOL_1/mailinglists",
        json!({"id": "CG_1"}),
    );
    // No `id`: no extRef, so the batch cannot be imported.
    let batch = RecordBatch {
        records: vec![
            record(json!({"email": "a@b.co"})),
            record(json!({"email": "c@d.co"})),
        ],
    };
    let input = h.envelope("batch-3", batch);
    assert!(h.deliver(&input).await.batch_item_failures.is_empty());
    let run = format!("runs/2024-05-01/{}", input.run_id);
    assert_eq!(
        h.objects.keys("data", &format!("{run}/batches/")),
        [format!("{run}/batches/batch-3.json")]
    );
    let emitted = h.emitted::<contacts::ContactsImported>();
    assert_eq!(emitted.len(), 1);
    assert_eq!(
        (
            emitted[0].payload.mailing_list_id.as_str(),
            emitted[0].payload.added,
            emitted[0].payload.failed
        ),
        ("CG_1", 0, 2)
    );
    let reports = h.objects.keys("data", "reports/");
    assert!(
        reports.iter().any(|k| k.contains("/import/rejected/")),
        "{reports:?}"
    );
    assert!(
        h.qualtrics
            .requests_to(
                Method::Post,
                "directories/*/mailinglists/*/transactioncontacts"
            )
            .is_empty()
    );
}

impl contacts::Hooks for Defaults {}

/// A resumed export whose file is gone (Qualtrics expires export files) is replaced by a
/// new export, not rejected.
#[tokio::test]
async fn a_resumed_export_whose_file_is_gone_is_started_again() {
    let (gone, done) = (
        json!({"status": "complete", "fileId": "F_1"}),
        json!({"status": "complete", "fileId": "F_2"}),
    );
    let h = exporter_answering(
        &["ES_1", "ES_2"],
        &[
            ("ES_1", running()),
            ("ES_1", running()),
            ("ES_1", gone),
            ("ES_2", done),
        ],
    );
    h.qualtrics
        .fail(Method::Get, &format!("{EXPORTS}/F_1/file"), 404)
        .on_bytes(Method::Get, &format!("{EXPORTS}/F_2/file"), "zip2");
    assert_eq!(export_twice(&h).await, 2);
    assert!(h.objects.keys("data", "reports/").is_empty());
    assert_eq!(h.emitted::<exporter::ExportWritten>()[0].payload.bytes, 4);
}

/// A claim whose work failed on an answer (a 5xx) is given back, so the redelivery takes
/// over at once; after a timeout, the request may still land, so the lease holds.
#[tokio::test]
async fn an_answered_failure_releases_the_claim_and_a_timeout_keeps_it() {
    use etlgen_runtime::StepError;
    use etlgen_runtime::kinds::{Claim, claim, release};
    let objects = std::sync::Arc::new(etlgen_runtime::testing::MemoryObjectStore::default());
    let cx = claim_context(300, "m1", objects.clone());
    assert_eq!(claim(&cx, "runs/x/claim", 1).await.unwrap(), Claim::Won);
    release(&cx, "runs/x/claim", 1, &StepError::timeout("no answer"))
        .await
        .unwrap();
    assert_eq!(
        claim(&cx, "runs/x/claim", 2).await.unwrap(),
        Claim::HeldByOther
    );
    let refused = StepError::from_status(500, "server error");
    assert_eq!(refused.status(), Some(500));
    release(&cx, "runs/x/claim", 1, &refused).await.unwrap();
    assert_eq!(claim(&cx, "runs/x/claim", 2).await.unwrap(), Claim::Resumed);
}

/// An object store that lets other tasks run before each call, as a network round trip
/// does, so concurrent deliveries interleave their reads and writes.
#[derive(Debug)]
struct Yielding(std::sync::Arc<etlgen_runtime::testing::MemoryObjectStore>);

#[async_trait::async_trait]
impl etlgen_runtime::ports::ObjectStore for Yielding {
    async fn get(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<etlgen_runtime::ports::ObjectReader>, etlgen_runtime::StepError> {
        tokio::task::yield_now().await;
        self.0.get(bucket, key).await
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: bytes::Bytes,
    ) -> Result<(), etlgen_runtime::StepError> {
        tokio::task::yield_now().await;
        self.0.put(bucket, key, body).await
    }

    async fn put_if_absent(
        &self,
        bucket: &str,
        key: &str,
        body: bytes::Bytes,
    ) -> Result<bool, etlgen_runtime::StepError> {
        tokio::task::yield_now().await;
        self.0.put_if_absent(bucket, key, body).await
    }

    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        from_version: Option<&str>,
        to_bucket: &str,
        to_key: &str,
    ) -> Result<(), etlgen_runtime::StepError> {
        tokio::task::yield_now().await;
        (self.0)
            .copy(from_bucket, from_key, from_version, to_bucket, to_key)
            .await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<String>, etlgen_runtime::StepError> {
        tokio::task::yield_now().await;
        self.0.list(bucket, prefix).await
    }
}

/// Two redeliveries that come back together (after the same visibility timeout) to a claim
/// given back: exactly one takes it over, so one of them creates the run's distribution.
/// Overwriting the claim let both take it.
#[tokio::test]
async fn deliveries_taking_over_a_claim_at_once_have_one_winner() {
    use etlgen_runtime::StepError;
    use etlgen_runtime::kinds::{Claim, claim, release};
    use std::sync::Arc;
    const KEY: &str = "runs/x/distribution.claim";
    let memory = Arc::new(etlgen_runtime::testing::MemoryObjectStore::default());
    let objects = Arc::new(Yielding(memory.clone()));
    let holder = claim_context(300, "m1", objects.clone());
    assert_eq!(claim(&holder, KEY, 1).await.unwrap(), Claim::Won);
    let answered = StepError::from_status(500, "server error");
    release(&holder, KEY, 1, &answered).await.unwrap();
    let (a, b) = (
        claim_context(300, "m1", objects.clone()),
        claim_context(300, "m2", objects.clone()),
    );
    let (first, second) = tokio::join!(claim(&a, KEY, 2), claim(&b, KEY, 2));
    let (first, second) = (first.unwrap(), second.unwrap());
    let (winner, loser) = match (first, second) {
        (Claim::Resumed, Claim::HeldByOther) => (&a, &b),
        (Claim::HeldByOther, Claim::Resumed) => (&b, &a),
        both => panic!("one delivery must take the claim over: {both:?}"),
    };

    // The winner's generation is the claim now: the loser is refused until it is given
    // back, and then one more delivery takes it over.
    assert_eq!(claim(loser, KEY, 2).await.unwrap(), Claim::HeldByOther);
    assert_eq!(claim(winner, KEY, 2).await.unwrap(), Claim::Resumed);
    release(loser, KEY, 2, &answered).await.unwrap();
    assert_eq!(
        claim(loser, KEY, 2).await.unwrap(),
        Claim::HeldByOther,
        "not its claim to give back"
    );
    release(winner, KEY, 2, &answered).await.unwrap();
    assert_eq!(claim(loser, KEY, 3).await.unwrap(), Claim::Resumed);
    assert_eq!(
        memory.keys("data", KEY),
        [KEY.to_owned(), format!("{KEY}.1"), format!("{KEY}.2")]
    );
}

/// A 500 on creating the run's mailing list gives its claim back, and the redelivery
/// creates one list.
#[tokio::test]
async fn a_500_creating_the_list_releases_its_claim() {
    let h = Harness::<contacts::ContactImporter<Defaults>>::new("import", CONTACTS);
    h.qualtrics
        .fail(Method::Post, "directories/POOL_1/mailinglists", 500)
        .on(
            Method::Post,
            "directories/POOL_1/mailinglists",
            json!({"id": "CG_1"}),
        )
        .on(
            Method::Post,
            "directories/POOL_1/mailinglists/CG_1/transactioncontacts",
            json!({"id": "CT_1"}),
        )
        .on(
            Method::Get,
            "directories/POOL_1/mailinglists/CG_1/transactioncontacts/CT_1",
            json!({"percentComplete": 100.0, "status": "completed"}),
        );
    let input = h.envelope(
        "batch-1",
        RecordBatch {
            records: vec![record(json!({"id": 1, "email": "a@b.co"}))],
        },
    );
    assert_eq!(h.deliver(&input).await.batch_item_failures.len(), 1);
    let claim_key = format!("runs/2024-05-01/{}/mailing-list.claim", input.run_id);
    let claim: serde_json::Value =
        serde_json::from_str(&h.objects.text("data", &claim_key).unwrap()).unwrap();
    assert_eq!(claim["claimed_at_ms"], 0, "{claim}");
    assert!(h.deliver(&input).await.batch_item_failures.is_empty());
    assert_eq!(
        h.qualtrics
            .requests_to(Method::Post, "directories/*/mailinglists")
            .len(),
        2,
        "the refused create and the one that made the list"
    );
}

/// Files land only where the validator is notified of new objects: a `landing_bucket` (an
/// earlier framework's setting, which the generated IAM and notifications never covered) and
/// a `landing_prefix` outside `landing/` are refused at init, a hook's key outside it when
/// the tick runs.
#[tokio::test]
async fn files_land_only_where_the_validator_is_notified() {
    let config = |extra: &str| {
        format!(
            "[pipeline]\nname='acme'\ndata_bucket='data'\n[steps.poll]\nremote_dir='/out'\n{extra}\n"
        )
    };
    for (extra, said) in [
        (
            "landing_bucket='other'",
            "steps.poll.landing_bucket is not supported",
        ),
        (
            "landing_prefix='inbox/'",
            "steps.poll.landing_prefix = \"inbox/\" must start with \"landing/\"",
        ),
    ] {
        let refused =
            Harness::<sources::SftpPoller<PollerDefaults>>::try_new("poll", &config(extra));
        let err = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(said), "{extra}: {err}");
    }
    assert!(
        Harness::<sources::SftpPoller<PollerDefaults>>::try_new(
            "poll",
            &config("landing_prefix='landing/sftp/'")
        )
        .is_ok()
    );

    let h = Harness::<sources::SftpPoller<OutsideLanding>>::new("poll", &config(""));
    h.sftp.insert("/out/a.csv", "id\n1\n", 100);
    let tick = etlgen_runtime::testing::sqs_message("tick-1", "{}");
    let failures = h.runner.handle_event(tick).await.batch_item_failures;
    assert_eq!(
        failures.len(),
        0,
        "a permanent failure is reported, not retried"
    );
    assert!(
        h.objects.keys("data", "inbox/").is_empty(),
        "nothing landed outside landing/"
    );
    let reports = h.objects.keys("data", "reports/");
    let report = h.objects.text("data", &reports[0]).unwrap_or_default();
    assert!(
        report.contains("the landing_key hook: landing key") && report.contains("is not under"),
        "{reports:?}: {report}"
    );
}

/// The poller's default hooks.
#[derive(Debug, Default)]
struct PollerDefaults;
impl sources::sftp::Hooks for PollerDefaults {}

/// A client's `landing_key` outside `landing/` for `a.csv`, the default for the others.
#[derive(Debug, Default)]
struct OutsideLanding;
impl sources::sftp::Hooks for OutsideLanding {
    fn landing_key(
        &self,
        file: &RemoteFile,
        tick: &Envelope<serde_json::Value>,
        settings: &sources::Settings,
    ) -> String {
        if !file.path.ends_with("/a.csv") {
            return sources::sftp::landing_key(file, tick, settings);
        }
        let name = file.path.rsplit('/').next().unwrap_or_default();
        format!("inbox/{}/{name}", tick.logical_date)
    }
}

/// A tick with a file it can never copy and one it may copy on a retry is retried, so the
/// second is not left to the next scheduled tick.
#[tokio::test]
async fn a_tick_with_any_retryable_failure_is_retried() {
    let h = Harness::<sources::SftpPoller<OutsideLanding>>::new(
        "poll",
        "[pipeline]\nname='acme'\ndata_bucket='data'\n[steps.poll]\nremote_dir='/out'\n",
    );
    h.sftp.insert("/out/a.csv", "id\n1\n", 100);
    h.sftp.insert("/out/b.csv", "id\n2\n", 100);
    h.sftp.deny("/out/b.csv");
    let tick = etlgen_runtime::testing::sqs_message("tick-1", "{}");
    let failures = h.runner.handle_event(tick).await.batch_item_failures;
    assert_eq!(failures.len(), 1, "retried");
    assert!(
        h.objects.keys("data", "reports/").is_empty(),
        "not reported"
    );
}

/// A client's `landing_key` without the copy id (one key per file name and day): an
/// object already there may be an older version, so a replaced file is uploaded again
/// rather than taken as copied.
#[derive(Debug, Default)]
struct FlatLandingKey;
impl sources::sftp::Hooks for FlatLandingKey {
    fn landing_key(
        &self,
        file: &RemoteFile,
        tick: &Envelope<serde_json::Value>,
        settings: &sources::Settings,
    ) -> String {
        let name = file.path.rsplit('/').next().unwrap_or_default();
        format!("{}{}/{name}", settings.landing_prefix, tick.logical_date)
    }
}

#[tokio::test]
async fn a_replaced_file_under_a_key_without_its_copy_id_is_uploaded_again() {
    let h = Harness::<sources::SftpPoller<FlatLandingKey>>::new(
        "poll",
        "[pipeline]\nname='acme'\ndata_bucket='data'\n[steps.poll]\nremote_dir='/out'\n",
    );
    let tick = |n: u32| etlgen_runtime::testing::sqs_message(&format!("tick-{n}"), "{}");
    h.sftp.insert("/out/a.csv", "id\n1\n", 100);
    assert!(
        h.runner
            .handle_event(tick(1))
            .await
            .batch_item_failures
            .is_empty()
    );
    h.sftp.insert("/out/a.csv", "id\n1\n2\n", 200);
    assert!(
        h.runner
            .handle_event(tick(2))
            .await
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(
        h.objects
            .text("data", "landing/2024-05-01/a.csv")
            .as_deref(),
        Some("id\n1\n2\n"),
        "the new version landed"
    );
}

/// An exporter that exports a run of two batches once its two inputs have come.
fn counted_exporter() -> (Harness<exporter::Exporter<Defaults>>, Envelope<()>) {
    let config = EXPORTER.replace("max_polls = 2\n", "max_polls = 2\ninputs_per_batch = 1\n");
    let h = Harness::<exporter::Exporter<Defaults>>::new("export", &config);
    h.qualtrics
        .on(Method::Post, EXPORTS, json!({"progressId": "ES_1"}))
        .on(
            Method::Get,
            &format!("{EXPORTS}/ES_1"),
            json!({"status": "complete", "fileId": "F_1"}),
        )
        .on_bytes(Method::Get, &format!("{EXPORTS}/F_1/file"), "zip");
    let run = h.envelope("x", ());
    let manifest = RunManifest {
        batches: 2,
        valid: 4,
        rejected: 0,
    };
    h.objects.insert(
        "data",
        &etlgen_runtime::kinds::manifest_key(run.logical_date, &run.run_id),
        serde_json::to_vec(&manifest).unwrap(),
    );
    (h, run)
}

/// With the run's inputs counted, the exporter exports once, when the last input has
/// come: exporting at every input overwrote the run's file with whichever export finished
/// last, possibly one started before the last batch was imported.
#[tokio::test]
async fn a_counted_run_is_exported_once_after_its_last_input() {
    let (h, _) = counted_exporter();
    let exports = || h.qualtrics.requests_to(Method::Post, EXPORTS).len();
    for (key, expected) in [
        ("batch-000001", 0),
        ("batch-000002", 1),
        ("batch-000001", 1),
    ] {
        let input = h.envelope(key, json!({"imported": key}));
        let response = h.deliver(&input).await;
        assert!(response.batch_item_failures.is_empty(), "{key}");
        assert_eq!(exports(), expected, "exports after {key}");
    }
    let emitted = h.emitted::<exporter::ExportWritten>();
    assert!(!emitted.is_empty());
    assert!(emitted.iter().all(|e| e.record_key == "export"));
}

/// Each input of a counted run is kept, whole, under its marker: `cargo xtask replay
/// --from-step` clears the step's run state and the inputs' ledger entries, sends the kept
/// envelopes again, and the run is exported again, once, when the last of them is back.
#[tokio::test]
async fn a_cleared_run_is_exported_again_from_its_kept_inputs() {
    let (h, run) = counted_exporter();
    let exports = || h.qualtrics.requests_to(Method::Post, EXPORTS).len();
    let sent: Vec<_> = ["batch-000001", "batch-000002"]
        .map(|key| h.envelope(key, json!({"imported": key})))
        .into();
    for input in &sent {
        assert!(h.deliver(input).await.batch_item_failures.is_empty());
    }
    assert_eq!(exports(), 1);

    let prefix =
        etlgen_runtime::kinds::input_marker_prefix(run.logical_date, &run.run_id, "export");
    let mut kept: Vec<Envelope<serde_json::Value>> = (h.objects.keys("data", &prefix).iter())
        .map(|key| serde_json::from_str(&h.objects.text("data", key).unwrap()).unwrap())
        .collect();
    kept.sort_by(|a, b| a.record_key.cmp(&b.record_key));
    assert_eq!(kept, sent, "each marker holds its input's envelope");

    let state = etlgen_runtime::zones::run_state(run.logical_date, &run.run_id, "export/");
    assert!(
        h.objects.remove_prefix("data", &state) > 2,
        "markers, claim and result"
    );
    for input in &kept {
        let ledger =
            etlgen_runtime::zones::ledger(&input.pipeline, "export", &input.idempotency_key);
        assert_eq!(h.objects.remove_prefix("data", &ledger), 1, "{ledger}");
    }
    assert!(h.deliver(&kept[0]).await.batch_item_failures.is_empty());
    assert_eq!(exports(), 1, "not before the last input is back");
    assert!(h.deliver(&kept[1]).await.batch_item_failures.is_empty());
    assert_eq!(exports(), 2, "exported again, once");
}
