//! The external systems a step talks to, each behind a small trait.
//!
//! Steps never call an SDK directly; they go through these ports. That keeps the step logic
//! testable without a network (the [`crate::testing`] fakes implement every port in memory)
//! and keeps the AWS and Qualtrics specifics in [`crate::aws`] and [`crate::qualtrics`].
//! All ports are built once at cold start and shared by every invocation.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::StepError;
use crate::qualtrics::{ApiRequest, ApiResponse};

/// A streaming object body: read it incrementally, never whole.
pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;

/// Object storage (S3): the landing zone, the raw zone, reports and run state.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Opens an object for streaming; `None` when it does not exist.
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<ObjectReader>, StepError>;
    /// Writes (or overwrites) an object.
    async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<(), StepError>;
    /// Creates an object only if it does not exist yet; returns whether this call created
    /// it. This is the primitive behind run claims and the fan-in manifest.
    async fn put_if_absent(&self, bucket: &str, key: &str, body: Bytes) -> Result<bool, StepError>;
    /// Copies an object server-side (the raw zone copy of a landed file): the version
    /// `from_version` of it when given, so a key overwritten since an event announced it
    /// is still copied as announced; else the current one.
    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        from_version: Option<&str>,
        to_bucket: &str,
        to_key: &str,
    ) -> Result<(), StepError>;
    /// Lists the keys under a prefix, in lexical order.
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StepError>;
    /// Writes (or overwrites) an object from a stream, such as a client file copied from
    /// SFTP; the number of bytes written.
    ///
    /// By default it reads the whole stream and calls [`ObjectStore::put`]; see
    /// [`put_whole`]. The S3 port uploads in parts instead, one part in memory at a time.
    async fn put_stream(
        &self,
        bucket: &str,
        key: &str,
        body: ObjectReader,
    ) -> Result<u64, StepError> {
        put_whole(self, bucket, key, body).await
    }
}

/// The default of [`ObjectStore::put_stream`]: the whole stream in memory, then one `put`.
pub async fn put_whole<S: ObjectStore + ?Sized>(
    store: &S,
    bucket: &str,
    key: &str,
    body: ObjectReader,
) -> Result<u64, StepError> {
    let whole = read_whole(body, &format!("s3://{bucket}/{key}")).await?;
    let written = whole.len() as u64;
    store.put(bucket, key, whole).await?;
    Ok(written)
}

/// Reads a stream to its end, for the ports' whole-body defaults; `to` names where it goes.
async fn read_whole(mut body: ObjectReader, to: &str) -> Result<Bytes, StepError> {
    let mut buf = Vec::new();
    body.read_to_end(&mut buf)
        .await
        .map_err(|e| StepError::retryable(format!("reading the body for {to}")).with_source(e))?;
    Ok(Bytes::from(buf))
}

/// Reads a whole (small) object: state files and manifests, never client data files.
pub async fn read_small(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, StepError> {
    let Some(mut reader) = store.get(bucket, key).await? else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    reader
        .read_to_end(&mut buf)
        .await
        .map_err(|e| StepError::retryable(format!("reading s3://{bucket}/{key}")).with_source(e))?;
    Ok(Some(buf))
}

/// One message for [`Queue::send_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// An id unique within the batch.
    pub id: String,
    /// The body (an envelope as JSON).
    pub body: String,
    /// The FIFO message group.
    pub group_id: Option<String>,
    /// The FIFO deduplication id (the envelope's idempotency key).
    pub dedup_id: Option<String>,
}

/// A message queue (SQS): how a step hands its output to the next step.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Sends messages, in batches of at most ten; fails if any message was not accepted.
    async fn send_batch(
        &self,
        queue_url: &str,
        messages: Vec<OutgoingMessage>,
    ) -> Result<(), StepError>;
}

/// Notifications (SNS).
#[async_trait]
pub trait Notifications: Send + Sync + 'static {
    /// Publishes one message to a topic.
    async fn publish(&self, topic_arn: &str, subject: &str, message: &str)
    -> Result<(), StepError>;
}

