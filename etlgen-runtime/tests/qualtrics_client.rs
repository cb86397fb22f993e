//! The real Qualtrics client against a mock server: exact requests, auth, retries, limits.

use std::time::{Duration, Instant};

use etlgen_runtime::config::Config;
use etlgen_runtime::ports::QualtricsApi;
use etlgen_runtime::qualtrics::{ApiRequest, Client, endpoint};
use serde_json::json;
use wiremock::matchers::{bearer_token, body_json, body_string, header, method, path};
use wiremock::{Mock, MockBuilder, MockServer, ResponseTemplate};

fn client(server: &MockServer, extra: &str, secret: &str) -> Client {
    let toml = format!(
        "[pipeline]\nname='p'\ndata_bucket='b'\n[qualtrics]\ndatacenter='fra1'\nsecret_id='s'\n\
         base_url='{}/API/v3'\nbackoff_base_ms=10\nbackoff_max_ms=2000\n{extra}",
        server.uri()
    );
    let config = Config::from_toml("test", &toml).unwrap();
    Client::new(config.qualtrics.as_ref().unwrap(), secret).unwrap()
}

fn ok(result: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(
        json!({"result": result, "meta": {"httpStatus": "200 - OK", "requestId": "req-ok"}}),
    )
}

fn error(status: u16, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"meta": {"requestId": "req-err", "httpStatus": format!("{status} - Error"), "error": {"errorCode": code, "errorMessage": "went wrong"}}}))
}

/// A mock of `POST …/distributions`, to narrow with `.and(…)`.
fn post_distributions() -> MockBuilder {
    Mock::given(method("POST")).and(path("/API/v3/distributions"))
}

/// `POST /distributions` refusing the token `old` with `refusal`, `refused` times, and
/// creating a distribution for the token `new`, `created` times: a secret rotated under a
/// warm client.
async fn mount_rotation(
    server: &MockServer,
    refusal: ResponseTemplate,
    refused: u64,
    created: u64,
) {
    post_distributions()
        .and(header("X-API-TOKEN", "old"))
        .respond_with(refusal)
        .expect(refused)
        .mount(server)
        .await;
    post_distributions()
        .and(header("X-API-TOKEN", "new"))
        .respond_with(ok(json!({"id": "EMD_1"})))
        .expect(created)
        .mount(server)
        .await;
}

/// The OAuth token endpoint's answer issuing `token`.
fn issued(token: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"access_token": token, "expires_in": 3600}))
}

fn distribution() -> ApiRequest {
    ApiRequest::post_json(
        endpoint::CREATE_DISTRIBUTION,
        "distributions",
        json!({"recipients": {"mailingListId": "CG_1"}}),
    )
}

/// Where [`keyed`] goes.
const IMPORT: &str = "/API/v3/surveys/SV_1/import-responses";

/// A `POST` that may be sent again: Qualtrics replays a response import's key it has seen.
fn keyed() -> ApiRequest {
    ApiRequest::post_json(
        endpoint::IMPORT_RESPONSES,
        "surveys/SV_1/import-responses",
        json!({"responses": []}),
    )
    .idempotency_key("run-1/import")
}

#[tokio::test]
async fn token_auth_sends_the_exact_request_and_parses_the_envelope() {
    let server = MockServer::start().await;
    post_distributions()
        .and(header("X-API-TOKEN", "tok-123"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({"recipients": {"mailingListId": "CG_1"}})))
        .respond_with(ok(json!({"id": "EMD_1"})))
        .expect(1)
        .mount(&server)
        .await;
    let response = client(&server, "", r#"{"api_token":"tok-123"}"#)
        .send(distribution())
        .await
        .unwrap();
    assert_eq!(response.request_id.as_deref(), Some("req-ok"));
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    assert_eq!(response.result::<Id>().unwrap().id, "EMD_1");
}

#[tokio::test]
async fn a_429_is_retried_after_the_servers_retry_after() {
    let server = MockServer::start().await;
    post_distributions()
        .respond_with(error(429, "TOO_MANY").insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    post_distributions()
        .respond_with(ok(json!({"id": "EMD_1"})))
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();
    client(&server, "", "tok")
        .send(distribution())
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited only {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(IMPORT))
        .respond_with(error(500, "INTERNAL"))
        .expect(3)
        .mount(&server)
        .await;
    let err = client(&server, "max_retries=2", "tok")
        .send(keyed())
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("HTTP 500") && text.contains("INTERNAL") && text.contains("req-err"),
        "{text}"
    );
}

#[tokio::test]
async fn timeouts_are_retried_and_bounded() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(IMPORT))
        .respond_with(ok(json!({"id": "late"})).set_delay(Duration::from_millis(500)))
        .expect(2)
        .mount(&server)
        .await;
    let err = client(&server, "max_retries=1\ntimeout_ms=50", "tok")
        .send(keyed())
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert!(err.to_string().contains("timed out"), "{err}");
}

