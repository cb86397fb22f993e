//! The real Qualtrics client against a mock server: exact requests, auth, retries, limits.

use std::time::{Duration, Instant};

use etlgen_runtime::config::Config;
use etlgen_runtime::ports::QualtricsApi;
use etlgen_runtime::qualtrics::{ApiRequest, Client, endpoint};
use serde_json::json;
use wiremock::matchers::{bearer_token, body_json, body_string, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

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

fn distribution() -> ApiRequest {
    ApiRequest::post_json(
        endpoint::CREATE_DISTRIBUTION,
        "distributions",
        json!({"recipients": {"mailingListId": "CG_1"}}),
    )
}

#[tokio::test]
async fn token_auth_sends_the_exact_request_and_parses_the_envelope() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/API/v3/distributions"))
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
    Mock::given(method("POST"))
        .and(path("/API/v3/distributions"))
        .respond_with(error(429, "TOO_MANY").insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/API/v3/distributions"))
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
        .and(path("/API/v3/distributions"))
        .respond_with(error(500, "INTERNAL"))
        .expect(3)
        .mount(&server)
        .await;
    let err = client(&server, "max_retries=2", "tok")
        .send(distribution())
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
        .and(path("/API/v3/distributions"))
        .respond_with(ok(json!({"id": "late"})).set_delay(Duration::from_millis(500)))
        .expect(2)
        .mount(&server)
        .await;
    let err = client(&server, "max_retries=1\ntimeout_ms=50", "tok")
        .send(distribution())
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn a_permanent_error_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/API/v3/distributions"))
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
    Mock::given(method("POST"))
        .and(path("/API/v3/distributions"))
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
    Mock::given(method("POST"))
        .and(path("/API/v3/distributions"))
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
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "bearer-1", "expires_in": 3600})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/API/v3/distributions"))
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
    Mock::given(method("POST"))
        .and(path("/API/v3/distributions"))
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
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "late", "expires_in": 3600}))
                .set_delay(Duration::from_millis(500)),
        )
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
