//! In-memory fakes of every port, and a harness to run a step without a network.
//!
//! A generated crate's tests use this module to exercise the client's hooks in a few lines:
//!
//! ```
//! use etlgen_runtime::kinds::notifier::{Hooks, Notifier};
//! use etlgen_runtime::testing::Harness;
//!
//! #[derive(Debug, Default, Clone)]
//! struct ClientHooks;
//! impl Hooks for ClientHooks {}
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let h = Harness::<Notifier<ClientHooks>>::new("notify", r#"
//!     [pipeline]
//!     name = "acme"
//!     data_bucket = "acme-data"
//!     [steps.notify]
//!     topic_arn = "arn:aws:sns:eu-west-1:123456789012:acme"
//! "#);
//! let response = h.deliver(&h.envelope("done", serde_json::json!({"status": "complete"}))).await;
//! assert!(response.batch_item_failures.is_empty());
//! assert_eq!(h.notifications.published().len(), 1);
//! # });
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StepError;
use crate::config::{Config, ConfigSources};
use crate::envelope::{Envelope, LogicalDate, RunId};
use crate::ports::{
    Notifications, ObjectReader, ObjectStore, OutgoingMessage, QualtricsApi, Queue, RemoteFile,
    Services, Sftp,
};
use crate::qualtrics::{ApiRequest, ApiResponse, Method};
use crate::runner::Runner;
use crate::step::Step;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

enum Reply {
    Ok(Bytes),
    Status(u16),
}

struct Route {
    method: Method,
    pattern: String,
    replies: VecDeque<Reply>,
}

/// A scripted Qualtrics API. Routes match a method and a path pattern in which a `*`
/// segment matches any one segment. Replies are served in order; the last one repeats.
/// The list lookups steps make before creating a run's mailing list or distribution find
/// nothing unless a route says otherwise.
#[derive(Default)]
pub struct FakeQualtrics {
    routes: Mutex<Vec<Route>>,
    requests: Mutex<Vec<ApiRequest>>,
}

impl std::fmt::Debug for FakeQualtrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeQualtrics")
            .field("requests", &lock(&self.requests).len())
            .finish()
    }
}

fn matches(pattern: &str, path: &str) -> bool {
    let (p, a): (Vec<_>, Vec<_>) = (
        pattern.trim_matches('/').split('/').collect(),
        path.trim_matches('/').split('/').collect(),
    );
    p.len() == a.len() && p.iter().zip(&a).all(|(p, a)| *p == "*" || p == a)
}

impl FakeQualtrics {
    fn push(&self, method: Method, pattern: &str, reply: Reply) -> &Self {
        let mut routes = lock(&self.routes);
        match routes
            .iter_mut()
            .find(|r| r.method == method && r.pattern == pattern)
        {
            Some(route) => route.replies.push_back(reply),
            None => routes.push(Route {
                method,
                pattern: pattern.to_owned(),
                replies: VecDeque::from([reply]),
            }),
        }
        self
    }

    /// Replies `{"result": result, "meta": {…}}` with status 200.
    pub fn on(&self, method: Method, pattern: &str, result: serde_json::Value) -> &Self {
        let body = serde_json::json!({"result": result, "meta": {"httpStatus": "200 - OK", "requestId": "fake-request"}});
        self.push(method, pattern, Reply::Ok(Bytes::from(body.to_string())))
    }

    /// Replies a raw body (a file download) with status 200.
    pub fn on_bytes(&self, method: Method, pattern: &str, body: impl Into<Bytes>) -> &Self {
        self.push(method, pattern, Reply::Ok(body.into()))
    }

    /// Fails with an HTTP status, classified like the real client does.
    pub fn fail(&self, method: Method, pattern: &str, status: u16) -> &Self {
        self.push(method, pattern, Reply::Status(status))
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<ApiRequest> {
        lock(&self.requests).clone()
    }

    /// The requests whose method and path match.
    pub fn requests_to(&self, method: Method, pattern: &str) -> Vec<ApiRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && matches(pattern, &r.path))
            .collect()
    }
}

