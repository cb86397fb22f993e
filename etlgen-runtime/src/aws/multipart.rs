//! Streaming uploads to S3: a client file of any size copied with one part in memory.
//!
//! `PutObject` needs the whole body (or its length) up front, so a file copied from SFTP
//! would have to fit in the Lambda's memory. A multipart upload sends it in parts of
//! [`PART_SIZE`] instead; a body smaller than one part is still a single `PutObject`. An
//! upload that fails part-way is aborted, so S3 keeps no orphaned parts (which it would bill
//! for until a lifecycle rule removes them).

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use super::classify;
use crate::StepError;
use crate::ports::ObjectReader;

/// The size of each part but the last: S3's minimum is 5 MiB; 8 MiB keeps the number of
/// parts (at most 10,000) enough for 80 GB.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Uploads `body` to `s3://bucket/key`; the number of bytes written.
pub(super) async fn upload(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    mut body: ObjectReader,
) -> Result<u64, StepError> {
    let mut part = next_part(&mut body, bucket, key).await?;
    if part.len() < PART_SIZE {
        let written = part.len() as u64;
        client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(part.into())
            .send()
            .await
            .map_err(|e| classify(format!("PutObject s3://{bucket}/{key}"), e))?;
        return Ok(written);
    }
    let started = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| classify(format!("CreateMultipartUpload s3://{bucket}/{key}"), e))?;
    let upload_id = started.upload_id().map(str::to_owned).ok_or_else(|| {
        StepError::retryable(format!(
            "CreateMultipartUpload s3://{bucket}/{key} answered without an UploadId"
        ))
    })?;
    let mut parts = Vec::new();
    let mut written = 0u64;
    let result = async {
        while !part.is_empty() {
            let number = parts.len() as i32 + 1;
            written += part.len() as u64;
            let out = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .part_number(number)
                .body(part.into())
                .send()
                .await
                .map_err(|e| classify(format!("UploadPart {number} of s3://{bucket}/{key}"), e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build(),
            );
            part = next_part(&mut body, bucket, key).await?;
        }
        client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify(format!("CompleteMultipartUpload s3://{bucket}/{key}"), e))
    }
    .await;
    match result {
        Ok(_) => Ok(written),
        Err(error) => {
            // Best effort: the step fails with the upload's own error either way.
            if let Err(e) = client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(
                    error = %aws_sdk_s3::error::DisplayErrorContext(e),
                    "AbortMultipartUpload s3://{bucket}/{key} failed; a lifecycle rule must remove its parts"
                );
            }
            Err(error)
        }
    }
}

/// Reads up to [`PART_SIZE`] bytes: a full part, or what is left of the body (empty at
/// its end).
async fn next_part(body: &mut ObjectReader, bucket: &str, key: &str) -> Result<Bytes, StepError> {
    let mut part = BytesMut::with_capacity(PART_SIZE);
    while part.len() < PART_SIZE {
        let read = (&mut *body)
            .take((PART_SIZE - part.len()) as u64)
            .read_buf(&mut part)
            .await
            .map_err(|e| {
                StepError::retryable(format!("reading the body for s3://{bucket}/{key}"))
                    .with_source(e)
            })?;
        if read == 0 {
            break;
        }
    }
    Ok(part.freeze())
}
