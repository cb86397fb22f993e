//! A Lambda emulator for SQS-triggered functions: the contract, not a new engine.
//!
//! [`Emulator::start`] reads the event source mappings from the Lambda API of the AWS
//! emulator (the ones Terraform created) and, for each enabled mapping, runs as many pollers
//! as the mapping's maximum concurrency. A poller long-polls the queue, gathers a batch of at
//! most `BatchSize` messages within `MaximumBatchingWindowInSeconds`, invokes the function's
//! real `bootstrap` through the Lambda Runtime API ([`instance`]), deletes the messages that
//! succeeded and leaves the others on the queue. With `ReportBatchItemFailures` only the
//! reported messages fail; an error, a timeout or a crash fails the whole batch. SQS's own
//! redrive policy then moves a message that failed `maxReceiveCount` times to the DLQ.
//!
//! How it differs from AWS (see the generated `docs/local.md`): a failed message becomes
//! visible again after [`EmulatorConfig::retry_delay`] instead of the queue's visibility
//! timeout, so a local retry takes seconds, not minutes; there is no scaling ramp, no
//! reserved concurrency, no freeze between invocations, and no memory limit.

pub mod instance;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_lambda::types::FunctionResponseType;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Mutex, watch};

use instance::{FunctionSpec, Instance, Outcome};

/// Where the AWS emulator is.
#[derive(Debug, Clone)]
pub struct AwsTarget {
    /// Its URL, e.g. `http://127.0.0.1:5055`.
    pub endpoint_url: String,
    /// The region the stack is in.
    pub region: String,
}

impl AwsTarget {
    /// The SDK configuration for it, with fixed fake credentials: real ones are never sent.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint_url)
            .region(aws_config::Region::new(self.region.clone()))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "local",
                "local",
                None,
                None,
                "etlgen-local",
            ))
            .load()
            .await
    }
}

/// What the emulator runs.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The AWS emulator.
    pub aws: AwsTarget,
    /// Each function's `bootstrap`, by function name. Mappings of other functions are
    /// skipped with a warning.
    pub bootstrap: BTreeMap<String, PathBuf>,
    /// Variables set over every function's own (the mock Qualtrics URL, for instance).
    pub environment: BTreeMap<String, String>,
    /// How soon a failed message is visible again.
    pub retry_delay: Duration,
    /// The concurrency of a mapping without `ScalingConfig.MaximumConcurrency`.
    pub default_concurrency: i32,
    /// A folder for each function's log (`<function>.log`), if any.
    pub log_dir: Option<PathBuf>,
    /// Mappings this emulator disabled when an earlier run of it took them over (their
    /// UUIDs): they are polled as if enabled.
    pub taken_over: BTreeSet<String>,
}

/// What one function has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionStats {
    /// Its queue.
    pub queue_url: String,
    /// Invocations.
    pub invocations: u64,
    /// Environments started.
    pub cold_starts: u64,
    /// Messages handed to it.
    pub messages_received: u64,
    /// Messages it handled (deleted from the queue).
    pub messages_succeeded: u64,
    /// Messages it failed (left for redelivery).
    pub messages_failed: u64,
    /// Invocations that returned an error.
    pub errors: u64,
    /// Invocations killed at the timeout.
    pub timeouts: u64,
    /// Invocations whose process exited.
    pub crashes: u64,
    /// The processes busy with an invocation right now.
    pub busy_pids: Vec<u32>,
}

/// The emulator's state: every function's stats, by function name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// By function name.
    pub functions: BTreeMap<String, FunctionStats>,
}

impl Status {
    /// Invocations running right now.
    pub fn in_flight(&self) -> usize {
        self.functions.values().map(|f| f.busy_pids.len()).sum()
    }
}

/// The emulator's failures.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The Lambda API of the AWS emulator failed.
    #[error("cannot read the Lambda configuration from {endpoint}: {message}")]
    Lambda {
        /// The endpoint.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// A mapping's queue is unknown.
    #[error("the queue {arn} of an event source mapping does not exist: {message}")]
    Queue {
        /// The queue's ARN.
        arn: String,
        /// What failed.
        message: String,
    },
}