/// A `POST` without a key that fails after it was sent may have created its distribution:
/// sending it again would invite every contact twice, so the error goes back to SQS at once.
#[tokio::test]
async fn a_post_without_a_key_is_not_sent_again_after_a_5xx_or_a_timeout() {
    for (answer, config, expected) in [
        (error(502, "BAD_GATEWAY"), "max_retries=3", "HTTP 502"),
        (
            ok(json!({"id": "late"})).set_delay(Duration::from_millis(500)),
            "max_retries=3\ntimeout_ms=50",
            "timed out",
        ),
    ] {
        let server = MockServer::start().await;
        post_distributions()
            .respond_with(answer)
            .expect(1)
            .mount(&server)
            .await;
        let err = client(&server, config, "tok")
            .send(distribution())
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }
}

/// A connection that never opened sent nothing, so even a `POST` without a key is tried
/// again, a bounded number of times.
#[tokio::test]
async fn a_post_without_a_key_is_sent_again_when_it_never_left() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    let toml = format!(
        "[pipeline]\nname='p'\ndata_bucket='b'\n[qualtrics]\ndatacenter='fra1'\nsecret_id='s'\n\
         base_url='http://{address}/API/v3'\nbackoff_base_ms=50\nbackoff_max_ms=50\nmax_retries=2\n"
    );
    let config = Config::from_toml("test", &toml).unwrap();
    let client = Client::new(config.qualtrics.as_ref().unwrap(), "tok").unwrap();
    let logs = Logs::default();
    let err = {
        let _logging = tracing::subscriber::set_default(logs.subscriber());
        client.send(distribution()).await.unwrap_err()
    };
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("transport error"), "{err}");
    assert_eq!(
        logs.count("qualtrics call will be retried"),
        2,
        "max_retries=2"
    );
}

/// The log lines written while a subscriber from [`Logs::subscriber`] is the default.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        let logs = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || logs.clone())
            .finish()
    }

    fn count(&self, message: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .matches(message)
            .count()
    }
}

/// A refused API token is a deployment mistake: retryable, so the message reaches the
/// dead-letter queue to redrive once the secret is fixed, but not sent again here, where
/// the same token would be refused again.
#[tokio::test]
async fn refused_credentials_go_back_to_sqs_unretried_and_say_what_to_fix() {
    for status in [401, 403] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(IMPORT))
            .respond_with(error(status, "AUTHENTICATION_FAILED"))
            .expect(1)
            .mount(&server)
            .await;
        let err = client(&server, "max_retries=3", "tok")
            .send(keyed())
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("HTTP {status}")), "{text}");
        assert!(
            text.contains("secret_id") && text.contains("redrive"),
            "{text}"
        );
    }
}

/// An OAuth token refused before its expiry (revoked) is dropped, and the request is sent
/// again once with a new one.
#[tokio::test]
async fn a_refused_oauth_token_is_replaced_and_the_request_sent_again() {
    let server = MockServer::start().await;
    for token in ["bearer-1", "bearer-2"] {
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(issued(token))
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
    }
    post_distributions()
        .and(bearer_token("bearer-1"))
        .respond_with(error(401, "TOKEN_REVOKED"))
        .expect(1)
        .mount(&server)
        .await;
    post_distributions()
        .and(bearer_token("bearer-2"))
        .respond_with(ok(json!({"id": "EMD_1"})))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(
        &server,
        "auth='oauth'",
        r#"{"client_id":"id","client_secret":"secret"}"#,
    );
    client.send(distribution()).await.unwrap();
}