/// The lookups steps make before creating once-per-run things (a run's mailing list, its
/// distribution): without a route of their own they find nothing, as on a fresh brand.
fn is_list_lookup(request: &ApiRequest) -> bool {
    use crate::qualtrics::endpoint::{LIST_DISTRIBUTIONS, LIST_MAILING_LISTS};
    request.method == Method::Get
        && [LIST_MAILING_LISTS, LIST_DISTRIBUTIONS].contains(&request.endpoint)
}

#[async_trait]
impl QualtricsApi for FakeQualtrics {
    async fn send(&self, request: ApiRequest) -> Result<ApiResponse, StepError> {
        lock(&self.requests).push(request.clone());
        let mut routes = lock(&self.routes);
        let route = routes
            .iter_mut()
            .find(|r| r.method == request.method && matches(&r.pattern, &request.path));
        if route.is_none() && is_list_lookup(&request) {
            return Ok(ApiResponse {
                status: 200,
                request_id: Some("fake-request".into()),
                body: Bytes::from_static(br#"{"result":{"elements":[],"nextPage":null}}"#),
            });
        }
        let route = route.ok_or_else(|| {
            StepError::permanent(format!(
                "no fake reply for {} {}",
                request.method.as_str(),
                request.path
            ))
        })?;
        let reply = if route.replies.len() > 1 {
            route.replies.pop_front()
        } else {
            None
        };
        match reply.as_ref().or(route.replies.front()) {
            Some(Reply::Ok(body)) => Ok(ApiResponse {
                status: 200,
                request_id: Some("fake-request".into()),
                body: body.clone(),
            }),
            Some(Reply::Status(status)) => Err(crate::qualtrics::client::status_error(
                *status,
                "fake failure".to_owned(),
            )),
            None => Err(StepError::permanent("route without reply")),
        }
    }
}

/// An in-memory object store whose buckets keep every version of an object, as the
/// generated (versioned) buckets do: version `v<n>` is the `n`th body stored at a key.
#[derive(Debug, Default)]
pub struct MemoryObjectStore {
    objects: Mutex<BTreeMap<(String, String), Bytes>>,
    versions: Mutex<BTreeMap<(String, String), Vec<Bytes>>>,
}

impl MemoryObjectStore {
    /// Stores an object, as its next version.
    pub fn insert(&self, bucket: &str, key: &str, body: impl Into<Bytes>) {
        let mut objects = lock(&self.objects);
        self.store(&mut objects, bucket, key, body.into());
    }

    /// Stores `body` as the object's next version, under the objects' lock (taken before
    /// the versions', always).
    fn store(
        &self,
        objects: &mut BTreeMap<(String, String), Bytes>,
        bucket: &str,
        key: &str,
        body: Bytes,
    ) {
        let slot = (bucket.to_owned(), key.to_owned());
        lock(&self.versions)
            .entry(slot.clone())
            .or_default()
            .push(body.clone());
        objects.insert(slot, body);
    }

    /// The id of an object's current version, as an S3 event names it.
    pub fn version_id(&self, bucket: &str, key: &str) -> Option<String> {
        let versions = lock(&self.versions);
        let count = versions.get(&(bucket.to_owned(), key.to_owned()))?.len();
        Some(format!("v{count}"))
    }

    /// An object's body as text.
    pub fn text(&self, bucket: &str, key: &str) -> Option<String> {
        lock(&self.objects)
            .get(&(bucket.to_owned(), key.to_owned()))
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// Removes every object under a prefix, as `cargo xtask replay --from-step` clears a
    /// step's run state; how many there were.
    pub fn remove_prefix(&self, bucket: &str, prefix: &str) -> usize {
        let mut objects = lock(&self.objects);
        let before = objects.len();
        objects.retain(|(b, k), _| b != bucket || !k.starts_with(prefix));
        before - objects.len()
    }

    /// The keys in a bucket under a prefix.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        lock(&self.objects)
            .keys()
            .filter(|(b, k)| b == bucket && k.starts_with(prefix))
            .map(|(_, k)| k.clone())
            .collect()
    }
}

#[async_trait]
impl ObjectStore for MemoryObjectStore {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<ObjectReader>, StepError> {
        let body = lock(&self.objects)
            .get(&(bucket.to_owned(), key.to_owned()))
            .cloned();
        Ok(body.map(|b| Box::pin(std::io::Cursor::new(b)) as ObjectReader))
    }

