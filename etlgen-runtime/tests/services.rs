//! Steps end to end through the real Qualtrics client against a mock server, and the
//! runner's rules: idempotent redelivery, rejection reports, retry classification.

use std::sync::Arc;

use etlgen_runtime::config::Config;
use etlgen_runtime::kinds::RecordBatch;
use etlgen_runtime::kinds::distribution::{DistributionScheduler, Hooks as DistributionHooks};
use etlgen_runtime::kinds::responses::{Hooks as ResponseHooks, ResponseImporter};
use etlgen_runtime::ports::{QualtricsApi, Services};
use etlgen_runtime::qualtrics::Client;
use etlgen_runtime::runner::Runner;
use etlgen_runtime::step::Step;
use etlgen_runtime::testing::{
    MemoryNotifications, MemoryObjectStore, MemoryQueue, MemorySftp, sqs_event,
};
use etlgen_runtime::{Envelope, LogicalDate, RunId};
use serde_json::json;
use wiremock::matchers::{body_json, body_string, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[derive(Debug, Default)]
struct Defaults;
impl ResponseHooks for Defaults {}
impl DistributionHooks for Defaults {}

struct World<S: Step> {
    runner: Runner<S>,
    objects: Arc<MemoryObjectStore>,
    queue: Arc<MemoryQueue>,
    notifications: Arc<MemoryNotifications>,
}

fn world<S: Step>(server: &MockServer, step: &str, extra: &str) -> World<S> {
    let toml = format!(
        "[pipeline]\nname='acme'\ndata_bucket='data'\n\
         [qualtrics]\ndatacenter='fra1'\nsecret_id='s'\nbase_url='{}/API/v3/'\nbackoff_base_ms=5\nmax_retries=2\n{extra}",
        server.uri()
    );
    let config = Config::from_toml("test", &toml).unwrap();
    let qualtrics: Arc<dyn QualtricsApi> =
        Arc::new(Client::new(config.qualtrics.as_ref().unwrap(), "tok").unwrap());
    let notifications = Arc::new(MemoryNotifications::default());
    let (objects, queue) = (
        Arc::new(MemoryObjectStore::default()),
        Arc::new(MemoryQueue::default()),
    );
    let services = Services {
        qualtrics,
        objects: objects.clone(),
        queue: queue.clone(),
        notifications: notifications.clone(),
        sftp: Arc::new(MemorySftp::default()),
    };
    World {
        notifications,
        runner: Runner::new(step, config, services).unwrap(),
        objects,
        queue,
    }
}

fn envelope<T>(step: &str, key: &str, payload: T) -> Envelope<T> {
    Envelope::new(
        "acme",
        RunId::new("run-1"),
        LogicalDate::from_ymd(2024, 5, 1).unwrap(),
        step,
        key,
        payload,
    )
}

fn batch() -> RecordBatch {
    RecordBatch {
        records: vec![json!({"id": "7", "Q1": 9}).as_object().unwrap().clone()],
    }
}

async fn mount_import(server: &MockServer, key: &str, times: u64) {
    Mock::given(method("POST"))
        .and(path("/API/v3/surveys/SV_1/import-responses"))
        .and(header("X-API-TOKEN", "tok"))
        .and(header("Idempotency-Key", key))
        .and(header("content-type", "text/csv"))
        .and(header("charset", "UTF-8"))
        .and(body_string("Q1,id\n9,7\n"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"result": {"progressId": "PR_1", "percentComplete": 0, "status": "inProgress"}, "meta": {"requestId": "r1"}})))
        .expect(times)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/API/v3/surveys/SV_1/import-responses/PR_1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"result": {"percentComplete": 100, "status": "complete"}, "meta": {"requestId": "r2"}})))
        .mount(server)
        .await;
}

const RESPONSES: &str = "[steps.import]\nsurvey_id='SV_1'\npoll_interval_ms=1\nnext_step='notify'\nnext_queue_url='https://sqs.test/notify'";

