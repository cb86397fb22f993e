//! `local serve`: the background half of the local stack. It runs the mock Qualtrics API
//! (when `up` chose it) and the Lambda emulator, and answers on a control API:
//! `GET /status` (the emulator's counters) and `POST /shutdown`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use etlgen_runtime::local::axum::{self, Json, Router, extract::State as Extract, routing};
use etlgen_runtime::local::lambda::{Emulator, EmulatorConfig, Status};
use etlgen_runtime::local::qualtrics::{MockConfig, MockQualtrics};
use tokio::sync::Notify;

use super::stack::{State, dir};

struct Control {
    emulator: Emulator,
    stop: Notify,
}

pub async fn serve() -> Result<()> {
    etlgen_runtime::lambda::init_tracing();
    let state = State::load()?;
    let mock = match state.mock_qualtrics_port {
        Some(port) => Some(
            MockQualtrics::start(MockConfig {
                port,
                faults: state.faults.clone(),
                ..MockConfig::default()
            })
            .await
            .with_context(|| format!("starting the mock Qualtrics API on port {port}"))?,
        ),
        None => None,
    };
    let emulator = Emulator::start(EmulatorConfig {
        aws: state.aws(),
        bootstrap: state.bootstrap.clone(),
        environment: state.environment.clone(),
        retry_delay: Duration::from_secs(state.retry_delay_seconds),
        default_concurrency: 5,
        log_dir: Some(dir().join("logs")),
        taken_over: super::stack::taken_over(),
    })
    .await?;
    super::stack::save_taken_over(emulator.taken_over())?;
    let control = Arc::new(Control { emulator, stop: Notify::new() });
    let router = Router::new()
        .route("/status", routing::get(status))
        .route("/shutdown", routing::post(shutdown))
        .with_state(control.clone());
    let address = state.control_url.trim_start_matches("http://");
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address}"))?;
    let stopping = control.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM can be handled");
            tokio::select! {
                () = stopping.stop.notified() => {}
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        })
        .await?;
    // The server is done with its handles, so this is the last one.
    match Arc::try_unwrap(control) {
        Ok(control) => control.emulator.stop().await,
        Err(_) => eprintln!("the emulator is still shared; its mappings stay taken over"),
    }
    if let Some(mock) = mock {
        mock.shutdown().await.context("stopping the mock Qualtrics API")?;
    }
    Ok(())
}

async fn status(Extract(control): Extract<Arc<Control>>) -> Json<Status> {
    Json(control.emulator.status())
}

async fn shutdown(Extract(control): Extract<Arc<Control>>) -> &'static str {
    control.stop.notify_one();
    "stopping\n"
}