/// A running emulator.
pub struct Emulator {
    lambda: aws_sdk_lambda::Client,
    taken_over: BTreeSet<String>,
    status: Arc<std::sync::Mutex<Status>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Mapping {
    uuid: String,
    queue_url: String,
    queue_arn: String,
    batch_size: usize,
    window: Duration,
    concurrency: i32,
    reports_failures: bool,
    function: FunctionSpec,
}

impl Emulator {
    /// Reads the event source mappings, takes them over, and starts their pollers.
    ///
    /// Taking a mapping over disables it in the AWS emulator, whose own Lambda would
    /// otherwise race this one for the messages (moto receives a queue's messages on every
    /// send, fails to invoke without Docker, and so counts receives until they reach the
    /// DLQ; LocalStack would run the function a second time). [`Emulator::stop`] enables
    /// them again; [`Emulator::taken_over`] says which they are, for a restart after a crash.
    pub async fn start(config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        let sdk = config.aws.sdk_config().await;
        let mappings = discover(&config, &sdk).await?;
        let lambda = aws_sdk_lambda::Client::new(&sdk);
        let mut taken_over = BTreeSet::new();
        for mapping in &mappings {
            lambda
                .update_event_source_mapping()
                .uuid(&mapping.uuid)
                .enabled(false)
                .send()
                .await
                .map_err(|e| {
                    lambda_error(&config, aws_sdk_lambda::error::DisplayErrorContext(e))
                })?;
            taken_over.insert(mapping.uuid.clone());
        }
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let status = Arc::new(std::sync::Mutex::new(Status::default()));
        let (shutdown, watching) = watch::channel(false);
        let mut tasks = Vec::new();
        for mapping in mappings {
            let mapping = Arc::new(mapping);
            status_of(&status).functions.insert(
                mapping.function.name.clone(),
                FunctionStats {
                    queue_url: mapping.queue_url.clone(),
                    ..FunctionStats::default()
                },
            );
            let pool = Arc::new(Mutex::new(Vec::new()));
            for _ in 0..mapping.concurrency.max(1) {
                let poller = Poller {
                    sqs: sqs.clone(),
                    mapping: mapping.clone(),
                    pool: pool.clone(),
                    status: status.clone(),
                    retry_delay: config.retry_delay,
                };
                let watching = watching.clone();
                tasks.push(tokio::spawn(poller.run(watching)));
            }
        }
        Ok(Emulator {
            lambda,
            taken_over,
            status,
            shutdown,
            tasks,
        })
    }

    /// The UUIDs of the mappings this emulator took over (and disabled).
    pub fn taken_over(&self) -> &BTreeSet<String> {
        &self.taken_over
    }

    /// A snapshot of every function's stats.
    pub fn status(&self) -> Status {
        status_of(&self.status).clone()
    }

    /// Stops polling, lets running invocations end, and stops every environment.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        for uuid in &self.taken_over {
            let enabled = self
                .lambda
                .update_event_source_mapping()
                .uuid(uuid)
                .enabled(true)
                .send()
                .await;
            if let Err(e) = enabled {
                tracing::warn!(uuid, error = %aws_sdk_lambda::error::DisplayErrorContext(e), "cannot enable a mapping again");
            }
        }
    }
}

fn status_of(status: &std::sync::Mutex<Status>) -> std::sync::MutexGuard<'_, Status> {
    status.lock().unwrap_or_else(|p| p.into_inner())
}

fn lambda_error(config: &EmulatorConfig, e: impl std::fmt::Display) -> EmulatorError {
    EmulatorError::Lambda {
        endpoint: config.aws.endpoint_url.clone(),
        message: e.to_string(),
    }
}