#[tokio::test]
async fn the_same_message_delivered_twice_has_one_effect() {
    let server = MockServer::start().await;
    let input = envelope("import", "batch-000001", batch());
    mount_import(&server, &input.idempotency_key.to_string(), 1).await;
    let w = world::<ResponseImporter<Defaults>>(&server, "import", RESPONSES);
    let body = input.to_json().unwrap();
    assert!(
        w.runner
            .handle_event(sqs_event(&[&body]))
            .await
            .batch_item_failures
            .is_empty()
    );
    assert!(
        w.runner
            .handle_event(sqs_event(&[&body]))
            .await
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(w.queue.sent().len(), 1, "one output");
    assert_eq!(w.objects.keys("data", "state/acme/import/done/").len(), 1);
}

#[tokio::test]
async fn without_the_ledger_a_redelivery_reuses_the_same_idempotency_key() {
    let server = MockServer::start().await;
    let input = envelope("import", "batch-000001", batch());
    mount_import(&server, &input.idempotency_key.to_string(), 2).await;
    let w = world::<ResponseImporter<Defaults>>(
        &server,
        "import",
        &format!("[runtime]\nledger=false\n{RESPONSES}"),
    );
    let body = input.to_json().unwrap();
    for _ in 0..2 {
        assert!(
            w.runner
                .handle_event(sqs_event(&[&body]))
                .await
                .batch_item_failures
                .is_empty()
        );
    }
    let keys: Vec<_> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter_map(|r| {
            r.headers
                .get("Idempotency-Key")
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(
        keys,
        [
            input.idempotency_key.to_string(),
            input.idempotency_key.to_string()
        ],
        "Qualtrics dedups on it"
    );
}

#[tokio::test]
async fn a_retryable_failure_fails_only_its_message_and_a_permanent_one_is_reported() {
    let server = MockServer::start().await;
    let good = envelope("import", "batch-000001", batch());
    mount_import(&server, &good.idempotency_key.to_string(), 1).await;
    let w = world::<ResponseImporter<Defaults>>(
        &server,
        "import",
        &format!(
            "[runtime]\nfailure_topic_arn='arn:aws:sns:eu-west-1:1:acme-failures'\n{RESPONSES}"
        ),
    );
    let throttled = envelope("import", "batch-000002", batch());
    Mock::given(method("POST"))
        .and(header(
            "Idempotency-Key",
            throttled.idempotency_key.to_string().as_str(),
        ))
        .respond_with(ResponseTemplate::new(503))
        .expect(3)
        .mount(&server)
        .await;
    let foreign = envelope("other-step", "batch-000003", batch());
    let bodies = [
        good.to_json().unwrap(),
        throttled.to_json().unwrap(),
        foreign.to_json().unwrap(),
        "garbage".to_owned(),
    ];
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let response = w.runner.handle_event(sqs_event(&refs)).await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(
        failed,
        ["message-2"],
        "only the throttled message is retried"
    );
    let rejected = w
        .objects
        .keys("data", "reports/2024-05-01/run-1/import/rejected/");
    assert_eq!(rejected.len(), 1);
    let report = w.objects.text("data", &rejected[0]).unwrap();
    assert!(
        report.contains("addressed to step \\\"other-step\\\""),
        "{report}"
    );
    assert_eq!(w.objects.keys("data", "reports/unparsed/import/").len(), 1);
    let published = w.notifications.published();
    assert_eq!(published.len(), 2, "on-call hears about both rejections");
    assert!(
        published
            .iter()
            .all(|(topic, _, _)| topic.ends_with("acme-failures"))
    );
    assert!(published[0].2.contains("reports/"), "{}", published[0].2);
}

#[tokio::test]
async fn newer_envelopes_are_retried_not_acknowledged() {
    // A producer on a newer runtime than this consumer is a deploy under way: the message
    // goes back to SQS (and, failing again, to the DLQ for a redrive once this step is
    // updated), rather than being acknowledged into a report and lost to the fan-in.
    let server = MockServer::start().await;
    let w = world::<ResponseImporter<Defaults>>(&server, "import", RESPONSES);
    let mut value = serde_json::to_value(envelope("import", "k", batch())).unwrap();
    value["schema_version"] = json!(99);
    let response = w
        .runner
        .handle_event(sqs_event(&[&value.to_string()]))
        .await;
    assert_eq!(response.batch_item_failures.len(), 1);
    assert!(w.objects.keys("data", "reports/").is_empty());
}

const INVITE: &str = "[steps.invite]\nsurvey_id='SV_1'\nlibrary_id='UR_1'\nmessage_id='MS_1'\nfrom_email='a@b.co'\nfrom_name='Acme'\nsubject='Hi'\nsend_offset_hours=-2";

/// The survey's distributions, as `GET /distributions?surveyId=SV_1` lists them.
async fn mount_distributions(server: &MockServer, elements: serde_json::Value) {
    Mock::given(method("GET"))
        .and(path("/API/v3/distributions"))
        .and(query_param("surveyId", "SV_1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"result": {"elements": elements, "nextPage": null}, "meta": {"requestId": "r"}}),
        ))
        .mount(server)
        .await;
}

#[tokio::test]
async fn a_distribution_a_crashed_delivery_scheduled_is_found_not_created_again() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/API/v3/distributions"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    // Another scheduler's distribution to the same list (another message) is not this one.
    mount_distributions(
        &server,
        json!([
            {"id": "EMD_OTHER", "recipients": {"mailingListId": "CG_1"}, "message": {"messageId": "MS_2"}, "sendDate": "2024-04-30T22:00:00Z"},
            {"id": "EMD_LEFT", "recipients": {"mailingListId": "CG_1"}, "message": {"messageId": "MS_1"}, "sendDate": "2024-04-30T22:00:00Z"}
        ]),
    )
    .await;
    let w = world::<DistributionScheduler<Defaults>>(&server, "invite", INVITE);
    // The crashed delivery's claim, its lease long expired.
    w.objects.insert(
        "data",
        "runs/2024-05-01/run-1/invite/claim",
        r#"{"owner":"crashed#1","claimed_at_ms":0}"#,
    );
    w.objects.insert(
        "data",
        "runs/2024-05-01/run-1/manifest.json",
        r#"{"batches":1,"valid":1,"rejected":0}"#,
    );
    w.objects.insert(
        "data",
        "runs/2024-05-01/run-1/batches/batch-000001.json",
        "{}",
    );
    let payload = json!({"mailing_list_id": "CG_1", "import_id": "PGRS_1", "added": 1, "updated": 0, "failed": 0});
    let message = envelope("invite", "batch-000001", payload)
        .to_json()
        .unwrap();
    let response = w.runner.handle_event(sqs_event(&[&message])).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let result = w
        .objects
        .text("data", "runs/2024-05-01/run-1/invite/result.json")
        .unwrap();
    assert!(result.contains("EMD_LEFT"), "{result}");
}

#[tokio::test]
async fn the_distribution_is_scheduled_with_the_documented_body_once_the_run_is_complete() {
    let server = MockServer::start().await;
    mount_distributions(&server, json!([])).await;
    Mock::given(method("POST"))
        .and(path("/API/v3/distributions"))
        .and(body_json(json!({
            "message": {"libraryId": "UR_1", "messageId": "MS_1"},
            "recipients": {"mailingListId": "CG_1"},
            "header": {"fromEmail": "a@b.co", "fromName": "Acme", "subject": "Hi"},
            "surveyLink": {"surveyId": "SV_1", "expirationDate": "2024-05-30T22:00:00Z", "type": "Individual"},
            "sendDate": "2024-04-30T22:00:00Z"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"result": {"id": "EMD_1"}, "meta": {"requestId": "r"}})))
        .expect(1)
        .mount(&server)
        .await;
    let w = world::<DistributionScheduler<Defaults>>(&server, "invite", INVITE);
    let payload = json!({"mailing_list_id": "CG_1", "import_id": "PGRS_1", "added": 1, "updated": 0, "failed": 0});
    let first = envelope("invite", "batch-000001", payload.clone())
        .to_json()
        .unwrap();
    let second = envelope("invite", "batch-000002", payload)
        .to_json()
        .unwrap();
    // The first batch is done before the validator sealed the run: nothing is scheduled.
    w.objects.insert(
        "data",
        "runs/2024-05-01/run-1/batches/batch-000001.json",
        "{}",
    );
    assert!(
        w.runner
            .handle_event(sqs_event(&[&first]))
            .await
            .batch_item_failures
            .is_empty()
    );
    // The validator seals the run (two batches) before sending the last one, which is then
    // imported; its trigger arrives twice in one batch (an SQS duplicate): one POST wins.
    w.objects.insert(
        "data",
        "runs/2024-05-01/run-1/manifest.json",
        r#"{"batches":2,"valid":2,"rejected":0}"#,
    );
    w.objects.insert(
        "data",
        "runs/2024-05-01/run-1/batches/batch-000002.json",
        "{}",
    );
    let response = w.runner.handle_event(sqs_event(&[&second, &second])).await;
    assert_eq!(
        response.batch_item_failures.len(),
        1,
        "the loser comes back later"
    );
    // Redelivered after the winner finished: it finds the stored result and re-emits it.
    let again = w.runner.handle_event(sqs_event(&[&second])).await;
    assert!(again.batch_item_failures.is_empty());
    assert!(
        w.objects
            .text("data", "runs/2024-05-01/run-1/invite/result.json")
            .unwrap()
            .contains("EMD_1")
    );
}

#[tokio::test]
async fn a_fixed_list_is_scheduled_from_the_validators_records_once_the_run_is_sealed() {
    let server = MockServer::start().await;
    mount_distributions(&server, json!([])).await;
    Mock::given(method("POST"))
        .and(path("/API/v3/distributions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"result": {"id": "EMD_9"}, "meta": {"requestId": "r"}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let config = format!("{INVITE}\nmailing_list_id='CG_FIXED'");
    let w = world::<DistributionScheduler<Defaults>>(&server, "invite", &config);
    let first = envelope("invite", "batch-000001", batch())
        .to_json()
        .unwrap();
    let last = envelope("invite", "batch-000002", batch())
        .to_json()
        .unwrap();
    // Before the validator seals the run nothing is scheduled.
    let early = w.runner.handle_event(sqs_event(&[&first])).await;
    assert!(early.batch_item_failures.is_empty());
    w.objects.insert(
        "data",
        "runs/2024-05-01/run-1/manifest.json",
        r#"{"batches":2,"valid":2,"rejected":0}"#,
    );
    for _ in 0..2 {
        let response = w.runner.handle_event(sqs_event(&[&last])).await;
        assert!(response.batch_item_failures.is_empty(), "{response:?}");
    }
    let requests: Vec<_> = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "POST")
        .collect();
    assert_eq!(requests.len(), 1, "one distribution per run");
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["recipients"]["mailingListId"], "CG_FIXED");
}

#[tokio::test]
async fn records_without_a_fixed_list_are_rejected_not_retried() {
    let server = MockServer::start().await;
    let w = world::<DistributionScheduler<Defaults>>(&server, "invite", INVITE);
    let body = envelope("invite", "batch-000001", batch())
        .to_json()
        .unwrap();
    let response = w.runner.handle_event(sqs_event(&[&body])).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "a permanent error is not retried"
    );
    let rejected = w
        .objects
        .keys("data", "reports/2024-05-01/run-1/invite/rejected/");
    assert_eq!(rejected.len(), 1);
    let report = w.objects.text("data", &rejected[0]).unwrap();
    assert!(report.contains("mailing_list_id"), "{report}");
    assert!(server.received_requests().await.unwrap().is_empty());
}
