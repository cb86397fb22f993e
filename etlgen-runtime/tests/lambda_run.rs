//! `lambda::run` end to end: a Lambda Runtime API stub hands it an SQS event, the step
//! publishes through the real SNS client (endpoint overridden by config), and the batch
//! response is posted back. One test per binary, because it sets process environment.
//! `[qualtrics]` is configured but the notifier never calls it, so cold start must not
//! fetch its secret (the stub has no Secrets Manager, so a fetch would fail the start).
//! The notifier publishes every message (`once_per_run = false`), so the stub needs no S3.

use std::time::{Duration, Instant};

use etlgen_runtime::config::ConfigSources;
use etlgen_runtime::kinds::notifier::{Hooks, Notifier};
use etlgen_runtime::{Envelope, LogicalDate, RunId};
use serde_json::json;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[derive(Debug, Default)]
struct ClientHooks;
impl Hooks for ClientHooks {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_serves_an_sqs_event_from_the_runtime_api() {
    let server = MockServer::start().await;
    let envelope = Envelope::new(
        "acme",
        RunId::new("r1"),
        LogicalDate::from_ymd(2024, 5, 1).unwrap(),
        "notify",
        "k",
        json!({"status": "failed"}),
    );
    let event = json!({"Records": [{
        "messageId": "m-1",
        "body": envelope.to_json().unwrap(),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1714550400000"},
        "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:acme-dev-notify",
        "eventSource": "aws:sqs"
    }]});
    let deadline = (std::time::SystemTime::now() + Duration::from_secs(60))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    Mock::given(method("GET"))
        .and(path("/2018-06-01/runtime/invocation/next"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(&event)
                .insert_header("Lambda-Runtime-Aws-Request-Id", "req-1")
                .insert_header("Lambda-Runtime-Deadline-Ms", deadline.to_string().as_str())
                .insert_header(
                    "Lambda-Runtime-Invoked-Function-Arn",
                    "arn:aws:lambda:eu-west-1:123456789012:function:acme-dev-notify",
                ),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    // Later polls park, as the real Runtime API does between invocations.
    Mock::given(method("GET"))
        .and(path("/2018-06-01/runtime/invocation/next"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(300)))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/2018-06-01/runtime/invocation/req-1/response"))
        .respond_with(ResponseTemplate::new(202))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/"))
        .and(body_string_contains("Action=Publish"))
        .and(body_string_contains("acme-dev-notifications"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "<PublishResponse><PublishResult><MessageId>sns-1</MessageId></PublishResult></PublishResponse>",
            "text/xml",
        ))
        .expect(1)
        .mount(&server)
        .await;

    let address = server.address().to_string();
    let defaults: &'static str = Box::leak(
        format!(
            "[pipeline]\nname='acme'\ndata_bucket='acme-dev-data'\n[runtime]\nledger=false\n\
             [aws]\nregion='eu-west-1'\nendpoint_url='{}'\n\
             [qualtrics]\ndatacenter='fra1'\nsecret_id='acme/dev/qualtrics'\n\
             [steps.notify]\nonce_per_run=false\n\
             topic_arn='arn:aws:sns:eu-west-1:123456789012:acme-dev-notifications'\n",
            server.uri()
        )
        .into_boxed_str(),
    );
    let sources: &'static ConfigSources = Box::leak(Box::new(ConfigSources {
        default: defaults,
        environments: &[("dev", "")],
    }));
    // SAFETY: this test binary has one test, and the variables are set before any thread
    // that could read the environment concurrently is started by the code under test.
    unsafe {
        for (name, value) in [
            ("AWS_LAMBDA_RUNTIME_API", address.as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", "acme-dev-notify"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "1"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "stream"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "group"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("ETL_ENV", "dev"),
        ] {
            std::env::set_var(name, value);
        }
    }
    std::thread::spawn(move || {
        etlgen_runtime::lambda::run::<Notifier<ClientHooks>>("notify", sources)
    });

    let started = Instant::now();
    let response = loop {
        let requests = server.received_requests().await.unwrap_or_default();
        if let Some(r) = requests
            .iter()
            .find(|r| r.url.path() == "/2018-06-01/runtime/invocation/req-1/response")
        {
            break serde_json::from_slice::<serde_json::Value>(&r.body).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no invocation response; received {requests:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(response, json!({"batchItemFailures": []}));
}