/// The enabled mappings of functions we have a `bootstrap` for.
async fn discover(
    config: &EmulatorConfig,
    sdk: &aws_config::SdkConfig,
) -> Result<Vec<Mapping>, EmulatorError> {
    let lambda = aws_sdk_lambda::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut found = Vec::new();
    let mut marker = None;
    loop {
        let page = lambda
            .list_event_source_mappings()
            .set_marker(marker.take())
            .send()
            .await
            .map_err(|e| lambda_error(config, aws_sdk_lambda::error::DisplayErrorContext(e)))?;
        found.extend(page.event_source_mappings().iter().cloned());
        match page.next_marker() {
            Some(next) if !next.is_empty() => marker = Some(next.to_owned()),
            _ => break,
        }
    }
    let mut mappings = Vec::new();
    for esm in found {
        let (Some(function_arn), Some(queue_arn)) = (esm.function_arn(), esm.event_source_arn())
        else {
            continue;
        };
        if !queue_arn.starts_with("arn:aws:sqs:") && !queue_arn.contains(":sqs:") {
            continue;
        }
        let uuid = esm.uuid().unwrap_or_default().to_owned();
        if matches!(esm.state(), Some("Disabled" | "Disabling"))
            && !config.taken_over.contains(&uuid)
        {
            tracing::info!(queue = queue_arn, "skipping a disabled mapping");
            continue;
        }
        let name = function_arn.rsplit(':').next().unwrap_or(function_arn);
        let Some(bootstrap) = config.bootstrap.get(name) else {
            tracing::warn!(
                function = name,
                "no bootstrap for this function; not polling its queue"
            );
            continue;
        };
        let function = lambda
            .get_function_configuration()
            .function_name(function_arn)
            .send()
            .await
            .map_err(|e| lambda_error(config, aws_sdk_lambda::error::DisplayErrorContext(e)))?;
        let mut environment: BTreeMap<String, String> = function
            .environment()
            .and_then(|e| e.variables())
            .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        environment.extend(config.environment.clone());
        let mut parts = queue_arn.split(':');
        let account = parts.nth(4).unwrap_or_default();
        let queue_name = queue_arn.rsplit(':').next().unwrap_or(queue_arn);
        let queue_url = sqs
            .get_queue_url()
            .queue_name(queue_name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|e| EmulatorError::Queue {
                arn: queue_arn.to_owned(),
                message: aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
            })?
            .queue_url()
            .unwrap_or_default()
            .to_owned();
        mappings.push(Mapping {
            uuid,
            queue_url,
            queue_arn: queue_arn.to_owned(),
            batch_size: esm.batch_size().unwrap_or(10).max(1) as usize,
            window: Duration::from_secs(
                esm.maximum_batching_window_in_seconds().unwrap_or(0).max(0) as u64,
            ),
            concurrency: esm
                .scaling_config()
                .and_then(|s| s.maximum_concurrency())
                .unwrap_or(config.default_concurrency),
            reports_failures: esm
                .function_response_types()
                .contains(&FunctionResponseType::ReportBatchItemFailures),
            function: FunctionSpec {
                name: name.to_owned(),
                arn: function_arn.to_owned(),
                bootstrap: bootstrap.clone(),
                environment,
                timeout: Duration::from_secs(function.timeout().unwrap_or(3).max(1) as u64),
                memory_mb: function.memory_size().unwrap_or(128),
                region: config.aws.region.clone(),
                log_file: config
                    .log_dir
                    .as_ref()
                    .map(|dir| dir.join(format!("{name}.log"))),
            },
        });
    }
    Ok(mappings)
}

struct Poller {
    sqs: aws_sdk_sqs::Client,
    mapping: Arc<Mapping>,
    pool: Arc<Mutex<Vec<Instance>>>,
    status: Arc<std::sync::Mutex<Status>>,
    retry_delay: Duration,
}