    async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<(), StepError> {
        self.insert(bucket, key, body);
        Ok(())
    }

    async fn put_if_absent(&self, bucket: &str, key: &str, body: Bytes) -> Result<bool, StepError> {
        let mut objects = lock(&self.objects);
        let slot = (bucket.to_owned(), key.to_owned());
        if objects.contains_key(&slot) {
            return Ok(false);
        }
        self.store(&mut objects, bucket, key, body);
        Ok(true)
    }

    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        from_version: Option<&str>,
        to_bucket: &str,
        to_key: &str,
    ) -> Result<(), StepError> {
        let slot = (from_bucket.to_owned(), from_key.to_owned());
        let body = match from_version {
            None => lock(&self.objects).get(&slot).cloned(),
            Some(version) => (version.strip_prefix('v'))
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| {
                    lock(&self.versions)
                        .get(&slot)?
                        .get(n.checked_sub(1)?)
                        .cloned()
                }),
        };
        let body = body.ok_or_else(|| {
            StepError::from_status(
                404,
                format!("no object s3://{from_bucket}/{from_key} (version {from_version:?})"),
            )
        })?;
        self.insert(to_bucket, to_key, body);
        Ok(())
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StepError> {
        Ok(self.keys(bucket, prefix))
    }
}

/// An in-memory queue that records what was sent.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    sent: Mutex<Vec<(String, OutgoingMessage)>>,
    refused: Mutex<std::collections::BTreeSet<String>>,
}

impl MemoryQueue {
    /// Every `(queue_url, message)` sent, in order.
    pub fn sent(&self) -> Vec<(String, OutgoingMessage)> {
        lock(&self.sent).clone()
    }

    /// Refuses sends to `queue_url` with a 503, as SQS does when it is throttling, until
    /// [`MemoryQueue::accept`].
    pub fn refuse(&self, queue_url: &str) {
        lock(&self.refused).insert(queue_url.to_owned());
    }

    /// Takes sends to `queue_url` again.
    pub fn accept(&self, queue_url: &str) {
        lock(&self.refused).remove(queue_url);
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn send_batch(
        &self,
        queue_url: &str,
        messages: Vec<OutgoingMessage>,
    ) -> Result<(), StepError> {
        if lock(&self.refused).contains(queue_url) {
            return Err(StepError::from_status(
                503,
                format!("{queue_url} is refusing sends"),
            ));
        }
        if messages.len() > crate::step::SEND_BATCH_MAX {
            return Err(StepError::permanent(
                "more than ten entries in one SendMessageBatch",
            ));
        }
        // As SQS answers a batch over its payload limit: a 400, which is permanent.
        let bytes: usize = messages.iter().map(|m| m.body.len()).sum();
        if bytes > crate::step::SEND_BATCH_BYTES {
            return Err(StepError::from_status(
                400,
                format!("BatchRequestTooLong: {bytes} bytes in one SendMessageBatch"),
            ));
        }
        lock(&self.sent).extend(messages.into_iter().map(|m| (queue_url.to_owned(), m)));
        Ok(())
    }
}

/// In-memory notifications.
#[derive(Debug, Default)]
pub struct MemoryNotifications {
    published: Mutex<Vec<(String, String, String)>>,
    failing: Mutex<u32>,
}

impl MemoryNotifications {
    /// Every `(topic_arn, subject, message)` published.
    pub fn published(&self) -> Vec<(String, String, String)> {
        lock(&self.published).clone()
    }

    /// Fails the next `publishes` publishes with an error that has no HTTP status, as a
    /// timeout or a dropped connection has.
    pub fn fail_next(&self, publishes: u32) {
        *lock(&self.failing) = publishes;
    }
}

#[async_trait]
impl Notifications for MemoryNotifications {
    async fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        message: &str,
    ) -> Result<(), StepError> {
        {
            let mut failing = lock(&self.failing);
            if *failing > 0 {
                *failing -= 1;
                return Err(StepError::retryable(format!(
                    "publishing to {topic_arn} timed out"
                )));
            }
        }
        lock(&self.published).push((topic_arn.to_owned(), subject.to_owned(), message.to_owned()));
        Ok(())
    }
}