#[tokio::test]
async fn a_permanent_error_is_not_retried() {
    let server = MockServer::start().await;
    post_distributions()
        .respond_with(error(400, "BAD_LIST"))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server, "", "tok")
        .send(distribution())
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("BAD_LIST"), "{err}");
}

#[tokio::test]
async fn a_redirect_is_a_permanent_error_and_the_token_never_leaves_the_datacenter() {
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ok(json!({"id": "EMD_stolen"})))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let server = MockServer::start().await;
    post_distributions()
        .respond_with(ResponseTemplate::new(307).insert_header(
            "Location",
            format!("{}/API/v3/distributions", elsewhere.uri()),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server, "", "tok")
        .send(distribution())
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let message = err.to_string();
    assert!(message.contains("HTTP 307"), "{message}");
    assert!(
        message.contains(&elsewhere.uri()),
        "names where it pointed: {message}"
    );
    assert!(
        message.contains("[qualtrics] datacenter"),
        "suggests the fix: {message}"
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_backoff_ceiling_hands_the_message_back_to_sqs() {
    let server = MockServer::start().await;
    post_distributions()
        .respond_with(error(429, "TOO_MANY").insert_header("Retry-After", "120"))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server, "", "tok")
        .send(distribution())
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
}

#[tokio::test]
async fn oauth_client_credentials_are_exchanged_once_and_sent_as_bearer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .and(header("authorization", "Basic aWQ6c2VjcmV0"))
        .and(body_string(
            "grant_type=client_credentials&scope=manage%3Aall",
        ))
        .respond_with(issued("bearer-1"))
        .expect(1)
        .mount(&server)
        .await;
    post_distributions()
        .and(bearer_token("bearer-1"))
        .respond_with(ok(json!({"id": "EMD_1"})))
        .expect(2)
        .mount(&server)
        .await;
    let client = client(
        &server,
        "auth='oauth'\noauth_scope='manage:all'",
        r#"{"client_id":"id","client_secret":"secret"}"#,
    );
    client.send(distribution()).await.unwrap();
    client.send(distribution()).await.unwrap();
}

#[tokio::test]
async fn each_endpoint_is_held_to_its_budget() {
    let server = MockServer::start().await;
    post_distributions()
        .respond_with(ok(json!({"id": "EMD_1"})))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(
        &server,
        "[qualtrics.rate_limits]\ncreate_distribution = 1",
        "tok",
    );
    assert_eq!(client.budget(endpoint::CREATE_DISTRIBUTION), 1);
    assert_eq!(client.budget(endpoint::IMPORT_RESPONSES), 100);
    client.send(distribution()).await.unwrap();
    let second =
        tokio::time::timeout(Duration::from_millis(300), client.send(distribution())).await;
    assert!(
        second.is_err(),
        "the second call in the same minute must wait for the limiter"
    );
}

#[tokio::test]
async fn a_download_is_retried_until_its_answer_then_streamed_and_errors_keep_the_envelope() {
    let server = MockServer::start().await;
    let file_path = "/API/v3/surveys/SV_1/export-responses/F1/file";
    let file: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    Mock::given(method("GET"))
        .and(path(file_path))
        .respond_with(error(503, "UNAVAILABLE"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(file_path))
        .and(header("X-API-TOKEN", "tok"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(file.clone(), "application/zip"))
        .expect(1)
        .mount(&server)
        .await;
    let api = client(&server, "max_retries=2", "tok");
    let get = |what: &str| {
        ApiRequest::get(
            endpoint::EXPORT_RESPONSES_FILE,
            format!("surveys/SV_1/export-responses/{what}/file"),
        )
    };
    let mut body = api.download(get("F1")).await.unwrap();
    let mut read = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut body, &mut read)
        .await
        .unwrap();
    assert!(
        read == file,
        "streamed {} of {} bytes",
        read.len(),
        file.len()
    );

    Mock::given(method("GET"))
        .and(path("/API/v3/surveys/SV_1/export-responses/F2/file"))
        .respond_with(error(404, "NOT_FOUND"))
        .expect(1)
        .mount(&server)
        .await;
    let err = match api.download(get("F2")).await {
        Err(err) => err,
        Ok(_) => panic!("a 404 is not a file"),
    };
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("NOT_FOUND"), "{err}");
}