/// The Qualtrics API: one request in, one parsed response out. Retries, rate limiting and
/// authentication happen inside the implementation.
#[async_trait]
pub trait QualtricsApi: Send + Sync + 'static {
    /// Sends a request.
    async fn send(&self, request: ApiRequest) -> Result<ApiResponse, StepError>;
    /// Sends a request whose answer is a file (a response export), and streams its body,
    /// so an export of any size is never held whole. Retries cover the request up to its
    /// answer's headers; an error while streaming fails the step, to be retried whole.
    ///
    /// By default it sends the request with [`QualtricsApi::send`] and serves the body
    /// from memory; see [`download_whole`]. The real client streams it.
    async fn download(&self, request: ApiRequest) -> Result<ObjectReader, StepError> {
        download_whole(self, request).await
    }
}

/// The default of [`QualtricsApi::download`]: the whole answer read, then served from memory.
pub async fn download_whole<Q: QualtricsApi + ?Sized>(
    api: &Q,
    request: ApiRequest,
) -> Result<ObjectReader, StepError> {
    Ok(Box::pin(std::io::Cursor::new(
        api.send(request).await?.body,
    )))
}

/// A secret store (Secrets Manager), read at cold start only.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// The secret's string value.
    async fn secret(&self, id: &str) -> Result<String, StepError>;
}

/// A file on an SFTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// The path on the server.
    pub path: String,
    /// The size in bytes.
    pub size: u64,
    /// The modification time, in seconds since the epoch.
    pub modified: u64,
}

/// A client's SFTP server.
#[async_trait]
pub trait Sftp: Send + Sync + 'static {
    /// Lists the regular files in a directory.
    async fn list(&self, dir: &str) -> Result<Vec<RemoteFile>, StepError>;
    /// Reads a file.
    async fn read(&self, path: &str) -> Result<Bytes, StepError>;
    /// Writes a file.
    async fn write(&self, path: &str, body: Bytes) -> Result<(), StepError>;
    /// Writes a file from a stream, such as a response export; the number of bytes written.
    ///
    /// By default it reads the whole stream and calls [`Sftp::write`]; see [`write_whole`].
    /// The real client streams it to the server.
    async fn write_stream(&self, path: &str, body: ObjectReader) -> Result<u64, StepError> {
        write_whole(self, path, body).await
    }
    /// Opens a file for streaming, so a large client file is never held whole.
    ///
    /// By default it reads the whole file with [`Sftp::read`]; see [`open_whole`]. The
    /// real client streams it from the server.
    async fn open(&self, path: &str) -> Result<ObjectReader, StepError> {
        open_whole(self, path).await
    }
}

/// The default of [`Sftp::write_stream`]: the whole stream in memory, then one `write`.
pub async fn write_whole<S: Sftp + ?Sized>(
    sftp: &S,
    path: &str,
    body: ObjectReader,
) -> Result<u64, StepError> {
    let whole = read_whole(body, &format!("SFTP {path}")).await?;
    let written = whole.len() as u64;
    sftp.write(path, whole).await?;
    Ok(written)
}

/// The default of [`Sftp::open`]: the whole file read, then served from memory.
pub async fn open_whole<S: Sftp + ?Sized>(sftp: &S, path: &str) -> Result<ObjectReader, StepError> {
    Ok(Box::pin(std::io::Cursor::new(sftp.read(path).await?)))
}

/// Every port a step may use, built once at cold start.
#[derive(Clone)]
pub struct Services {
    /// Qualtrics.
    pub qualtrics: Arc<dyn QualtricsApi>,
    /// S3.
    pub objects: Arc<dyn ObjectStore>,
    /// SQS.
    pub queue: Arc<dyn Queue>,
    /// SNS.
    pub notifications: Arc<dyn Notifications>,
    /// The client's SFTP server.
    pub sftp: Arc<dyn Sftp>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

/// A port that is not configured for this Lambda; every call is a permanent error that
/// says which configuration is missing.
#[derive(Debug, Clone)]
pub struct Unconfigured(pub &'static str);

impl Unconfigured {
    fn err(&self) -> StepError {
        StepError::permanent(format!("{} is not configured for this step", self.0))
    }
}

#[async_trait]
impl QualtricsApi for Unconfigured {
    async fn send(&self, _: ApiRequest) -> Result<ApiResponse, StepError> {
        Err(self.err())
    }
}

#[async_trait]
impl Sftp for Unconfigured {
    async fn list(&self, _: &str) -> Result<Vec<RemoteFile>, StepError> {
        Err(self.err())
    }
    async fn read(&self, _: &str) -> Result<Bytes, StepError> {
        Err(self.err())
    }
    async fn write(&self, _: &str, _: Bytes) -> Result<(), StepError> {
        Err(self.err())
    }
}
