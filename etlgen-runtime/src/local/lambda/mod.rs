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
mod poller;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_lambda::types::FunctionResponseType;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};

use instance::FunctionSpec;
use poller::Poller;

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
    ///
    /// Fails only if the HTTPS client cannot be built (see [`crate::aws::https_client`]).
    pub async fn sdk_config(&self) -> Result<aws_config::SdkConfig, reqwest::Error> {
        let http = crate::aws::https_client()?;
        Ok(crate::aws::sdk_defaults(&http)
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
            .await)
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
    /// The HTTP client of the AWS clients cannot be built.
    #[error("cannot build the HTTPS client for the AWS emulator")]
    Http(#[from] reqwest::Error),
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

/// One event source mapping, as the pollers use it.
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
        let sdk = config.aws.sdk_config().await?;
        let mappings = discover(&config, &sdk).await?;
        let lambda = aws_sdk_lambda::Client::new(&sdk);
        let mut taken_over = BTreeSet::new();
        for mapping in &mappings {
            let disabled = lambda
                .update_event_source_mapping()
                .uuid(&mapping.uuid)
                .enabled(false)
                .send()
                .await;
            if let Err(e) = disabled {
                // Leave nothing half taken over.
                enable(&lambda, &taken_over).await;
                return Err(lambda_error(
                    &config,
                    aws_sdk_lambda::error::DisplayErrorContext(e),
                ));
            }
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
        enable(&self.lambda, &self.taken_over).await;
    }
}

/// Enables the mappings again (logging, not failing, on error: it runs on the way out).
async fn enable(lambda: &aws_sdk_lambda::Client, uuids: &BTreeSet<String>) {
    for uuid in uuids {
        let enabled = lambda
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
        if !queue_arn.contains(":sqs:") {
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
