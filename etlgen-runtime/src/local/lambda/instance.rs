//! One execution environment: a step's `bootstrap` process and the Lambda Runtime API it
//! polls, on its own loopback port.
//!
//! The process is started once (a cold start) and reused for later invocations (warm
//! starts), one invocation at a time, as in Lambda. An invocation that outlives the
//! function's timeout, or a process that exits, ends the environment: the process is killed
//! and the next invocation gets a fresh one.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, mpsc, oneshot};

/// How one invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The function returned this body (`POST …/response`).
    Response(Bytes),
    /// The function reported an error (`POST …/error`), or failed its init.
    Error(String),
    /// The invocation outlived the function's timeout; the process was killed.
    Timeout,
    /// The process exited mid-invocation (a crash, or killed from outside).
    Crashed(String),
}

/// What starts an environment: the function as Lambda would run it.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// The function's name.
    pub name: String,
    /// Its ARN, passed as `Lambda-Runtime-Invoked-Function-Arn`.
    pub arn: String,
    /// The `bootstrap` executable.
    pub bootstrap: PathBuf,
    /// The function's environment variables, with the local overrides applied.
    pub environment: BTreeMap<String, String>,
    /// The function's timeout.
    pub timeout: Duration,
    /// Its memory size in MB (only reported to the process).
    pub memory_mb: i32,
    /// The region.
    pub region: String,
    /// Where the process's stdout and stderr go (appended), if anywhere.
    pub log_file: Option<PathBuf>,
}

struct Invocation {
    request_id: String,
    body: Bytes,
    deadline_ms: u128,
    reply: oneshot::Sender<Outcome>,
}

struct Api {
    function_arn: String,
    next: Mutex<mpsc::Receiver<Invocation>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
}

/// A running environment.
pub struct Instance {
    child: Child,
    invocations: mpsc::Sender<Invocation>,
    server: tokio::task::JoinHandle<()>,
    timeout: Duration,
    invoked: u64,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

impl Instance {
    /// Starts the Runtime API and the process (a cold start).
    pub async fn start(spec: &FunctionSpec) -> std::io::Result<Instance> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let (invocations, next) = mpsc::channel(1);
        let api = Arc::new(Api {
            function_arn: spec.arn.clone(),
            next: Mutex::new(next),
            pending: Mutex::new(HashMap::new()),
        });
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(invocation_response),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(invocation_error),
            )
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(api);
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "the Runtime API server stopped");
            }
        });
        let child = spawn(spec, &address).map_err(|e| {
            server.abort();
            std::io::Error::new(
                e.kind(),
                format!("starting {}: {e}", spec.bootstrap.display()),
            )
        })?;
        tracing::info!(function = %spec.name, pid = child.id(), "cold start");
        Ok(Instance {
            child,
            invocations,
            server,
            timeout: spec.timeout,
            invoked: 0,
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How many invocations this environment has served.
    pub fn invoked(&self) -> u64 {
        self.invoked
    }

    /// Invokes the function with `event` and waits for its outcome. After
    /// [`Outcome::Timeout`] or [`Outcome::Crashed`] the instance is dead: drop it.
    pub async fn invoke(&mut self, request_id: String, event: Bytes) -> Outcome {
        self.invoked += 1;
        let (reply, outcome) = oneshot::channel();
        let invocation = Invocation {
            request_id,
            body: event,
            deadline_ms: now_ms() + self.timeout.as_millis(),
            reply,
        };
        if self.invocations.send(invocation).await.is_err() {
            return Outcome::Crashed("the Runtime API is gone".to_owned());
        }
        tokio::select! {
            outcome = outcome => outcome.unwrap_or_else(|_| Outcome::Crashed("no reply".to_owned())),
            status = self.child.wait() => Outcome::Crashed(match status {
                Ok(status) => format!("the process exited: {status}"),
                Err(e) => format!("the process could not be waited on: {e}"),
            }),
            () = tokio::time::sleep(self.timeout) => {
                let _ = self.child.start_kill();
                Outcome::Timeout
            }
        }
    }

    /// Ends the environment.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.server.abort();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        self.server.abort();
    }
}

/// Starts the process with a clean environment, as Lambda does: the function's variables,
/// the runtime's reserved ones, and nothing of the caller's (so no real credentials leak in).
fn spawn(spec: &FunctionSpec, runtime_api: &str) -> std::io::Result<Child> {
    let mut command = Command::new(&spec.bootstrap);
    command
        .env_clear()
        .envs(&spec.environment)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("TZ", ":UTC")
        .env("LANG", "en_US.UTF-8")
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", &spec.name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env(
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            spec.memory_mb.to_string(),
        )
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", spec.name),
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
        .env("AWS_REGION", &spec.region)
        .env("AWS_DEFAULT_REGION", &spec.region)
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("_HANDLER", "bootstrap")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(dir) = spec.bootstrap.parent() {
        command.current_dir(dir).env("LAMBDA_TASK_ROOT", dir);
    }
    match &spec.log_file {
        Some(path) => {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("opening {}: {e}", path.display()))
                })?;
            command.stdout(log.try_clone()?).stderr(log);
        }
        None => {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    command.spawn()
}

async fn next_invocation(State(api): State<Arc<Api>>) -> Response {
    let Some(invocation) = api.next.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    api.pending
        .lock()
        .await
        .insert(invocation.request_id.clone(), invocation.reply);
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set("lambda-runtime-aws-request-id", invocation.request_id);
    set(
        "lambda-runtime-deadline-ms",
        invocation.deadline_ms.to_string(),
    );
    set(
        "lambda-runtime-invoked-function-arn",
        api.function_arn.clone(),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000;Sampled=0".to_owned(),
    );
    set("content-type", "application/json".to_owned());
    (headers, invocation.body).into_response()
}

async fn settle(api: &Api, id: &str, outcome: Outcome) -> StatusCode {
    match api.pending.lock().await.remove(id) {
        Some(reply) => {
            let _ = reply.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn invocation_response(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    settle(&api, &id, Outcome::Response(body)).await
}

async fn invocation_error(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    let message = String::from_utf8_lossy(&body).into_owned();
    settle(&api, &id, Outcome::Error(message)).await
}

/// An init error fails whatever invocation is pending; the process then exits, which the
/// invoker sees as well.
async fn init_error(State(api): State<Arc<Api>>, body: Bytes) -> StatusCode {
    let message = format!("init failed: {}", String::from_utf8_lossy(&body));
    let pending: Vec<_> = api.pending.lock().await.drain().collect();
    for (_, reply) in pending {
        let _ = reply.send(Outcome::Error(message.clone()));
    }
    tracing::error!(%message, "a function failed its init");
    StatusCode::ACCEPTED
}
