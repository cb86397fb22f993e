//! The mock Qualtrics API driven by the framework's real client and steps: envelopes,
//! auth, upserts, idempotency, paging, exports and every kind of injected fault.

use std::sync::Arc;
use std::time::Duration;

use etlgen_runtime::config::Config;
use etlgen_runtime::kinds::{RecordBatch, contacts, distribution, exporter, responses};
use etlgen_runtime::local::qualtrics::{
    FaultKind, Faults, MockConfig, MockQualtrics, MockState, RunningMock, Stats,
};
use etlgen_runtime::ports::{QualtricsApi, Services};
use etlgen_runtime::qualtrics::{ApiRequest, ApiResponse, Client, endpoint};
use etlgen_runtime::runner::Runner;
use etlgen_runtime::testing::{
    MemoryNotifications, MemoryObjectStore, MemoryQueue, MemorySftp, sqs_event,
};
use etlgen_runtime::{Envelope, LogicalDate, RunId, StepError};
use serde::Deserialize;
use serde_json::{Value, json};

const TOKEN: &str = r#"{"api_token":"local-token"}"#;

async fn start(config: MockConfig) -> RunningMock {
    MockQualtrics::start(config).await.expect("the mock starts")
}

fn config_toml(mock: &RunningMock, extra: &str) -> String {
    format!(
        "[pipeline]\nname='acme'\ndata_bucket='data'\n[qualtrics]\ndatacenter='fra1'\n\
         secret_id='s'\nbase_url='{}'\nbackoff_base_ms=1\nbackoff_max_ms=20\n{extra}",
        mock.base_url()
    )
}

/// The framework's client, with small backoffs; `extra` goes into `[qualtrics]`.
fn client(mock: &RunningMock, extra: &str, secret: &str) -> Client {
    let config = Config::from_toml("test", &config_toml(mock, extra)).unwrap();
    Client::new(config.qualtrics.as_ref().unwrap(), secret).unwrap()
}

#[derive(Debug, Deserialize)]
struct Id {
    id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Progress {
    #[serde(default)]
    percent_complete: f64,
    status: String,
    #[serde(default)]
    progress_id: Option<String>,
    #[serde(default)]
    file_id: Option<String>,
    #[serde(default)]
    contacts: Option<Value>,
}

fn record(value: Value) -> etlgen_runtime::kinds::Record {
    value.as_object().unwrap().clone()
}

fn envelope<T>(record_key: &str, payload: T) -> Envelope<T> {
    Envelope::new(
        "acme",
        RunId::new("run-1"),
        LogicalDate::from_ymd(2024, 5, 1).unwrap(),
        "import-responses",
        record_key,
        payload,
    )
}

fn contact_settings() -> contacts::Settings {
    toml::from_str("directory_id = 'POOL_1'").unwrap()
}

fn distribution_settings() -> distribution::Settings {
    toml::from_str(
        "survey_id='SV_1'\nlibrary_id='UR_1'\nmessage_id='MS_1'\nfrom_email='a@b.co'\n\
         from_name='A'\nsubject='S'",
    )
    .unwrap()
}

fn response_settings() -> responses::Settings {
    toml::from_str("survey_id = 'SV_1'").unwrap()
}

fn create_list(name: &str) -> ApiRequest {
    ApiRequest::post_json(
        endpoint::CREATE_MAILING_LIST,
        "directories/POOL_1/mailinglists",
        json!({ "name": name, "ownerId": "UR_1", "prioritizeListMetadata": false }),
    )
}

fn response_import(record_key: &str, rows: &[Value]) -> ApiRequest {
    let records: Vec<_> = rows.iter().cloned().map(record).collect();
    let batch = envelope(record_key, RecordBatch::default());
    responses::build_request(&batch, &records, &response_settings()).unwrap()
}

/// A contact import through the framework's own request builder.
fn contact_import(list: &str, rows: &[Value]) -> ApiRequest {
    let settings = contact_settings();
    let contacts: Vec<_> = rows
        .iter()
        .map(|r| contacts::map(&record(r.clone()), &settings).unwrap())
        .collect();
    contacts::build_request(&contacts, list, &settings)
}

async fn get(api: &Client, name: &'static str, path: &str) -> Progress {
    api.send(ApiRequest::get(name, path))
        .await
        .unwrap()
        .result()
        .unwrap()
}

/// A raw call with the token, for what the client hides (headers, error bodies).
fn raw(mock: &RunningMock, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, format!("{}{path}", mock.url()))
        .header("X-API-TOKEN", "local-token")
}

