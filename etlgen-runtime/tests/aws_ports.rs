//! The AWS SDK ports against a mock endpoint: the calls they make and how their errors are
//! classified (the same endpoint override lets a deployed binary run against an emulator).
//! Every client sends through the framework's reqwest adapter, as the Lambdas' clients do.

use bytes::Bytes;
use etlgen_runtime::aws::http::SdkHttpClient;
use etlgen_runtime::aws::{S3, SecretsManager, Sqs, https_client};
use etlgen_runtime::ports::{ObjectStore, OutgoingMessage, Queue, SecretStore, read_small};
use serde_json::json;
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn credentials() -> aws_sdk_s3::config::Credentials {
    aws_sdk_s3::config::Credentials::new("test", "test", None, None, "tests")
}

fn s3(server: &MockServer) -> S3 {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .http_client(SdkHttpClient::shared(https_client().unwrap()))
        .endpoint_url(server.uri())
        .region(aws_sdk_s3::config::Region::new("eu-west-1"))
        .credentials_provider(credentials())
        .force_path_style(true)
        .build();
    S3(aws_sdk_s3::Client::from_conf(config))
}

fn s3_error(status: u16, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>m</Message></Error>"),
        "application/xml",
    )
}

#[tokio::test]
async fn s3_reads_stream_and_a_missing_key_is_none() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/data/present.csv"))
        .respond_with(ResponseTemplate::new(200).set_body_string("id\n1\n"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/data/absent.csv"))
        .respond_with(s3_error(404, "NoSuchKey"))
        .mount(&server)
        .await;
    let store = s3(&server);
    assert_eq!(
        read_small(&store, "data", "present.csv")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"id\n1\n"[..])
    );
    assert!(store.get("data", "absent.csv").await.unwrap().is_none());
}