/// An in-memory SFTP server.
#[derive(Debug, Default)]
pub struct MemorySftp {
    files: Mutex<BTreeMap<String, (Bytes, u64)>>,
    denied: Mutex<BTreeSet<String>>,
}

impl MemorySftp {
    /// Puts a file with a modification time.
    pub fn insert(&self, path: &str, body: impl Into<Bytes>, modified: u64) {
        lock(&self.files).insert(path.to_owned(), (body.into(), modified));
    }

    /// Makes a file unreadable, as a server refuses one whose permissions deny the user: it
    /// is still listed, and reading it fails as the real client's read does (retryable).
    pub fn deny(&self, path: &str) {
        lock(&self.denied).insert(path.to_owned());
    }

    /// A file's body as text.
    pub fn text(&self, path: &str) -> Option<String> {
        lock(&self.files)
            .get(path)
            .map(|(b, _)| String::from_utf8_lossy(b).into_owned())
    }
}

#[async_trait]
impl Sftp for MemorySftp {
    async fn list(&self, dir: &str) -> Result<Vec<RemoteFile>, StepError> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        Ok(lock(&self.files)
            .iter()
            .filter(|(p, _)| p.starts_with(&prefix) && !p[prefix.len()..].contains('/'))
            .map(|(p, (b, m))| RemoteFile {
                path: p.clone(),
                size: b.len() as u64,
                modified: *m,
            })
            .collect())
    }

    async fn read(&self, path: &str) -> Result<Bytes, StepError> {
        if lock(&self.denied).contains(path) {
            return Err(StepError::retryable(format!(
                "SFTP open: Permission denied: {path}"
            )));
        }
        lock(&self.files)
            .get(path)
            .map(|(b, _)| b.clone())
            // Retried, as the SSH port retries every failed read.
            .ok_or_else(|| StepError::retryable(format!("SFTP read: No such file: {path}")))
    }

    async fn write(&self, path: &str, body: Bytes) -> Result<(), StepError> {
        self.insert(path, body, 0);
        Ok(())
    }
}

/// An SQS event of one message, with the id `message_id`: a message of its own, as a
/// schedule's next tick is. [`sqs_event`] numbers its messages from `message-1` in every
/// event, so two of its events are one message delivered twice, which the ledger skips.
pub fn sqs_message(message_id: &str, body: &str) -> SqsEvent {
    let mut event = sqs_event(&[body]);
    event.records[0].message_id = Some(message_id.to_owned());
    event
}

/// An SQS event with one message per body, as Lambda would deliver it.
pub fn sqs_event(bodies: &[&str]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let mut message = SqsMessage::default();
            message.message_id = Some(format!("message-{}", i + 1));
            message.body = Some((*body).to_owned());
            message.event_source_arn = Some("arn:aws:sqs:eu-west-1:123456789012:test".into());
            message
                .attributes
                .insert("ApproximateReceiveCount".into(), "1".into());
            message
                .attributes
                .insert("SentTimestamp".into(), "1714550400000".into());
            message
        })
        .collect();
    event
}

/// A step wired to fakes. The fakes are public so a test can script and inspect them.
pub struct Harness<S: Step> {
    /// The runner under test.
    pub runner: Runner<S>,
    /// The configuration it runs with.
    pub config: Config,
    /// Scripted Qualtrics.
    pub qualtrics: Arc<FakeQualtrics>,
    /// In-memory S3.
    pub objects: Arc<MemoryObjectStore>,
    /// In-memory SQS.
    pub queue: Arc<MemoryQueue>,
    /// In-memory SNS.
    pub notifications: Arc<MemoryNotifications>,
    /// In-memory SFTP.
    pub sftp: Arc<MemorySftp>,
    step_name: String,
}

impl<S: Step> Harness<S> {
    /// Builds the step named `step_name` from TOML configuration text. Panics on bad
    /// configuration: this is test code.
    pub fn new(step_name: &str, config_toml: &str) -> Self {
        let config = Config::from_toml("test", config_toml).expect("valid test configuration");
        Self::build(step_name, config, Runner::new).expect("step init")
    }