async fn admin<T: serde::de::DeserializeOwned>(mock: &RunningMock, path: &str) -> T {
    reqwest::get(format!("{}/__mock/{path}", mock.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn put_faults(mock: &RunningMock, body: &str) -> reqwest::Response {
    reqwest::Client::new()
        .put(format!("{}/__mock/faults", mock.url()))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn contacts_upsert_by_ext_ref_and_imports_report_true_counts() {
    let mock = start(MockConfig {
        polls_to_complete: 2,
        ..MockConfig::default()
    })
    .await;
    let api = client(&mock, "", TOKEN);
    let created = api
        .send(create_list("acme 2024-05-01 run-1"))
        .await
        .unwrap();
    let list = created.result::<Id>().unwrap().id;
    assert!(list.starts_with("CG_") && list.len() == 18, "{list}");
    assert!(created.request_id.is_some_and(|id| id.len() == 36));

    let first = [
        json!({"id": "a", "email": "a@x.co", "tier": "gold"}),
        json!({"id": "b", "email": "b@x.co", "tier": "silver"}),
        json!({"id": "c", "email": "c@x.co", "tier": "gold"}),
    ];
    let started: Progress = api
        .send(contact_import(&list, &first))
        .await
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(started.status, "in progress");
    let import: Id = api
        .send(contact_import(&list, &first))
        .await
        .unwrap()
        .result()
        .unwrap();
    assert!(import.id.starts_with("CTR_"), "{}", import.id);
    let status_path = format!(
        "directories/POOL_1/mailinglists/{list}/transactioncontacts/{}",
        import.id
    );
    let polled = get(&api, endpoint::TRANSACTION_CONTACTS_STATUS, &status_path).await;
    assert_eq!(
        (polled.percent_complete, polled.status.as_str()),
        (50.0, "in progress")
    );
    let done = get(&api, endpoint::TRANSACTION_CONTACTS_STATUS, &status_path).await;
    assert_eq!(done.percent_complete, 100.0);
    assert_eq!(done.status, "complete");
    assert_eq!(
        done.contacts.unwrap()["count"],
        json!({"added": 0, "updated": 3, "failed": 0}),
        "the second identical import only updated"
    );

    let second = [
        json!({"id": "b", "email": "b@x.co", "tier": "silver"}),
        json!({"id": "c", "email": "c-new@x.co", "tier": "gold"}),
        json!({"id": "d", "email": "d@x.co", "tier": "bronze"}),
    ];
    let import: Id = api
        .send(contact_import(&list, &second))
        .await
        .unwrap()
        .result()
        .unwrap();
    let path = format!(
        "directories/POOL_1/mailinglists/{list}/transactioncontacts/{}",
        import.id
    );
    get(&api, endpoint::TRANSACTION_CONTACTS_STATUS, &path).await;
    let done = get(&api, endpoint::TRANSACTION_CONTACTS_STATUS, &path).await;
    assert_eq!(
        done.contacts.unwrap()["count"],
        json!({"added": 1, "updated": 2, "failed": 0})
    );

    let state = mock.state();
    assert_eq!(state.mailing_lists.len(), 1);
    let stored = state.mailing_list(&list).unwrap();
    assert_eq!(
        (
            stored.name.as_str(),
            stored.owner_id.as_deref(),
            stored.directory_id.as_str()
        ),
        ("acme 2024-05-01 run-1", Some("UR_1"), "POOL_1")
    );
    let writes: Vec<(&str, u32)> = stored
        .contacts
        .iter()
        .map(|(k, c)| (k.as_str(), c.writes))
        .collect();
    assert_eq!(writes, [("a", 2), ("b", 3), ("c", 3), ("d", 1)]);
    let c = &stored.contacts["c"];
    assert_eq!(c.fields["email"], "c-new@x.co");
    assert_eq!(c.fields["embeddedData"], json!({"tier": "gold"}));
    assert!(c.id.starts_with("CID_"));
    assert_eq!(state.contact_imports.len(), 3);
    assert_eq!(state.contact_imports[2].added, 1);

    // The real API is not idempotent here: the same name makes another list.
    let again = api
        .send(create_list("acme 2024-05-01 run-1"))
        .await
        .unwrap();
    assert_ne!(again.result::<Id>().unwrap().id, list);
    assert_eq!(mock.state().mailing_lists.len(), 2);

    // A contact without extRef is keyed by e-mail; one without both fails.
    let raw_import = json!({"transactionMeta": {"fields": []}, "contacts": [
        {"email": "e@x.co"}, {"firstName": "nobody"}
    ]});
    let import: Id = api
        .send(ApiRequest::post_json(
            endpoint::IMPORT_TRANSACTION_CONTACTS,
            format!("directories/POOL_1/mailinglists/{list}/transactioncontacts"),
            raw_import,
        ))
        .await
        .unwrap()
        .result()
        .unwrap();
    let path = format!(
        "directories/POOL_1/mailinglists/{list}/transactioncontacts/{}",
        import.id
    );
    get(&api, endpoint::TRANSACTION_CONTACTS_STATUS, &path).await;
    let done = get(&api, endpoint::TRANSACTION_CONTACTS_STATUS, &path).await;
    assert_eq!(
        done.contacts.unwrap()["count"],
        json!({"added": 1, "updated": 0, "failed": 1})
    );
    assert!(
        mock.state()
            .mailing_list(&list)
            .unwrap()
            .contacts
            .contains_key("e@x.co")
    );

    let stats = mock.stats();
    assert_eq!(stats.calls_to(endpoint::CREATE_MAILING_LIST), 2);
    assert_eq!(stats.calls_to(endpoint::IMPORT_TRANSACTION_CONTACTS), 4);
    assert_eq!(stats.calls_to(endpoint::TRANSACTION_CONTACTS_STATUS), 6);
    assert_eq!(stats.total_calls, 12);
    assert_eq!(stats.effects, 6);
}

#[tokio::test]
async fn import_errors_use_the_error_envelope() {
    let mock = start(MockConfig::default()).await;
    let unknown = raw(
        &mock,
        reqwest::Method::POST,
        "/API/v3/directories/POOL_1/mailinglists/CG_nope/transactioncontacts",
    )
    .json(&json!({"contacts": []}))
    .send()
    .await
    .unwrap();
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["meta"]["httpStatus"], "404 - Not Found");
    assert_eq!(body["meta"]["error"]["errorCode"], "NOT_FOUND");
    assert!(
        body["meta"]["error"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("CG_nope")
    );

    let api = client(&mock, "", TOKEN);
    let list = api
        .send(create_list("l"))
        .await
        .unwrap()
        .result::<Id>()
        .unwrap()
        .id;
    let bad_shape = api
        .send(ApiRequest::post_json(
            endpoint::IMPORT_TRANSACTION_CONTACTS,
            format!("directories/POOL_1/mailinglists/{list}/transactioncontacts"),
            json!({"contacts": {"extRef": "a"}}),
        ))
        .await
        .unwrap_err();
    assert!(!bad_shape.is_retryable());
    assert!(bad_shape.to_string().contains("HTTP 400"), "{bad_shape}");
    assert!(
        bad_shape.to_string().contains("contacts is required"),
        "{bad_shape}"
    );
    let other_directory = api
        .send(ApiRequest::post_json(
            endpoint::IMPORT_TRANSACTION_CONTACTS,
            format!("directories/POOL_2/mailinglists/{list}/transactioncontacts"),
            json!({"contacts": []}),
        ))
        .await
        .unwrap_err();
    assert!(other_directory.to_string().contains("HTTP 404"));

    let unknown_route = raw(&mock, reqwest::Method::GET, "/API/v3/whoami")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_route.status(), 404);
    let body: Value = unknown_route.json().await.unwrap();
    assert_eq!(body["meta"]["error"]["errorCode"], "NOT_FOUND");
    assert_eq!(mock.stats().calls_to("unknown"), 1);
    assert_eq!(mock.state().contact_imports.len(), 0);
}

#[tokio::test]
async fn distributions_are_created_every_time_and_recorded() {
    let mock = start(MockConfig::default()).await;
    let api = client(&mock, "", TOKEN);
    let settings = distribution_settings();
    let at = distribution::send_time(LogicalDate::from_ymd(2024, 5, 1).unwrap(), &settings);
    let request = distribution::build_request("CG_1", at, &settings);
    let first = api
        .send(request.clone())
        .await
        .unwrap()
        .result::<Id>()
        .unwrap();
    let second = api.send(request).await.unwrap().result::<Id>().unwrap();
    assert!(first.id.starts_with("EMD_"));
    assert_ne!(first.id, second.id, "no Idempotency-Key: two distributions");
    let state = mock.state();
    let d = &state.distributions[0];
    assert_eq!(d.id, first.id);
    assert_eq!(
        (
            d.survey_id.as_deref(),
            d.mailing_list_id.as_deref(),
            d.send_date.as_deref()
        ),
        (Some("SV_1"), Some("CG_1"), Some("2024-05-01T09:00:00Z"))
    );
    assert_eq!(d.message, json!({"libraryId": "UR_1", "messageId": "MS_1"}));
    assert_eq!(d.header["fromEmail"], "a@b.co");
    assert_eq!(state.distributions_of("SV_1").len(), 2);

    let missing = api
        .send(ApiRequest::post_json(
            endpoint::CREATE_DISTRIBUTION,
            "distributions",
            json!({"recipients": {"mailingListId": "CG_1"}}),
        ))
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("surveyLink"), "{missing}");
    assert_eq!(mock.state().distributions.len(), 2);
}

#[tokio::test]
async fn response_imports_are_deduplicated_by_idempotency_key() {
    let mock = start(MockConfig {
        polls_to_complete: 2,
        ..MockConfig::default()
    })
    .await;
    let api = client(&mock, "", TOKEN);
    let rows = [
        json!({"q1": "5", "comment": "fine, thanks"}),
        json!({"q1": "3", "comment": ""}),
    ];
    let first: Progress = api
        .send(response_import("batch-1", &rows))
        .await
        .unwrap()
        .result()
        .unwrap();
    let progress_id = first.progress_id.unwrap();
    assert!(progress_id.starts_with("PGR_"));
    assert_eq!(first.status, "inProgress");
    let repeat: Progress = api
        .send(response_import("batch-1", &rows))
        .await
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(repeat.progress_id.as_deref(), Some(progress_id.as_str()));
    assert_eq!(
        mock.state().responses_of("SV_1").len(),
        2,
        "one set of responses"
    );

    let path = format!("surveys/SV_1/import-responses/{progress_id}");
    let polled = get(&api, endpoint::IMPORT_RESPONSES_PROGRESS, &path).await;
    assert_eq!(
        (polled.percent_complete, polled.status.as_str()),
        (50.0, "inProgress")
    );
    let done = get(&api, endpoint::IMPORT_RESPONSES_PROGRESS, &path).await;
    assert_eq!(
        (done.percent_complete, done.status.as_str()),
        (100.0, "complete")
    );

    let other: Progress = api
        .send(response_import("batch-2", &rows))
        .await
        .unwrap()
        .result()
        .unwrap();
    assert_ne!(other.progress_id.as_deref(), Some(progress_id.as_str()));
    let state = mock.state();
    let stored = state.responses_of("SV_1");
    assert_eq!(stored.len(), 4, "a different key: two sets");
    assert_eq!(stored[0].values["comment"], "fine, thanks");
    assert_eq!(stored[0].import_id, progress_id);
    assert!(stored.iter().all(|r| r.id.starts_with("R_")));
    assert_eq!(state.idempotency_keys.len(), 2);
    assert_eq!(state.idempotency_keys[0].replays, 1);
    assert_eq!(
        state.idempotency_keys[0].key,
        envelope("batch-1", ()).idempotency_key.to_string()
    );

    // The same key with another file is a conflict, and creates nothing.
    let conflict = api
        .send(response_import("batch-1", &[json!({"q1": "1"})]))
        .await
        .unwrap_err();
    assert!(!conflict.is_retryable());
    assert!(conflict.to_string().contains("HTTP 409"), "{conflict}");
    assert!(
        conflict.to_string().contains("IDEMPOTENCY_CONFLICT"),
        "{conflict}"
    );
    assert_eq!(mock.state().responses_of("SV_1").len(), 4);
    let stats = mock.stats();
    assert_eq!((stats.replays, stats.effects), (1, 2));
    assert_eq!(stats.calls_to(endpoint::IMPORT_RESPONSES), 4);
}

/// Minimal reading of the mock's single-entry stored zip: (name, data).
fn unzip_one(zip: &[u8]) -> (String, Vec<u8>) {
    assert_eq!(&zip[..4], b"PK\x03\x04", "a zip local file header");
    let u16_at = |i: usize| usize::from(u16::from_le_bytes([zip[i], zip[i + 1]]));
    let u32_at = |i: usize| u32::from_le_bytes(zip[i..i + 4].try_into().unwrap()) as usize;
    assert_eq!(u16_at(8), 0, "stored");
    let (size, name_len, extra_len) = (u32_at(18), u16_at(26), u16_at(28));
    let name = String::from_utf8(zip[30..30 + name_len].to_vec()).unwrap();
    let start = 30 + name_len + extra_len;
    assert_eq!(&zip[zip.len() - 22..zip.len() - 18], b"PK\x05\x06");
    (name, zip[start..start + size].to_vec())
}

#[tokio::test]
async fn exports_serve_what_the_exporter_asks_for() {
    let mock = start(MockConfig::default()).await;
    let api = client(&mock, "", TOKEN);
    let rows = [
        json!({"RecordedDate": "2024-05-01 10:00:00", "q1": "5"}),
        json!({"RecordedDate": "2024-05-02 10:00:00", "q1": "4"}),
        json!({"RecordedDate": "2024-05-01T23:59:59Z", "q1": "3"}),
    ];
    api.send(response_import("batch-1", &rows)).await.unwrap();
    let settings: exporter::Settings = toml::from_str("survey_id = 'SV_1'").unwrap();
    let input = envelope("export", json!({}));
    let started: Progress = api
        .send(exporter::build_request(&input, &settings))
        .await
        .unwrap()
        .result()
        .unwrap();
    let progress_id = started.progress_id.unwrap();
    assert!(progress_id.starts_with("ES_"));
    let done = get(
        &api,
        endpoint::EXPORT_RESPONSES_PROGRESS,
        &format!("surveys/SV_1/export-responses/{progress_id}"),
    )
    .await;
    assert_eq!(done.status, "complete");
    let file_id = done.file_id.unwrap();
    let file = api
        .send(ApiRequest::get(
            endpoint::EXPORT_RESPONSES_FILE,
            format!("surveys/SV_1/export-responses/{file_id}/file"),
        ))
        .await
        .unwrap();
    let (name, csv) = unzip_one(&file.body);
    assert_eq!(name, "SV_1.csv");
    let responses = mock.state().responses_of("SV_1").to_vec();
    let expected = format!(
        "ResponseId,RecordedDate,q1\n{},2024-05-01T10:00:00Z,5\n{},2024-05-01T23:59:59Z,3\n",
        responses[0].id, responses[2].id
    );
    assert_eq!(String::from_utf8(csv).unwrap(), expected, "only 2024-05-01");

    // Uncompressed JSON, as another hook might ask.
    let start_json = ApiRequest::post_json(
        endpoint::EXPORT_RESPONSES,
        "surveys/SV_1/export-responses",
        json!({"format": "json", "compress": false}),
    );
    let started: Progress = api.send(start_json).await.unwrap().result().unwrap();
    let done = get(
        &api,
        endpoint::EXPORT_RESPONSES_PROGRESS,
        &format!(
            "surveys/SV_1/export-responses/{}",
            started.progress_id.unwrap()
        ),
    )
    .await;
    let file = api
        .send(ApiRequest::get(
            endpoint::EXPORT_RESPONSES_FILE,
            format!(
                "surveys/SV_1/export-responses/{}/file",
                done.file_id.unwrap()
            ),
        ))
        .await
        .unwrap();
    let exported: Value = serde_json::from_slice(&file.body).unwrap();
    assert_eq!(exported["responses"].as_array().unwrap().len(), 3);
    assert_eq!(exported["responses"][1]["values"]["q1"], "4");

    let unsupported = api
        .send(ApiRequest::post_json(
            endpoint::EXPORT_RESPONSES,
            "surveys/SV_1/export-responses",
            json!({"format": "spss"}),
        ))
        .await
        .unwrap_err();
    assert!(unsupported.to_string().contains("HTTP 400"));
}

#[derive(Debug, Default)]
struct Defaults;
impl contacts::Hooks for Defaults {}
impl responses::Hooks for Defaults {}
impl exporter::Hooks for Defaults {}

#[tokio::test]
async fn the_frameworks_steps_run_against_the_mock_exactly_once() {
    let mock = start(MockConfig {
        polls_to_complete: 2,
        ..MockConfig::default()
    })
    .await;
    let steps = "[steps.import-contacts]\nnext_step='x'\nnext_queue_url='https://sqs.test/x'\n\
                 directory_id='POOL_1'\npoll_interval_ms=1\n\
                 [steps.import-responses]\nnext_step='x'\nnext_queue_url='https://sqs.test/x'\n\
                 survey_id='SV_1'\npoll_interval_ms=1\n\
                 [steps.export]\nnext_step='x'\nnext_queue_url='https://sqs.test/x'\n\
                 survey_id='SV_1'\npoll_interval_ms=1\n";
    let config = Config::from_toml("test", &format!("{}{steps}", config_toml(&mock, ""))).unwrap();
    let objects = Arc::new(MemoryObjectStore::default());
    let services = Services {
        qualtrics: Arc::new(client(&mock, "", TOKEN)),
        objects: objects.clone(),
        queue: Arc::new(MemoryQueue::default()),
        notifications: Arc::new(MemoryNotifications::default()),
        sftp: Arc::new(MemorySftp::default()),
    };
    let deliver = async |step: &str, body: String| {
        let failures = match step {
            "import-contacts" => {
                let runner = Runner::<contacts::ContactImporter<Defaults>>::new(
                    step,
                    config.clone(),
                    services.clone(),
                )
                .unwrap();
                runner.handle_event(sqs_event(&[&body])).await
            }
            "import-responses" => {
                let runner = Runner::<responses::ResponseImporter<Defaults>>::new(
                    step,
                    config.clone(),
                    services.clone(),
                )
                .unwrap();
                runner.handle_event(sqs_event(&[&body])).await
            }
            _ => {
                let runner = Runner::<exporter::Exporter<Defaults>>::new(
                    step,
                    config.clone(),
                    services.clone(),
                )
                .unwrap();
                runner.handle_event(sqs_event(&[&body])).await
            }
        };
        assert!(failures.batch_item_failures.is_empty(), "{step} failed");
    };
    let batch = |step: &str, key: &str, rows: Value| {
        let records = rows
            .as_array()
            .unwrap()
            .iter()
            .cloned()
            .map(record)
            .collect();
        let envelope = Envelope::new(
            "acme",
            RunId::new("run-1"),
            LogicalDate::from_ymd(2024, 5, 1).unwrap(),
            step,
            key,
            RecordBatch { records },
        );
        envelope.to_json().unwrap()
    };
    let people = json!([{"id": "1", "email": "a@x.co"}, {"id": "2", "email": "b@x.co"}]);
    let contacts_batch = batch("import-contacts", "batch-000001", people);
    deliver("import-contacts", contacts_batch.clone()).await;
    deliver("import-contacts", contacts_batch).await; // a redelivery
    let answers = json!([{"RecordedDate": "2024-05-01 08:00:00", "q1": "5"}]);
    let answers_batch = batch("import-responses", "batch-000001", answers);
    deliver("import-responses", answers_batch.clone()).await;
    deliver("import-responses", answers_batch).await; // a redelivery
    deliver("export", batch("export", "export", json!([]))).await;

    let state: MockState = admin(&mock, "state").await;
    assert_eq!(state, mock.state(), "the admin route serves the same state");
    assert_eq!(state.mailing_lists.len(), 1, "one list per run");
    assert_eq!(state.mailing_lists[0].contacts.len(), 2);
    assert_eq!(
        state.responses_of("SV_1").len(),
        1,
        "one response, exactly once"
    );
    assert_eq!(state.exports.len(), 1);
    let zip = objects
        .keys("data", "exports/")
        .into_iter()
        .map(|key| objects.text("data", &key).unwrap())
        .next()
        .expect("the export was written");
    // The store reads back as lossy text: enough to see the zip and its stored CSV.
    assert!(zip.starts_with("PK"), "{zip}");
    let row = format!(
        "{},2024-05-01T08:00:00Z,5\n",
        state.responses_of("SV_1")[0].id
    );
    assert!(
        zip.contains(&format!("ResponseId,RecordedDate,q1\n{row}")),
        "{zip}"
    );
}

#[tokio::test]
async fn token_and_oauth_authenticate_and_anything_else_gets_401() {
    let mock = start(MockConfig::default()).await;
    let oauth = client(
        &mock,
        "auth='oauth'\noauth_scope='manage:all'",
        r#"{"client_id":"local-client","client_secret":"local-secret"}"#,
    );
    oauth.send(create_list("by oauth")).await.unwrap();
    oauth.send(create_list("by oauth again")).await.unwrap();
    assert_eq!(mock.stats().oauth_tokens, 1, "the token is cached");
    assert_eq!(mock.state().mailing_lists.len(), 2);

    let wrong_secret = client(
        &mock,
        "auth='oauth'",
        r#"{"client_id":"local-client","client_secret":"nope"}"#,
    );
    let err = wrong_secret.send(create_list("x")).await.unwrap_err();
    assert!(err.to_string().contains("HTTP 401"), "{err}");
    // Refused credentials go to the dead-letter queue, to redrive once the secret is fixed.
    assert!(err.is_retryable());

    let wrong_token = client(&mock, "", r#"{"api_token":"nope"}"#);
    let err = wrong_token.send(create_list("x")).await.unwrap_err();
    assert!(err.is_retryable());
    assert!(err.to_string().contains("HTTP 401"), "{err}");
    assert!(err.to_string().contains("AUTHENTICATION_FAILED"), "{err}");

    let unknown_bearer = reqwest::Client::new()
        .get(format!(
            "{}directories/POOL_1/mailinglists",
            mock.base_url()
        ))
        .bearer_auth("not-issued")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_bearer.status(), 401);
    let body: Value = unknown_bearer.json().await.unwrap();
    assert_eq!(body["meta"]["httpStatus"], "401 - Unauthorized");
    assert_eq!(body["meta"]["error"]["errorCode"], "AUTHENTICATION_FAILED");
    assert_eq!(body["meta"]["requestId"].as_str().unwrap().len(), 36);

    let token = reqwest::Client::new()
        .post(format!("{}/oauth2/token", mock.url()))
        .basic_auth("local-client", Some("local-secret"))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 400);
    let stats = mock.stats();
    assert_eq!(stats.unauthorized, 2);
    assert_eq!(
        mock.state().mailing_lists.len(),
        2,
        "rejected calls have no effect"
    );
}

#[tokio::test]
async fn a_429_on_every_call_is_retried_then_fails_without_any_effect() {
    let mock = start(MockConfig {
        faults: Faults {
            rate_429: 1.0,
            retry_after_seconds: 0,
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await;
    let api = client(&mock, "max_retries=3", TOKEN);
    let err = api.send(create_list("never")).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("HTTP 429"), "{err}");
    let stats = mock.stats();
    assert_eq!(stats.total_calls, 4, "the first attempt and 3 retries");
    assert_eq!(stats.faults_of(FaultKind::TooManyRequests), 4);
    assert_eq!(stats.effects, 0);
    assert!(stats.recent.iter().all(|c| c.status == 429 && !c.effect));
    assert_eq!(mock.state(), MockState::default());

    mock.set_faults(Faults {
        rate_429: 1.0,
        retry_after_seconds: 7,
        ..Faults::default()
    })
    .unwrap();
    let limited = raw(&mock, reqwest::Method::POST, "/API/v3/distributions")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "7");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["meta"]["httpStatus"], "429 - Too Many Requests");
    // A Retry-After beyond the client's backoff_max_ms ends its retries at once.
    let err = api.send(create_list("never")).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    let stats: Stats = admin(&mock, "stats").await;
    assert_eq!(stats.total_calls, 6);
    assert_eq!(stats.faults_of(FaultKind::TooManyRequests), 6);
}

/// Sends 50 distributions to a fresh mock, each again after a 500 as SQS would redeliver
/// it (the client itself does not resend a create after a 5xx; the mock's 500s come before
/// the effect); returns their subjects as recorded and the 500s injected.
async fn fifty_distributions(seed: u64) -> (Vec<String>, u64, u64) {
    let mock = start(MockConfig {
        faults: Faults {
            rate_500: 0.3,
            seed,
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await;
    let api = client(&mock, "", TOKEN);
    let mut settings = distribution_settings();
    for i in 0..50 {
        settings.subject = format!("subject {i}");
        let at = distribution::send_time(LogicalDate::from_ymd(2024, 5, 1).unwrap(), &settings);
        let request = distribution::build_request("CG_1", at, &settings);
        let mut sends = 0;
        let response: ApiResponse = loop {
            sends += 1;
            match api.send(request.clone()).await {
                Err(e) if e.is_retryable() && sends < 20 => continue,
                sent => break sent.unwrap(),
            }
        };
        assert!(response.result::<Id>().unwrap().id.starts_with("EMD_"));
    }
    let subjects = mock
        .state()
        .distributions
        .iter()
        .map(|d| d.header["subject"].as_str().unwrap().to_owned())
        .collect();
    let stats = mock.stats();
    (
        subjects,
        stats.faults_of(FaultKind::ServerError),
        stats.total_calls,
    )
}

#[tokio::test]
async fn seeded_500s_leave_every_effect_exactly_once() {
    let (subjects, failures, calls) = fifty_distributions(42).await;
    let expected: Vec<String> = (0..50).map(|i| format!("subject {i}")).collect();
    assert_eq!(
        subjects, expected,
        "each distribution exactly once, in order"
    );
    assert!(
        (5..=30).contains(&failures),
        "about 30% of calls failed: {failures}"
    );
    assert_eq!(
        calls,
        50 + failures,
        "every failed call was retried once more"
    );
    let again = fifty_distributions(42).await;
    assert_eq!(
        (again.1, again.2),
        (failures, calls),
        "the seed makes the run reproducible"
    );
    let other = fifty_distributions(7).await;
    assert_eq!(other.0, expected);
    assert_ne!(other.1, failures, "another seed, other faults");
}

#[tokio::test]
async fn poison_fails_every_time_until_the_faults_are_cleared() {
    let mock = start(MockConfig {
        faults: Faults {
            poison: vec!["POISON-ME".into()],
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await;
    let api = client(&mock, "max_retries=2", TOKEN);
    let poisoned = response_import("batch-1", &[json!({"q1": "POISON-ME"})]);
    let err = api.send(poisoned.clone()).await.unwrap_err();
    assert!(err.is_retryable());
    assert!(err.to_string().contains("HTTP 500"), "{err}");
    assert_eq!(mock.stats().faults_of(FaultKind::Poison), 3);
    api.send(response_import("batch-2", &[json!({"q1": "fine"})]))
        .await
        .unwrap();
    assert_eq!(
        mock.state().responses_of("SV_1").len(),
        1,
        "other calls go through"
    );
    api.send(poisoned.clone()).await.unwrap_err();
    assert_eq!(mock.stats().faults_of(FaultKind::Poison), 6);

    let fixed = put_faults(&mock, r#"{"poison": []}"#).await;
    assert_eq!(fixed.status(), 200);
    let faults: Faults = admin(&mock, "faults").await;
    assert!(faults.poison.is_empty());
    let ok: Progress = api.send(poisoned).await.unwrap().result().unwrap();
    assert!(ok.progress_id.is_some());
    let state = mock.state();
    let values: Vec<&str> = state
        .responses_of("SV_1")
        .iter()
        .map(|r| r.values["q1"].as_str())
        .collect();
    assert_eq!(values, ["fine", "POISON-ME"]);
}

#[tokio::test]
async fn slow_answers_time_out_after_the_effect_and_the_key_prevents_duplicates() {
    let mock = start(MockConfig {
        faults: Faults {
            rate_slow: 1.0,
            slow_ms: 300,
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await;
    let api = client(&mock, "timeout_ms=100\nmax_retries=2", TOKEN);
    let err = api
        .send(response_import("batch-1", &[json!({"q1": "5"})]))
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(
        mock.state().responses_of("SV_1").len(),
        1,
        "the first attempt took effect; the retries were replays"
    );
    let stats = mock.stats();
    assert_eq!((stats.effects, stats.replays), (1, 2));
    assert_eq!(stats.faults_of(FaultKind::Slow), 3);

    // Without an Idempotency-Key, a timeout may follow the effect, so the client does not
    // send it again (that duplicated the distribution, once per retry): SQS redelivers, and
    // the scheduler looks for the distribution before creating it.
    let settings = distribution_settings();
    let at = distribution::send_time(LogicalDate::from_ymd(2024, 5, 1).unwrap(), &settings);
    let err = api
        .send(distribution::build_request("CG_1", at, &settings))
        .await
        .unwrap_err();
    assert!(
        err.is_retryable() && err.to_string().contains("timed out"),
        "{err}"
    );
    assert_eq!(mock.state().distributions.len(), 1);

    // Once the server is fast again, the keyed retry gets the original answer.
    mock.set_faults(Faults::default()).unwrap();
    let progress_id = mock.state().response_imports[0].id.clone();
    let ok: Progress = api
        .send(response_import("batch-1", &[json!({"q1": "5"})]))
        .await
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(ok.progress_id, Some(progress_id));
    assert_eq!(mock.state().responses_of("SV_1").len(), 1);
}

#[tokio::test]
async fn malformed_answers_are_200_with_broken_json_after_the_effect() {
    let mock = start(MockConfig {
        faults: Faults {
            rate_malformed: 1.0,
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await;
    let api = client(&mock, "", TOKEN);
    let response = api.send(create_list("half")).await.unwrap();
    assert_eq!(response.status, 200);
    assert!(serde_json::from_slice::<Value>(&response.body).is_err());
    assert!(response.request_id.is_none());
    let err: StepError = response.result::<Id>().unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(mock.state().mailing_lists.len(), 1, "the effect happened");
    assert_eq!(mock.stats().faults_of(FaultKind::Malformed), 1);

    // Errors stay well-formed: only successful answers are broken.
    let not_found = api
        .send(ApiRequest::get(
            endpoint::IMPORT_RESPONSES_PROGRESS,
            "surveys/SV_1/import-responses/PGR_nope",
        ))
        .await
        .unwrap_err();
    assert!(not_found.to_string().contains("NOT_FOUND"), "{not_found}");
}

#[tokio::test]
async fn bad_fault_configurations_are_rejected_with_the_field_and_range() {
    let invalid = Faults {
        rate_429: 1.5,
        ..Faults::default()
    };
    let err = invalid.validate().unwrap_err();
    assert!(
        err.contains("rate_429") && err.contains("0.0 to 1.0"),
        "{err}"
    );
    let refused = MockQualtrics::start(MockConfig {
        faults: invalid,
        ..MockConfig::default()
    })
    .await
    .unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);

    let mock = start(MockConfig::default()).await;
    let response = put_faults(&mock, r#"{"rate_429": 1.5}"#).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("rate_429"),
        "{body}"
    );
    let response = put_faults(&mock, r#"{"rate_42": 0.5}"#).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("unknown field"),
        "{body}"
    );
    assert!(
        mock.set_faults(Faults {
            poison: vec![String::new()],
            ..Faults::default()
        })
        .is_err()
    );
    let faults: Faults = admin(&mock, "faults").await;
    assert_eq!(faults, Faults::default(), "nothing was replaced");
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    elements: Vec<Value>,
    next_page: Option<String>,
}

/// Follows `nextPage` from `first` and returns the pages' ids.
async fn all_pages(mock: &RunningMock, first: String, id_field: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut url = Some(first);
    while let Some(next) = url {
        assert!(
            next.starts_with(&mock.url()),
            "nextPage is a full URL: {next}"
        );
        let page: Value = reqwest::Client::new()
            .get(&next)
            .header("X-API-TOKEN", "local-token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page: Page = serde_json::from_value(page["result"].clone()).unwrap();
        let ids = page
            .elements
            .iter()
            .map(|e| e[id_field].as_str().unwrap().to_owned())
            .collect();
        pages.push(ids);
        url = page.next_page;
    }
    pages
}

#[tokio::test]
async fn list_endpoints_page_with_full_next_page_urls() {
    let mock = start(MockConfig::default()).await;
    let api = client(&mock, "", TOKEN);
    let mut lists = Vec::new();
    for i in 0..5 {
        let id = api
            .send(create_list(&format!("list {i}")))
            .await
            .unwrap()
            .result::<Id>()
            .unwrap();
        lists.push(id.id);
    }
    api.send(ApiRequest::post_json(
        endpoint::CREATE_MAILING_LIST,
        "directories/POOL_2/mailinglists",
        json!({"name": "elsewhere"}),
    ))
    .await
    .unwrap();

    // Through the framework's client: the first page.
    let first: Page = api
        .send(
            ApiRequest::get(endpoint::DEFAULT, "directories/POOL_1/mailinglists")
                .query("pageSize", "2"),
        )
        .await
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(first.elements.len(), 2);
    assert_eq!(first.elements[0]["name"], "list 0");
    assert_eq!(first.elements[0]["contactCount"], 0);
    assert!(first.next_page.as_deref().unwrap().contains("skipToken="));

    let pages = all_pages(
        &mock,
        format!(
            "{}directories/POOL_1/mailinglists?pageSize=2",
            mock.base_url()
        ),
        "mailingListId",
    )
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    assert_eq!(
        pages.concat(),
        lists,
        "every list of POOL_1 once, in creation order"
    );

    let settings = distribution_settings();
    let at = distribution::send_time(LogicalDate::from_ymd(2024, 5, 1).unwrap(), &settings);
    let mut sv1 = Vec::new();
    for list in ["CG_a", "CG_b", "CG_a"] {
        let id = api
            .send(distribution::build_request(list, at, &settings))
            .await
            .unwrap();
        sv1.push(id.result::<Id>().unwrap().id);
    }
    let mut other = distribution_settings();
    other.survey_id = "SV_2".into();
    api.send(distribution::build_request("CG_a", at, &other))
        .await
        .unwrap();
    let pages = all_pages(
        &mock,
        format!("{}distributions?surveyId=SV_1&pageSize=2", mock.base_url()),
        "id",
    )
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(pages.concat(), sv1);
    let filtered: Page = api
        .send(
            ApiRequest::get(endpoint::DEFAULT, "distributions")
                .query("surveyId", "SV_1")
                .query("mailingListId", "CG_a"),
        )
        .await
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(filtered.elements.len(), 2);
    assert!(filtered.next_page.is_none());
    let element = &filtered.elements[0];
    assert_eq!(element["recipients"]["mailingListId"], "CG_a");
    assert_eq!(element["sendDate"], "2024-05-01T09:00:00Z");
    assert_eq!(element["surveyLink"]["surveyId"], "SV_1");

    let no_survey = api
        .send(ApiRequest::get(endpoint::DEFAULT, "distributions"))
        .await
        .unwrap_err();
    assert!(
        no_survey.to_string().contains("surveyId is required"),
        "{no_survey}"
    );
    let bad_size = api
        .send(
            ApiRequest::get(endpoint::DEFAULT, "distributions")
                .query("surveyId", "SV_1")
                .query("pageSize", "0"),
        )
        .await
        .unwrap_err();
    assert!(bad_size.to_string().contains("HTTP 400"));
    let stats = mock.stats();
    assert_eq!(stats.calls_to(endpoint::LIST_MAILING_LISTS), 4);
    assert_eq!(stats.calls_to(endpoint::LIST_DISTRIBUTIONS), 5);
}

#[tokio::test]
async fn reset_shutdown_and_drop_stop_as_documented() {
    let mock = start(MockConfig::default()).await;
    let api = client(&mock, "max_retries=0", TOKEN);
    api.send(create_list("l")).await.unwrap();
    let reset = reqwest::Client::new()
        .post(format!("{}/__mock/reset", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204);
    assert_eq!(mock.state(), MockState::default());
    assert_eq!(mock.stats().total_calls, 0);

    let base = mock.base_url();
    mock.shutdown().await.unwrap();
    let refused = reqwest::get(format!("{base}distributions")).await;
    assert!(refused.is_err(), "the server is gone after shutdown");

    let dropped = start(MockConfig::default()).await;
    let url = dropped.url();
    drop(dropped);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        reqwest::get(format!("{url}/__mock/stats")).await.is_err(),
        "dropping stops it"
    );
}

/// A delivery that created the run's list and died before recording it left the list
/// behind; the redelivery finds it by the run's name instead of creating a second one.
#[tokio::test]
async fn a_list_a_crashed_delivery_created_is_found_not_created_again() {
    let mock = start(MockConfig::default()).await;
    let api = client(&mock, "", TOKEN);
    let left: Value = api
        .send(ApiRequest::post_json(
            endpoint::CREATE_MAILING_LIST,
            "directories/POOL_1/mailinglists",
            json!({"name": "acme 2024-05-01 run-1", "prioritizeListMetadata": false}),
        ))
        .await
        .unwrap()
        .result()
        .unwrap();
    let steps = "[steps.import-contacts]\nnext_step='x'\nnext_queue_url='https://sqs.test/x'\n\
                 directory_id='POOL_1'\npoll_interval_ms=1\n";
    let config = Config::from_toml("test", &format!("{}{steps}", config_toml(&mock, ""))).unwrap();
    let objects = Arc::new(MemoryObjectStore::default());
    // The crashed delivery's claim, its lease long expired.
    objects.insert(
        "data",
        "runs/2024-05-01/run-1/mailing-list.claim",
        r#"{"owner":"crashed#1","claimed_at_ms":0}"#,
    );
    let services = Services {
        qualtrics: Arc::new(client(&mock, "", TOKEN)),
        objects,
        queue: Arc::new(MemoryQueue::default()),
        notifications: Arc::new(MemoryNotifications::default()),
        sftp: Arc::new(MemorySftp::default()),
    };
    let runner =
        Runner::<contacts::ContactImporter<Defaults>>::new("import-contacts", config, services)
            .unwrap();
    let envelope = Envelope::new(
        "acme",
        RunId::new("run-1"),
        LogicalDate::from_ymd(2024, 5, 1).unwrap(),
        "import-contacts",
        "batch-000001",
        RecordBatch {
            records: vec![record(json!({"id": "1", "email": "a@x.co"}))],
        },
    );
    let response = runner
        .handle_event(sqs_event(&[&envelope.to_json().unwrap()]))
        .await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let state = mock.state();
    assert_eq!(state.mailing_lists.len(), 1, "no second list");
    assert_eq!(state.mailing_lists[0].id, left["id"].as_str().unwrap());
    assert_eq!(state.mailing_lists[0].contacts.len(), 1);
}