#[tokio::test]
async fn s3_conditional_put_reports_an_existing_object() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/data/runs/claim"))
        .and(header("if-none-match", "*"))
        .respond_with(s3_error(412, "PreconditionFailed"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/data/runs/new"))
        .and(header("if-none-match", "*"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let store = s3(&server);
    assert!(
        !store
            .put_if_absent("data", "runs/claim", Bytes::from_static(b"me"))
            .await
            .unwrap()
    );
    assert!(
        store
            .put_if_absent("data", "runs/new", Bytes::from_static(b"me"))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn s3_copy_encodes_the_source_and_errors_are_classified() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/data/raw/2024-05-01/r/contacts%20list.csv"))
        .and(header(
            "x-amz-copy-source",
            "landing/in/contacts%20list.csv?versionId=3%2Bv",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "<CopyObjectResult><ETag>\"e\"</ETag></CopyObjectResult>",
            "application/xml",
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/data/slow"))
        .respond_with(s3_error(503, "SlowDown"))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/data/denied"))
        .respond_with(s3_error(403, "AccessDenied"))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/data/bad"))
        .respond_with(s3_error(400, "InvalidArgument"))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/data/raw/gone"))
        .and(header("x-amz-copy-source", "landing/gone.csv"))
        .respond_with(s3_error(404, "NoSuchKey"))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/data/raw/old"))
        .respond_with(s3_error(404, "NoSuchVersion"))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/data/raw/nobucket"))
        .respond_with(s3_error(404, "NoSuchBucket"))
        .mount(&server)
        .await;
    let store = s3(&server);
    store
        .copy(
            "landing",
            "in/contacts list.csv",
            Some("3+v"),
            "data",
            "raw/2024-05-01/r/contacts list.csv",
        )
        .await
        .unwrap();
    assert!(
        store
            .put("data", "slow", Bytes::new())
            .await
            .unwrap_err()
            .is_retryable()
    );
    // A missing permission is a deployment mistake: retried until the DLQ, then redriven.
    let denied = store.put("data", "denied", Bytes::new()).await.unwrap_err();
    assert!(denied.is_retryable(), "{denied}");
    assert!(denied.to_string().contains("redrive"), "{denied}");
    // A request S3 refuses as such is not worth retrying.
    assert!(
        !store
            .put("data", "bad", Bytes::new())
            .await
            .unwrap_err()
            .is_retryable()
    );
    // A copy's source deleted after its event will not come back: permanent, so the
    // validator reports it rather than filling the DLQ. A missing bucket is the
    // deployment's, and retried.
    let gone = store.copy("landing", "gone.csv", None, "data", "raw/gone");
    let gone = gone.await.unwrap_err();
    assert!(
        !gone.is_retryable() && gone.to_string().contains("NoSuchKey"),
        "{gone}"
    );
    let old = store.copy("landing", "a.csv", Some("v1"), "data", "raw/old");
    assert!(!old.await.unwrap_err().is_retryable());
    let nobucket = store.copy("landing", "a.csv", None, "data", "raw/nobucket");
    let nobucket = nobucket.await.unwrap_err();
    assert!(
        nobucket.is_retryable() && nobucket.to_string().contains("redrive"),
        "{nobucket}"
    );
}

#[tokio::test]
async fn s3_lists_every_page() {
    let server = MockServer::start().await;
    let page = |keys: &[&str], next: Option<&str>| {
        let contents: String = keys
            .iter()
            .map(|k| format!("<Contents><Key>{k}</Key></Contents>"))
            .collect();
        let more = next.map(|t| format!("<IsTruncated>true</IsTruncated><NextContinuationToken>{t}</NextContinuationToken>")).unwrap_or_default();
        ResponseTemplate::new(200).set_body_raw(
            format!("<ListBucketResult>{contents}{more}</ListBucketResult>"),
            "application/xml",
        )
    };
    Mock::given(method("GET"))
        .and(path("/data/"))
        .and(query_param("continuation-token", "t2"))
        .respond_with(page(&["p/c"], None))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/data/"))
        .and(query_param("prefix", "p/"))
        .respond_with(page(&["p/b", "p/a"], Some("t2")))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    assert_eq!(
        s3(&server).list("data", "p/").await.unwrap(),
        ["p/a", "p/b", "p/c"]
    );
}

fn sdk_config(server: &MockServer) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .http_client(SdkHttpClient::shared(https_client().unwrap()))
        .endpoint_url(server.uri())
        .region(aws_config::Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(
            credentials(),
        ))
        .build()
}

fn message(id: &str) -> OutgoingMessage {
    OutgoingMessage {
        id: id.into(),
        body: format!("{{\"n\":\"{id}\"}}"),
        group_id: Some("g".into()),
        dedup_id: Some(format!("d-{id}")),
    }
}

#[tokio::test]
async fn sqs_sends_batches_of_ten_and_a_rejected_entry_fails_the_send() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("x-amz-target", "AmazonSQS.SendMessageBatch"))
        .and(body_partial_json(
            json!({"QueueUrl": "https://sqs.test/q.fifo"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"Successful":[],"Failed":[]}"#,
            "application/x-amz-json-1.0",
        ))
        .expect(2)
        .mount(&server)
        .await;
    let sqs = Sqs(aws_sdk_sqs::Client::new(&sdk_config(&server)));
    let messages: Vec<_> = (0..12).map(|i| message(&format!("m{i}"))).collect();
    sqs.send_batch("https://sqs.test/q.fifo", messages)
        .await
        .unwrap();
    let first = &server.received_requests().await.unwrap()[0];
    let body: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(body["Entries"].as_array().unwrap().len(), 10);
    assert_eq!(body["Entries"][0]["MessageGroupId"], "g");
    assert_eq!(body["Entries"][0]["MessageDeduplicationId"], "d-m0");

    let failing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"Successful":[],"Failed":[{"Id":"m0","SenderFault":false,"Code":"InternalError","Message":"try again"}]}"#,
            "application/x-amz-json-1.0",
        ))
        .mount(&failing)
        .await;
    let sqs = Sqs(aws_sdk_sqs::Client::new(&sdk_config(&failing)));
    let err = sqs
        .send_batch("https://sqs.test/q", vec![message("m0")])
        .await
        .unwrap_err();
    assert!(
        err.is_retryable() && err.to_string().contains("InternalError"),
        "{err}"
    );
}

#[tokio::test]
async fn the_secret_is_read_from_secrets_manager() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("x-amz-target", "secretsmanager.GetSecretValue"))
        .and(body_partial_json(json!({"SecretId": "acme/dev/qualtrics"})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"Name":"acme/dev/qualtrics","SecretString":"{\"api_token\":\"t\"}"}"#,
            "application/x-amz-json-1.1",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let secrets = SecretsManager(aws_sdk_secretsmanager::Client::new(&sdk_config(&server)));
    assert_eq!(
        secrets.secret("acme/dev/qualtrics").await.unwrap(),
        r#"{"api_token":"t"}"#
    );
}

/// A body of `len` bytes, as a stream.
fn stream(len: usize) -> etlgen_runtime::ports::ObjectReader {
    Box::pin(std::io::Cursor::new(vec![b'x'; len]))
}