    /// Like [`Harness::new`], with the step's refusal of its configuration returned: for a
    /// test that a bad setting is refused at init, as a cold start would refuse it.
    pub fn try_new(step_name: &str, config_toml: &str) -> Result<Self, crate::Error> {
        let config = Config::from_toml("test", config_toml)?;
        Self::build(step_name, config, Runner::new)
    }

    /// Builds the step from a Lambda's embedded files, for one environment (environment
    /// variables are ignored).
    pub fn from_sources(step_name: &str, sources: &ConfigSources, environment: &str) -> Self {
        let config = sources
            .load_files(environment)
            .expect("valid configuration");
        Self::build(step_name, config, Runner::new).expect("step init")
    }

    /// Like [`Harness::from_sources`], with `deployed` (TOML) merged over the files: the values
    /// the infrastructure passes at deploy time as `ETL__…` variables, such as the next
    /// step's queue URL or a topic ARN.
    pub fn from_sources_with(
        step_name: &str,
        sources: &ConfigSources,
        environment: &str,
        deployed: &str,
    ) -> Self {
        let config = sources
            .load_files_with(environment, deployed)
            .expect("valid configuration");
        Self::build(step_name, config, Runner::new).expect("step init")
    }

    /// Uses a step built by the test (hooks with state).
    pub fn with_step(step_name: &str, config_toml: &str, step: S) -> Self {
        let config = Config::from_toml("test", config_toml).expect("valid test configuration");
        let Ok(harness) = Self::build(step_name, config, |name, config, services| {
            Ok::<_, std::convert::Infallible>(Runner::with_step(name, config, services, step))
        });
        harness
    }

    fn build<E>(
        step_name: &str,
        config: Config,
        make: impl FnOnce(&str, Config, Services) -> Result<Runner<S>, E>,
    ) -> Result<Self, E> {
        let (qualtrics, objects, queue) = (
            Arc::new(FakeQualtrics::default()),
            Arc::new(MemoryObjectStore::default()),
            Arc::new(MemoryQueue::default()),
        );
        let (notifications, sftp) = (
            Arc::new(MemoryNotifications::default()),
            Arc::new(MemorySftp::default()),
        );
        let services = Services {
            qualtrics: qualtrics.clone(),
            objects: objects.clone(),
            queue: queue.clone(),
            notifications: notifications.clone(),
            sftp: sftp.clone(),
        };
        let runner = make(step_name, config.clone(), services)?;
        Ok(Self {
            runner,
            config,
            qualtrics,
            objects,
            queue,
            notifications,
            sftp,
            step_name: step_name.to_owned(),
        })
    }

    /// An envelope addressed to this step, for run `run-1` of 2024-05-01.
    pub fn envelope<T>(&self, record_key: &str, payload: T) -> Envelope<T> {
        let date = LogicalDate::from_ymd(2024, 5, 1).expect("a valid date");
        Envelope::new(
            self.config.pipeline.name.clone(),
            RunId::new("run-1"),
            date,
            self.step_name.clone(),
            record_key,
            payload,
        )
    }

    /// Delivers one envelope and returns the batch response.
    pub async fn deliver<T: Serialize>(&self, envelope: &Envelope<T>) -> SqsBatchResponse {
        self.deliver_body(&envelope.to_json().expect("serializable envelope"))
            .await
    }

    /// Delivers one raw message body.
    pub async fn deliver_body(&self, body: &str) -> SqsBatchResponse {
        self.runner.handle_event(sqs_event(&[body])).await
    }

    /// The envelopes sent to the next step's queue, read as `T`.
    pub fn emitted<T: DeserializeOwned>(&self) -> Vec<Envelope<T>> {
        self.queue
            .sent()
            .iter()
            .map(|(_, m)| Envelope::from_json(&m.body).expect("an envelope"))
            .collect()
    }

    /// The data bucket.
    pub fn data_bucket(&self) -> &str {
        &self.config.pipeline.data_bucket
    }
}
