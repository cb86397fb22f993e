//! The real ports on the official AWS SDK for Rust: S3, SQS, SNS and Secrets Manager.
//!
//! [`services`] builds every client once at cold start from `[aws]` (region, and an
//! `endpoint_url` so the same binary runs against a local emulator such as moto), fetches the
//! Qualtrics and SFTP secrets once (only those the step needs), and returns the [`Services`]
//! a step uses for its whole life. The SDK clients and the Qualtrics client share one HTTPS
//! client ([`http`]), which trusts the roots `[tls]` names ([`trust`]).

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use crate::StepError;
use crate::config::Config;
use crate::ports::{
    Notifications, ObjectReader, ObjectStore, OutgoingMessage, Queue, SecretStore, Services, Sftp,
    Unconfigured,
};
use crate::qualtrics;

pub mod http;
mod multipart;
pub mod trust;
pub use http::{https_client, https_client_trusting, sdk_defaults};
pub use multipart::PART_SIZE;

/// Which ports a step needs beyond S3, SQS and SNS (see `Step::USES_QUALTRICS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// The Qualtrics client (and its secret).
    pub qualtrics: bool,
    /// The SFTP client (and its secret).
    pub sftp: bool,
}

/// Builds every port from configuration. Called once per cold start; only the secrets the
/// step needs are fetched.
pub async fn services(config: &Config, needs: Needs) -> Result<Services, crate::Error> {
    let http = https_client_trusting(&config.tls)?;
    let mut loader = sdk_defaults(&http);
    if let Some(region) = &config.aws.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(url) = &config.aws.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    let s3_config = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(config.aws.force_path_style)
        .build();
    let secrets = SecretsManager(aws_sdk_secretsmanager::Client::new(&sdk));
    let qualtrics: Arc<dyn crate::ports::QualtricsApi> = match &config.qualtrics {
        Some(q) if needs.qualtrics => {
            let secret = secrets.secret(&q.secret_id).await?;
            let client = qualtrics::Client::with_http(q, &secret, http)?;
            Arc::new(client.rereading(Arc::new(secrets.clone()), q.secret_id.clone()))
        }
        _ => Arc::new(Unconfigured("[qualtrics]")),
    };
    let sftp = sftp_client(config, needs, &secrets).await?;
    Ok(Services {
        qualtrics,
        objects: Arc::new(S3(aws_sdk_s3::Client::from_conf(s3_config))),
        queue: Arc::new(Sqs(aws_sdk_sqs::Client::new(&sdk))),
        notifications: Arc::new(Sns(aws_sdk_sns::Client::new(&sdk))),
        sftp,
    })
}

/// The SFTP client of a step that needs one, from `[sftp]` and its secret (the client
/// connects on first use).
#[cfg(feature = "sftp")]
async fn sftp_client(
    config: &Config,
    needs: Needs,
    secrets: &SecretsManager,
) -> Result<Arc<dyn Sftp>, crate::Error> {
    Ok(match &config.sftp {
        Some(sftp) if needs.sftp => {
            let secret = secrets.secret(&sftp.secret_id).await?;
            Arc::new(crate::sftp::SftpClient::new(sftp.clone(), &secret)?)
        }
        _ => Arc::new(Unconfigured("[sftp]")),
    })
}

/// Without the `sftp` feature there is no SFTP client to build.
#[cfg(not(feature = "sftp"))]
async fn sftp_client(
    _: &Config,
    needs: Needs,
    _: &SecretsManager,
) -> Result<Arc<dyn Sftp>, crate::Error> {
    Ok(Arc::new(Unconfigured(if needs.sftp {
        "the SFTP client (build etlgen-runtime with its `sftp` feature)"
    } else {
        "[sftp]"
    })))
}

/// Classifies an SDK error: a service error by its HTTP status, a construction error as
/// permanent, anything on the wire (timeouts, dispatch failures) as retryable.
fn classify<E>(what: String, e: SdkError<E, HttpResponse>) -> StepError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let error = match (&e, status) {
        (SdkError::ConstructionFailure(_), _) => StepError::permanent(what),
        // A request that cannot be sent as it is (see `http`), not a passing failure.
        (SdkError::DispatchFailure(f), _) if f.is_user() => StepError::permanent(what),
        (SdkError::TimeoutError(_), _) => StepError::timeout(what),
        // A missing permission or resource (a bucket, a queue, a topic) is a deployment
        // mistake, not a bad record: retried until the DLQ, to redrive once it is fixed.
        (_, Some(status @ (401 | 403 | 404))) => StepError::retryable(format!(
            "{what}: HTTP {status} (a missing permission or resource; fix the deployment, then redrive the DLQ)"
        )),
        (_, Some(status)) => StepError::from_status(status, what),
        _ => StepError::retryable(what),
    };
    error.with_source(e)
}

/// S3 as the [`ObjectStore`].
#[derive(Debug, Clone)]
pub struct S3(pub aws_sdk_s3::Client);

