//! A mock Qualtrics API v3: the endpoints the framework calls, with the real API's
//! envelopes, recording every effect, deduplicating by `Idempotency-Key`, and misbehaving on
//! request ([`Faults`]).
//!
//! `cargo xtask local up` runs it ([`MockQualtrics::serve_forever`]) so a generated pipeline
//! runs on a laptop; end-to-end tests start it in process ([`MockQualtrics::start`]), inject
//! faults and then check in [`MockState`] that every record's effect happened exactly once.
//! It listens on `127.0.0.1` only.
//!
//! # Routes
//!
//! Under `/API/v3/` (authenticated with `X-API-TOKEN` or an OAuth bearer token issued by
//! this mock; anything else gets a 401 error envelope):
//!
//! | Call | Effect |
//! |---|---|
//! | `POST directories/{dir}/mailinglists` | creates a `CG_…` list every time (no dedup by name, like the real API) |
//! | `GET directories/{dir}/mailinglists` | pages the directory's lists (`mailingListId`, `name`, …) |
//! | `POST directories/{dir}/mailinglists/{ml}/transactioncontacts` | upserts the contacts by `extRef` (else `email`); `CTR_…` |
//! | `GET …/transactioncontacts/{importId}` | progress, then `contacts.count.{added,updated,failed}` |
//! | `POST distributions` | creates an `EMD_…` distribution every time |
//! | `GET distributions?surveyId=…` | pages the survey's distributions (optional `mailingListId` filter) |
//! | `POST surveys/{sv}/import-responses` | records each CSV/TSV row as a response; `PGR_…` |
//! | `GET surveys/{sv}/import-responses/{progressId}` | progress, then `complete` |
//! | `POST surveys/{sv}/export-responses` | snapshots the responses recorded in `[startDate, endDate)`; `ES_…` |
//! | `GET surveys/{sv}/export-responses/{progressId}` | progress, then `complete` with `fileId` |
//! | `GET surveys/{sv}/export-responses/{fileId}/file` | the file: a zip with one entry unless `compress` was `false` |
//!
//! Answers use the real envelopes: `{"result":…,"meta":{"httpStatus":"200 - OK","requestId"}}`
//! and `{"meta":{"httpStatus","requestId","error":{"errorCode","errorMessage"}}}`; every
//! answer has a new `requestId`. The error codes are the mock's own. An unknown route is a
//! 404. Lists page like the real API: `pageSize` (at most 100, the default) and an opaque
//! `skipToken`; `result.nextPage` is the full URL of the next page, or `null`.
//!
//! Effects happen when the `POST` is answered; the progress endpoints only report them. The
//! first `polls_to_complete - 1` progress requests of a job report less than 100 %.
//!
//! **Idempotency.** A response import (`POST surveys/{id}/import-responses`) with an
//! `Idempotency-Key` header that succeeded is stored. A repeated import to the same path
//! with the same key and the same body gets the stored `result` again and has no effect.
//! The real API documents this for response imports only ("Repeated requests with the same
//! Idempotency-Key and the same file will not create duplicate responses"), so the mock
//! ignores the header everywhere else: a test of the framework's idempotency elsewhere can
//! fail. A reused key with a different body gets a 409: that answer is the mock's choice,
//! the real API does not document one.
//!
//! Outside `/API/v3/`:
//!
//! - `POST /oauth2/token`: HTTP Basic `client_id:client_secret` and the form
//!   `grant_type=client_credentials` give `{access_token, token_type:"Bearer", expires_in:3600}`;
//!   wrong credentials give a 401. Never faulted.
//! - `GET /__mock/state` ([`MockState`]), `GET /__mock/stats` ([`Stats`]),
//!   `GET`/`PUT /__mock/faults` ([`Faults`], validated: a 400 with the message otherwise) and
//!   `POST /__mock/reset` (forgets every effect and the stats; keeps the faults and the
//!   issued tokens). No authentication, never faulted.
//!
//! Every API call logs one `info` line: method, path, endpoint, status and faults.

mod api;
mod endpoints;
mod faults;
mod fields;
mod files;
mod oauth;
mod state;
mod surveys;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use faults::{FaultKind, Faults};
pub use state::{
    CallRecord, Contact, ContactImport, Distribution, IdempotencyRecord, MailingList, MockState,
    ResponseExport, ResponseImport, Stats, SurveyResponse,
};

/// The largest request body accepted (a response import file), in bytes.
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// How the mock is started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockConfig {
    /// The port on `127.0.0.1`; 0 picks a free one.
    pub port: u16,
    /// The accepted `X-API-TOKEN`.
    pub api_token: String,
    /// The accepted OAuth client id.
    pub oauth_client_id: String,
    /// The accepted OAuth client secret.
    pub oauth_client_secret: String,
    /// The progress request of a job (contacts import, response import, export) that first
    /// reports completion; the earlier ones report less than 100 %. 0 and 1 both mean the
    /// first one.
    pub polls_to_complete: u32,
    /// The faults to inject from the start.
    pub faults: Faults,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            port: 0,
            api_token: "local-token".into(),
            oauth_client_id: "local-client".into(),
            oauth_client_secret: "local-secret".into(),
            polls_to_complete: 1,
            faults: Faults::default(),
        }
    }
}

/// The mock server. See the [module documentation](self) for its routes.
#[derive(Debug)]
pub struct MockQualtrics;

