//! The Lambda entry point every generated `main.rs` calls.
//!
//! [`run`] does everything expensive exactly once, at cold start: JSON logging, the
//! configuration (from the embedded files and `ETL_ENV`), the AWS clients, the Qualtrics
//! secret and client, and the step itself. Then it serves SQS events on `lambda_runtime`
//! until the sandbox is recycled.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

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
                tracing::error!(error = %crate::error::chain(e.as_ref()), step = step_name, "cold start failed");
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

/// Installs the JSON log subscriber. Span fields such as `run_id` and `message_id` appear on
/// every line. Calling it twice is harmless.
///
/// The level comes from `RUST_LOG`: `info` by default, or comma-separated `level` and
/// `target=level` directives (`warn,etlgen_runtime=debug`). A value that is not such a
/// list is reported on the first line and `info` is used. It is parsed by
/// tracing-subscriber's `Targets` rather than `EnvFilter`, whose span and field directives
/// no step needs and whose regex engine cost every Lambda about 150 KiB.
pub fn init_tracing() {
    let (filter, rejected) = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
        .without_time()
        .with_filter(filter);
    if tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .is_ok()
        && let Some(error) = rejected
    {
        tracing::warn!(%error, "RUST_LOG ignored: expected directives such as `info` or `warn,etlgen_runtime=debug`");
    }
}

/// The filter `RUST_LOG` asks for, and why it was refused if it was.
fn log_filter(value: Option<&str>) -> (Targets, Option<String>) {
    let default = || Targets::new().with_default(LevelFilter::INFO);
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => (default(), None),
        Some(v) => match v.parse::<Targets>() {
            Ok(targets) => (targets, None),
            Err(e) => (default(), Some(format!("{v:?}: {e}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn rust_log_sets_levels_per_target_and_falls_back_to_info() {
        let (filter, rejected) = log_filter(None);
        assert!(rejected.is_none());
        assert!(filter.would_enable("etlgen_runtime", &Level::INFO));
        assert!(!filter.would_enable("etlgen_runtime", &Level::DEBUG));

        let (filter, rejected) = log_filter(Some("warn,etlgen_runtime::qualtrics=debug"));
        assert!(rejected.is_none());
        assert!(filter.would_enable("etlgen_runtime::qualtrics::client", &Level::DEBUG));
        assert!(!filter.would_enable("etlgen_runtime::sqs", &Level::INFO));
        assert!(filter.would_enable("hyper", &Level::WARN));

        let (filter, rejected) = log_filter(Some("debug"));
        assert!(rejected.is_none());
        assert!(filter.would_enable("anything", &Level::DEBUG));

        let (filter, rejected) = log_filter(Some("info,x=loud"));
        let rejected = rejected.expect("an invalid level is reported");
        assert!(rejected.contains("x=loud"), "{rejected}");
        assert!(filter.would_enable("x", &Level::INFO));
        assert!(!filter.would_enable("x", &Level::DEBUG));
    }
}