#[async_trait]
impl ObjectStore for S3 {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<ObjectReader>, StepError> {
        match self.0.get_object().bucket(bucket).key(key).send().await {
            Ok(out) => Ok(Some(Box::pin(out.body.into_async_read()))),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(classify(format!("GetObject s3://{bucket}/{key}"), e)),
        }
    }

    async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<(), StepError> {
        self.0
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(format!("PutObject s3://{bucket}/{key}"), e))
    }

    /// A multipart upload of [`PART_SIZE`] parts (a single `PutObject` below one part).
    async fn put_stream(
        &self,
        bucket: &str,
        key: &str,
        body: ObjectReader,
    ) -> Result<u64, StepError> {
        multipart::upload(&self.0, bucket, key, body).await
    }

    async fn put_if_absent(&self, bucket: &str, key: &str, body: Bytes) -> Result<bool, StepError> {
        let result = self
            .0
            .put_object()
            .bucket(bucket)
            .key(key)
            .if_none_match("*")
            .body(ByteStream::from(body))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => Ok(false),
            Err(e) => Err(classify(
                format!("conditional PutObject s3://{bucket}/{key}"),
                e,
            )),
        }
    }

    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        from_version: Option<&str>,
        to_bucket: &str,
        to_key: &str,
    ) -> Result<(), StepError> {
        let mut source = format!(
            "{from_bucket}/{}",
            percent_encoding::utf8_percent_encode(from_key, COPY_SOURCE)
        );
        if let Some(version) = from_version {
            let version = percent_encoding::utf8_percent_encode(version, COPY_SOURCE);
            source.push_str(&format!("?versionId={version}"));
        }
        self.0
            .copy_object()
            .copy_source(source)
            .bucket(to_bucket)
            .key(to_key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                let what = format!("CopyObject s3://{from_bucket}/{from_key} to {to_key}");
                // S3 is strongly consistent: a source key or version it does not know was
                // deleted (or never was), and no retry brings it back. Any other 404 (the
                // bucket) is the deployment's, and retried.
                let code = e.as_service_error().and_then(|s| s.meta().code());
                if let Some(code @ ("NoSuchKey" | "NoSuchVersion")) = code {
                    let gone = format!("{what}: {code} (version {from_version:?})");
                    return StepError::from_status(404, gone).with_source(e);
                }
                classify(what, e)
            })
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StepError> {
        let mut keys = Vec::new();
        let mut pages = self
            .0
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| classify(format!("ListObjectsV2 s3://{bucket}/{prefix}"), e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys.sort();
        Ok(keys)
    }
}

/// What `x-amz-copy-source` needs encoded: everything but unreserved characters and `/`.
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// SQS as the [`Queue`].
#[derive(Debug, Clone)]
pub struct Sqs(pub aws_sdk_sqs::Client);

#[async_trait]
impl Queue for Sqs {
    async fn send_batch(
        &self,
        queue_url: &str,
        messages: Vec<OutgoingMessage>,
    ) -> Result<(), StepError> {
        for chunk in crate::step::send_batches(messages) {
            let entries = chunk
                .iter()
                .map(|m| {
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(&m.id)
                        .message_body(&m.body)
                        .set_message_group_id(m.group_id.clone())
                        .set_message_deduplication_id(m.dedup_id.clone())
                        .build()
                        .map_err(|e| StepError::permanent("invalid SQS batch entry").with_source(e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .0
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| classify(format!("SendMessageBatch {queue_url}"), e))?;
            if let Some(failed) = out.failed().first() {
                let message = format!(
                    "SendMessageBatch {queue_url}: {} of {} entries failed, first {}: {}",
                    out.failed().len(),
                    chunk.len(),
                    failed.code(),
                    failed.message().unwrap_or("")
                );
                return Err(if failed.sender_fault() {
                    StepError::permanent(message)
                } else {
                    StepError::retryable(message)
                });
            }
        }
        Ok(())
    }
}

/// SNS as the [`Notifications`] port.
#[derive(Debug, Clone)]
pub struct Sns(pub aws_sdk_sns::Client);

#[async_trait]
impl Notifications for Sns {
    async fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        message: &str,
    ) -> Result<(), StepError> {
        self.0
            .publish()
            .topic_arn(topic_arn)
            .subject(subject)
            .message(message)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(format!("Publish {topic_arn}"), e))
    }
}

/// Secrets Manager as the [`SecretStore`].
#[derive(Debug, Clone)]
pub struct SecretsManager(pub aws_sdk_secretsmanager::Client);

#[async_trait]
impl SecretStore for SecretsManager {
    async fn secret(&self, id: &str) -> Result<String, StepError> {
        let out = self
            .0
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| classify(format!("GetSecretValue {id}"), e))?;
        out.secret_string()
            .map(str::to_owned)
            .ok_or_else(|| StepError::permanent(format!("secret {id} has no string value")))
    }
}