/// The S3 answers to a multipart upload of `data/big.csv` (id `U1`); each part's ETag is its
/// number.
async fn mount_multipart(server: &MockServer, part_status: u16) {
    Mock::given(method("POST"))
        .and(path("/data/big.csv"))
        .and(query_param("uploads", ""))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "<InitiateMultipartUploadResult><Bucket>data</Bucket><Key>big.csv</Key>\
             <UploadId>U1</UploadId></InitiateMultipartUploadResult>",
            "application/xml",
        ))
        .expect(1)
        .mount(server)
        .await;
    for number in 1..=3 {
        let answer = if number == 2 && part_status != 200 {
            s3_error(part_status, "AccessDenied")
        } else {
            ResponseTemplate::new(200).insert_header("ETag", format!("\"e{number}\""))
        };
        Mock::given(method("PUT"))
            .and(path("/data/big.csv"))
            .and(query_param("uploadId", "U1"))
            .and(query_param("partNumber", number.to_string()))
            .respond_with(answer)
            .mount(server)
            .await;
    }
    Mock::given(method("POST"))
        .and(path("/data/big.csv"))
        .and(query_param("uploadId", "U1"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "<CompleteMultipartUploadResult><Bucket>data</Bucket><Key>big.csv</Key>\
             <ETag>\"all\"</ETag></CompleteMultipartUploadResult>",
            "application/xml",
        ))
        .mount(server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/data/big.csv"))
        .and(query_param("uploadId", "U1"))
        .respond_with(ResponseTemplate::new(204))
        .mount(server)
        .await;
}

async fn requests(server: &MockServer, verb: &str) -> Vec<wiremock::Request> {
    let all = server.received_requests().await.unwrap();
    all.into_iter()
        .filter(|r| r.method.as_str() == verb)
        .collect()
}

#[tokio::test]
async fn a_large_stream_goes_up_in_parts_and_a_small_one_in_one_put() {
    let server = MockServer::start().await;
    mount_multipart(&server, 200).await;
    Mock::given(method("PUT"))
        .and(path("/data/small.csv"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let store = s3(&server);
    let part = etlgen_runtime::aws::PART_SIZE;
    let written = store
        .put_stream("data", "big.csv", stream(2 * part + 1))
        .await
        .unwrap();
    assert_eq!(written, 2 * part as u64 + 1);
    assert_eq!(
        store
            .put_stream("data", "small.csv", stream(10))
            .await
            .unwrap(),
        10
    );

    let puts = requests(&server, "PUT").await;
    let sizes: Vec<(Option<String>, usize)> = puts
        .iter()
        .map(|r| {
            let number = r
                .url
                .query_pairs()
                .find(|(k, _)| k == "partNumber")
                .map(|(_, v)| v.into_owned());
            (number, r.body.len())
        })
        .collect();
    assert_eq!(
        sizes,
        [
            (Some("1".into()), part),
            (Some("2".into()), part),
            (Some("3".into()), 1),
            (None, 10)
        ]
    );
    let complete = requests(&server, "POST")
        .await
        .into_iter()
        .find(|r| r.url.query().is_some_and(|q| q.contains("uploadId=U1")))
        .expect("the upload was completed");
    let body = String::from_utf8(complete.body).unwrap();
    let expected: String = (1..=3)
        .map(|n| format!("<Part><ETag>&quot;e{n}&quot;</ETag><PartNumber>{n}</PartNumber></Part>"))
        .collect();
    assert!(body.contains(&expected), "every part, in order: {body}");
    assert!(
        requests(&server, "DELETE").await.is_empty(),
        "nothing aborted"
    );
}

#[tokio::test]
async fn a_failed_part_aborts_the_upload_and_is_retryable() {
    let server = MockServer::start().await;
    mount_multipart(&server, 403).await;
    let store = s3(&server);
    let part = etlgen_runtime::aws::PART_SIZE;
    let err = store
        .put_stream("data", "big.csv", stream(2 * part + 1))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("UploadPart 2 of s3://data/big.csv"),
        "{err}"
    );
    assert_eq!(
        requests(&server, "DELETE").await.len(),
        1,
        "the upload is aborted"
    );
    let completed = requests(&server, "POST")
        .await
        .iter()
        .filter(|r| r.url.query().is_some_and(|q| q.contains("uploadId=U1")))
        .count();
    assert_eq!(completed, 0, "never completed");
}