#[tokio::test]
async fn a_stalled_oauth_token_request_times_out_and_is_retryable() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(issued("late").set_delay(Duration::from_millis(500)))
        .expect(2)
        .mount(&server)
        .await;
    let err = client(
        &server,
        "auth='oauth'\nmax_retries=1\ntimeout_ms=50",
        r#"{"client_id":"id","client_secret":"secret"}"#,
    )
    .send(distribution())
    .await
    .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
}

/// A secret store that counts its reads.
struct Rotated {
    value: &'static str,
    reads: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl etlgen_runtime::ports::SecretStore for Rotated {
    async fn secret(&self, id: &str) -> Result<String, etlgen_runtime::StepError> {
        assert_eq!(id, "client-x/dev/qualtrics");
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(self.value.to_owned())
    }
}

fn rotated(value: &'static str) -> std::sync::Arc<Rotated> {
    std::sync::Arc::new(Rotated {
        value,
        reads: 0.into(),
    })
}

/// A token rotated in Secrets Manager reaches a warm client: the refusal reads the secret
/// again, and the request goes once more with the new token.
#[tokio::test]
async fn a_rotated_token_is_read_again_and_the_refused_request_sent_with_it() {
    let server = MockServer::start().await;
    mount_rotation(&server, error(401, "AUTHENTICATION_FAILED"), 1, 2).await;
    let store = rotated(r#"{"api_token":"new"}"#);
    let client = client(&server, "", "old").rereading(store.clone(), "client-x/dev/qualtrics");
    client.send(distribution()).await.unwrap();
    client.send(distribution()).await.unwrap();
    assert_eq!(store.reads.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A secret read again unchanged is not tried again, and a refusal within
/// `REREAD_EVERY` of the last read does not read it again.
#[tokio::test]
async fn an_unchanged_secret_is_not_sent_again_and_read_at_most_once_a_minute() {
    assert_eq!(
        etlgen_runtime::qualtrics::REREAD_EVERY,
        Duration::from_secs(60)
    );
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(IMPORT))
        .respond_with(error(403, "FORBIDDEN"))
        .expect(2)
        .mount(&server)
        .await;
    let store = rotated("old");
    let client =
        client(&server, "max_retries=3", "old").rereading(store.clone(), "client-x/dev/qualtrics");
    for _ in 0..2 {
        let err = client.send(keyed()).await.unwrap_err();
        assert!(
            err.is_retryable() && err.to_string().contains("HTTP 403"),
            "{err}"
        );
    }
    assert_eq!(store.reads.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Rotated OAuth client credentials: the token endpoint refuses the old ones, the secret is
/// read again, and the new ones get the token.
#[tokio::test]
async fn rotated_oauth_credentials_are_read_again_when_the_token_endpoint_refuses() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .and(header("authorization", "Basic aWQ6b2xk"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .and(header("authorization", "Basic aWQ6bmV3"))
        .respond_with(issued("bearer-new"))
        .expect(1)
        .mount(&server)
        .await;
    post_distributions()
        .and(bearer_token("bearer-new"))
        .respond_with(ok(json!({"id": "EMD_1"})))
        .expect(1)
        .mount(&server)
        .await;
    let store = rotated(r#"{"client_id":"id","client_secret":"new"}"#);
    let client = client(
        &server,
        "auth='oauth'",
        r#"{"client_id":"id","client_secret":"old"}"#,
    )
    .rereading(store.clone(), "client-x/dev/qualtrics");
    client.send(distribution()).await.unwrap();
    assert_eq!(store.reads.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Two requests refused with the same old token: one reads the secret, and the other,
/// waiting for that read, is sent again with its result instead of going back to SQS.
#[tokio::test]
async fn requests_refused_together_share_one_read_of_the_secret() {
    let server = MockServer::start().await;
    let slow_refusal = error(401, "AUTHENTICATION_FAILED").set_delay(Duration::from_millis(200));
    mount_rotation(&server, slow_refusal, 2, 2).await;
    let store = rotated(r#"{"api_token":"new"}"#);
    let client = client(&server, "", "old").rereading(store.clone(), "client-x/dev/qualtrics");
    let (a, b) = tokio::join!(client.send(distribution()), client.send(distribution()));
    a.unwrap();
    b.unwrap();
    assert_eq!(store.reads.load(std::sync::atomic::Ordering::SeqCst), 1);
}