impl MockQualtrics {
    /// Binds `127.0.0.1:{port}` and serves in the background until
    /// [`RunningMock::shutdown`] or until the [`RunningMock`] is dropped.
    ///
    /// Fails when the port is taken or the faults are invalid ([`Faults::validate`]).
    pub async fn start(config: MockConfig) -> io::Result<RunningMock> {
        config
            .faults
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config, format!("http://{addr}")));
        let router = Router::new()
            .route("/oauth2/token", post(oauth::oauth_token))
            .route("/__mock/state", get(admin_state))
            .route("/__mock/stats", get(admin_stats))
            .route("/__mock/faults", get(admin_faults).put(admin_set_faults))
            .route("/__mock/reset", post(admin_reset))
            .fallback(api::handle)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
        });
        Ok(RunningMock {
            handle: MockHandle { shared },
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Runs the mock until ctrl-c (or SIGTERM on Unix), then shuts it down gracefully: the
    /// entry point of `cargo xtask local up`.
    pub async fn serve_forever(config: MockConfig) -> io::Result<()> {
        let mock = Self::start(config).await?;
        tracing::info!(base_url = %mock.base_url(), "mock Qualtrics API listening");
        wait_for_signal().await?;
        tracing::info!("mock Qualtrics API shutting down");
        mock.shutdown().await
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> io::Result<()> {
    tokio::signal::ctrl_c().await
}

/// A started mock. Dropping it stops the server (abruptly); [`RunningMock::shutdown`]
/// stops it gracefully.
#[derive(Debug)]
pub struct RunningMock {
    handle: MockHandle,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl RunningMock {
    /// The origin, such as `http://127.0.0.1:41234` (where `/oauth2/token` lives).
    pub fn url(&self) -> String {
        self.handle.url()
    }

    /// The API base URL, `{origin}/API/v3/`: the `base_url` of `[qualtrics]`.
    pub fn base_url(&self) -> String {
        format!("{}/API/v3/", self.url())
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle on the mock's state that outlives borrows of `self`.
    pub fn handle(&self) -> MockHandle {
        self.handle.clone()
    }

    /// A snapshot of every effect so far.
    pub fn state(&self) -> MockState {
        self.handle.state()
    }

    /// A snapshot of the call statistics.
    pub fn stats(&self) -> Stats {
        self.handle.stats()
    }

    /// Replaces the fault configuration (validated) and reseeds the random draws.
    pub fn set_faults(&self, faults: Faults) -> Result<(), String> {
        self.handle.set_faults(faults)
    }

    /// Forgets every effect and the stats; keeps the faults and the issued tokens.
    pub fn reset(&self) {
        self.handle.reset();
    }

    /// Stops accepting connections, lets in-flight calls finish, and waits for the server.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningMock {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A cloneable handle on a running mock's state.
#[derive(Clone)]
pub struct MockHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockHandle")
            .field("url", &self.shared.origin)
            .finish_non_exhaustive()
    }
}

impl MockHandle {
    /// The origin, such as `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.shared.origin.clone()
    }

    /// A snapshot of every effect so far.
    pub fn state(&self) -> MockState {
        self.shared.lock().state.clone()
    }

    /// A snapshot of the call statistics.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// The current fault configuration.
    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.clone()
    }

    /// Replaces the fault configuration (validated) and reseeds the random draws.
    pub fn set_faults(&self, faults: Faults) -> Result<(), String> {
        faults.validate()?;
        let mut inner = self.shared.lock();
        inner.rng = fastrand::Rng::with_seed(faults.seed);
        inner.faults = faults;
        Ok(())
    }

    /// Forgets every effect and the stats; keeps the faults and the issued tokens.
    pub fn reset(&self) {
        let mut inner = self.shared.lock();
        inner.state = MockState::default();
        inner.stats = Stats::default();
    }
}

/// What the handlers share.
struct Shared {
    config: MockConfig,
    origin: String,
    inner: Mutex<Inner>,
}

/// The mutable part, behind one lock that is never held across an `await`.
struct Inner {
    faults: Faults,
    /// The fault draws (seeded).
    rng: fastrand::Rng,
    /// Ids and request ids (not seeded: ids differ between runs, like the real API's).
    ids: fastrand::Rng,
    state: MockState,
    stats: Stats,
    /// Issued bearer tokens and when they expire.
    tokens: HashMap<String, Instant>,
}

impl Shared {
    fn new(config: MockConfig, origin: String) -> Self {
        let inner = Inner {
            faults: config.faults.clone(),
            rng: fastrand::Rng::with_seed(config.faults.seed),
            ids: fastrand::Rng::new(),
            state: MockState::default(),
            stats: Stats::default(),
            tokens: HashMap::new(),
        };
        Self {
            config,
            origin,
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn polls_to_complete(&self) -> u32 {
        self.config.polls_to_complete.max(1)
    }
}

async fn admin_state(State(shared): State<Arc<Shared>>) -> Json<MockState> {
    Json(shared.lock().state.clone())
}

async fn admin_stats(State(shared): State<Arc<Shared>>) -> Json<Stats> {
    Json(shared.lock().stats.clone())
}

async fn admin_faults(State(shared): State<Arc<Shared>>) -> Json<Faults> {
    Json(shared.lock().faults.clone())
}

async fn admin_set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let faults = match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => faults,
        Err(e) => return admin_error(format!("invalid fault configuration: {e}")),
    };
    match (MockHandle { shared }).set_faults(faults.clone()) {
        Ok(()) => {
            tracing::info!(?faults, "mock Qualtrics faults replaced");
            Json(faults).into_response()
        }
        Err(e) => admin_error(e),
    }
}

async fn admin_reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    MockHandle { shared }.reset();
    StatusCode::NO_CONTENT
}

fn admin_error(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

/// A request header as text, when present and valid.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
