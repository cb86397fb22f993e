//! The Lambda entry point every generated `main.rs` calls.
//!
//! [`run`] does everything expensive exactly once, at cold start: JSON logging, the
//! configuration (from the embedded files and `ETL_ENV`), the AWS clients, the Qualtrics
//! secret and client, and the step itself. Then it serves SQS events on `lambda_runtime`
//! until the sandbox is recycled.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};

use crate::config::ConfigSources;
use crate::runner::Runner;
use crate::step::Step;

/// Runs step kind `S` as the step named `step_name` (its `[steps.<name>]` table).
///
/// ```no_run
/// use etlgen_runtime::config::ConfigSources;
/// use etlgen_runtime::kinds::notifier::{Hooks, Notifier};
///
/// #[derive(Debug, Default, Clone)]
/// struct ClientHooks;
/// impl Hooks for ClientHooks {}
///
/// const CONFIG: ConfigSources = ConfigSources {
///     default: "[pipeline]\nname = 'acme'\ndata_bucket = 'acme-data'\n",
///     environments: &[("dev", "")],
/// };
///
/// fn main() -> Result<(), etlgen_runtime::Error> {
///     etlgen_runtime::lambda::run::<Notifier<ClientHooks>>("notify", &CONFIG)
/// }
/// ```
pub fn run<S: Step>(step_name: &str, sources: &ConfigSources) -> Result<(), crate::Error> {
    init_tracing();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let runner = match init::<S>(step_name, sources).await {
            Ok(runner) => runner,
            Err(e) => {
                tracing::error!(error = %e, step = step_name, "cold start failed");
                return Err(e);
            }
        };
        let runner = &runner;
        lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
            Ok::<SqsBatchResponse, crate::Error>(runner.handle_event(event.payload).await)
        }))
        .await
    })
}

async fn init<S: Step>(
    step_name: &str,
    sources: &ConfigSources,
) -> Result<Runner<S>, crate::Error> {
    let config = sources.load()?;
    tracing::info!(
        environment = %config.environment,
        kind = S::KIND,
        step = step_name,
        "cold start"
    );
    let needs = crate::aws::Needs {
        qualtrics: S::USES_QUALTRICS,
        sftp: S::USES_SFTP,
    };
    let services = crate::aws::services(&config, needs).await?;
    Runner::new(step_name, config, services)
}

/// Installs the JSON log subscriber (level from `RUST_LOG`, default `info`). Span fields
/// such as `run_id` and `message_id` appear on every line. Calling it twice is harmless.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
        .without_time()
        .try_init();
}