impl Poller {
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            let batch = tokio::select! {
                batch = self.receive() => batch,
                _ = shutdown.changed() => break,
            };
            match batch {
                Ok(messages) if messages.is_empty() => {}
                Ok(messages) => self.deliver(messages).await,
                Err(e) => {
                    tracing::warn!(queue = %self.mapping.queue_url, error = %e, "receive failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        for instance in self.pool.lock().await.drain(..) {
            instance.stop().await;
        }
    }

    /// One batch: up to `BatchSize` messages, gathered for at most the batching window.
    async fn receive(&self) -> Result<Vec<Message>, String> {
        let mapping = &self.mapping;
        let mut messages = Vec::new();
        let started = Instant::now();
        loop {
            let wanted = (mapping.batch_size - messages.len()).min(10) as i32;
            let wait = if messages.is_empty() {
                5
            } else {
                mapping
                    .window
                    .saturating_sub(started.elapsed())
                    .as_secs()
                    .min(20) as i32
            };
            let page = self
                .sqs
                .receive_message()
                .queue_url(&mapping.queue_url)
                .max_number_of_messages(wanted)
                .wait_time_seconds(wait)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
            let got = page.messages().len();
            messages.extend(page.messages().iter().cloned());
            let full = messages.len() >= mapping.batch_size;
            let window_over = started.elapsed() >= mapping.window;
            if messages.is_empty() || full || window_over || got == 0 {
                return Ok(messages);
            }
        }
    }

    async fn deliver(&self, messages: Vec<Message>) {
        let name = self.mapping.function.name.clone();
        let event = sqs_event(&self.mapping, &self.mapping.function.region, &messages);
        let pooled = self.pool.lock().await.pop();
        let mut instance = match pooled {
            Some(instance) => instance,
            None => match Instance::start(&self.mapping.function).await {
                Ok(instance) => {
                    self.update(|s| s.cold_starts += 1);
                    instance
                }
                Err(e) => {
                    tracing::error!(function = %name, error = %e, "cannot start the function");
                    self.settle(&messages, &[]).await;
                    tokio::time::sleep(self.retry_delay).await;
                    return;
                }
            },
        };
        let pid = instance.pid().unwrap_or_default();
        self.update(|s| {
            s.invocations += 1;
            s.messages_received += messages.len() as u64;
            s.busy_pids.push(pid);
        });
        let request_id = uuid::Uuid::from_u128(fastrand::u128(..)).to_string();
        let outcome = instance.invoke(request_id, event.into()).await;
        self.update(|s| s.busy_pids.retain(|p| *p != pid));
        let succeeded: Vec<&Message> = match &outcome {
            Outcome::Response(body) => {
                let failed = if self.mapping.reports_failures {
                    failed_ids(body)
                } else {
                    Vec::new()
                };
                messages
                    .iter()
                    .filter(|m| !failed.iter().any(|id| Some(id.as_str()) == m.message_id()))
                    .collect()
            }
            _ => Vec::new(),
        };
        match &outcome {
            Outcome::Response(_) => self.pool.lock().await.push(instance),
            Outcome::Error(message) => {
                tracing::warn!(function = %name, %message, "the invocation failed");
                self.update(|s| s.errors += 1);
                self.pool.lock().await.push(instance);
            }
            Outcome::Timeout => {
                tracing::warn!(function = %name, "the invocation timed out");
                self.update(|s| s.timeouts += 1);
                instance.stop().await;
            }
            Outcome::Crashed(message) => {
                tracing::warn!(function = %name, %message, "the process died mid-invocation");
                self.update(|s| s.crashes += 1);
                instance.stop().await;
            }
        }
        self.settle(&messages, &succeeded).await;
    }

    /// Deletes what succeeded; makes the rest visible again after the retry delay.
    async fn settle(&self, messages: &[Message], succeeded: &[&Message]) {
        let ok = succeeded.len() as u64;
        let failed = messages.len() as u64 - ok;
        self.update(|s| {
            s.messages_succeeded += ok;
            s.messages_failed += failed;
        });
        for chunk in succeeded.chunks(10) {
            let entries = chunk.iter().enumerate().filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle()?)
                    .build()
                    .ok()
            });
            let result = self
                .sqs
                .delete_message_batch()
                .queue_url(&self.mapping.queue_url)
                .set_entries(Some(entries.collect()))
                .send()
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "delete failed");
            }
        }
        let retry: Vec<&Message> = messages
            .iter()
            .filter(|m| !succeeded.iter().any(|s| s.message_id() == m.message_id()))
            .collect();
        for chunk in retry.chunks(10) {
            let entries = chunk.iter().enumerate().filter_map(|(i, m)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle()?)
                    .visibility_timeout(self.retry_delay.as_secs() as i32)
                    .build()
                    .ok()
            });
            let result = self
                .sqs
                .change_message_visibility_batch()
                .queue_url(&self.mapping.queue_url)
                .set_entries(Some(entries.collect()))
                .send()
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "visibility change failed");
            }
        }
    }

    fn update(&self, change: impl FnOnce(&mut FunctionStats)) {
        let mut status = status_of(&self.status);
        if let Some(stats) = status.functions.get_mut(&self.mapping.function.name) {
            change(stats);
        }
    }
}

/// The message ids of a `{"batchItemFailures":[{"itemIdentifier":…}]}` response. A body
/// that is not one fails nothing, as in Lambda.
fn failed_ids(body: &[u8]) -> Vec<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Response {
        #[serde(default)]
        batch_item_failures: Vec<Item>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Item {
        item_identifier: String,
    }
    serde_json::from_slice::<Response>(body)
        .map(|r| {
            r.batch_item_failures
                .into_iter()
                .map(|i| i.item_identifier)
                .collect()
        })
        .unwrap_or_default()
}

/// The SQS event Lambda would send for `messages`.
fn sqs_event(mapping: &Mapping, region: &str, messages: &[Message]) -> Vec<u8> {
    let records: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            let attributes: BTreeMap<&str, &str> = m
                .attributes()
                .map(|a| a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
                .unwrap_or_default();
            let message_attributes: BTreeMap<&str, serde_json::Value> = m
                .message_attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| {
                            (
                                k.as_str(),
                                json!({
                                    "stringValue": v.string_value(),
                                    "stringListValues": v.string_list_values(),
                                    "binaryListValues": [],
                                    "dataType": v.data_type(),
                                }),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": mapping.queue_arn,
                "awsRegion": region,
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "Records": records })).unwrap_or_default()
}
