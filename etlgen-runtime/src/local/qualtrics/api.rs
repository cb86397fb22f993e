//! The API calls: authentication, faults, idempotency, routing and rendering; the helpers
//! the endpoints share are in [`super::fields`].
//!
//! A call is handled synchronously under the state lock (decide faults, replay or apply
//! the effect, record the stats, render the answer); only a slow answer's sleep happens
//! after the lock is released.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header as http_header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::faults::{self, FaultKind};
use super::fields::{new_request_id, parse_query};
use super::files::fingerprint;
use super::state::{CallRecord, IdempotencyRecord};
use super::{Inner, Shared, endpoints, header, surveys};
use crate::qualtrics::endpoint;

/// What a call is answered with, before rendering.
pub(super) enum Reply {
    /// `{"result":…,"meta":…}` with 200.
    Ok(Value),
    /// The error envelope.
    Error(StatusCode, &'static str, String),
    /// A downloaded file with its content type.
    File(&'static str, Vec<u8>),
}

impl Reply {
    fn status(&self) -> StatusCode {
        match self {
            Self::Ok(_) | Self::File(..) => StatusCode::OK,
            Self::Error(status, ..) => *status,
        }
    }
}

pub(super) fn bad(message: impl Into<String>) -> Reply {
    Reply::Error(StatusCode::BAD_REQUEST, "BAD_REQUEST", message.into())
}

pub(super) fn not_found(message: impl Into<String>) -> Reply {
    Reply::Error(StatusCode::NOT_FOUND, "NOT_FOUND", message.into())
}

/// A handler's answer and whether it changed the state.
pub(super) struct Outcome {
    pub(super) reply: Reply,
    pub(super) effect: bool,
}

impl Outcome {
    pub(super) fn effect(result: Value) -> Self {
        Self {
            reply: Reply::Ok(result),
            effect: true,
        }
    }

    pub(super) fn read(reply: Reply) -> Self {
        Self {
            reply,
            effect: false,
        }
    }
}

/// One API call, as the handlers see it.
pub(super) struct Call<'a> {
    pub(super) method: &'a str,
    /// Below `/API/v3/`, without leading or trailing slash.
    pub(super) path: &'a str,
    pub(super) query: Vec<(String, String)>,
    pub(super) headers: &'a HeaderMap,
    pub(super) body: &'a [u8],
}

impl Call<'_> {
    pub(super) fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The endpoints, with their path parameters.
enum Route {
    CreateList {
        dir: String,
    },
    ListLists {
        dir: String,
    },
    ImportContacts {
        dir: String,
        list: String,
    },
    ContactsStatus {
        dir: String,
        list: String,
        import: String,
    },
    CreateDistribution,
    ListDistributions,
    ImportResponses {
        survey: String,
    },
    ImportProgress {
        survey: String,
        progress: String,
    },
    StartExport {
        survey: String,
    },
    ExportProgress {
        survey: String,
        progress: String,
    },
    ExportFile {
        survey: String,
        file: String,
    },
}

/// The endpoint name (for stats) and the route of a call.
fn route(method: &str, path: &str) -> (&'static str, Option<Route>) {
    let segments: Vec<&str> = path.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return ("unknown", None);
    }
    let s = |v: &&str| (*v).to_owned();
    use Route::*;
    let (name, route) = match (method, segments.as_slice()) {
        ("POST", ["directories", dir, "mailinglists"]) => {
            (endpoint::CREATE_MAILING_LIST, CreateList { dir: s(dir) })
        }
        ("GET", ["directories", dir, "mailinglists"]) => {
            (endpoint::LIST_MAILING_LISTS, ListLists { dir: s(dir) })
        }
        (
            "POST",
            [
                "directories",
                dir,
                "mailinglists",
                list,
                "transactioncontacts",
            ],
        ) => (
            endpoint::IMPORT_TRANSACTION_CONTACTS,
            ImportContacts {
                dir: s(dir),
                list: s(list),
            },
        ),
        (
            "GET",
            [
                "directories",
                dir,
                "mailinglists",
                list,
                "transactioncontacts",
                import,
            ],
        ) => (
            endpoint::TRANSACTION_CONTACTS_STATUS,
            ContactsStatus {
                dir: s(dir),
                list: s(list),
                import: s(import),
            },
        ),
        ("POST", ["distributions"]) => (endpoint::CREATE_DISTRIBUTION, CreateDistribution),
        ("GET", ["distributions"]) => (endpoint::LIST_DISTRIBUTIONS, ListDistributions),
        ("POST", ["surveys", survey, "import-responses"]) => (
            endpoint::IMPORT_RESPONSES,
            ImportResponses { survey: s(survey) },
        ),
        ("GET", ["surveys", survey, "import-responses", progress]) => (
            endpoint::IMPORT_RESPONSES_PROGRESS,
            ImportProgress {
                survey: s(survey),
                progress: s(progress),
            },
        ),
        ("POST", ["surveys", survey, "export-responses"]) => (
            endpoint::EXPORT_RESPONSES,
            StartExport { survey: s(survey) },
        ),
        ("GET", ["surveys", survey, "export-responses", progress]) => (
            endpoint::EXPORT_RESPONSES_PROGRESS,
            ExportProgress {
                survey: s(survey),
                progress: s(progress),
            },
        ),
        ("GET", ["surveys", survey, "export-responses", file, "file"]) => (
            endpoint::EXPORT_RESPONSES_FILE,
            ExportFile {
                survey: s(survey),
                file: s(file),
            },
        ),
        _ => return ("unknown", None),
    };
    (name, Some(route))
}

/// Every request no other route matched: the API under `/API/v3/`, else a 404.
pub(super) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let api_path = uri
        .path()
        .strip_prefix("/API/v3")
        .filter(|rest| rest.is_empty() || rest.starts_with('/'));
    let Some(path) = api_path else {
        let request_id = new_request_id(&mut shared.lock().ids);
        let message = format!("no route {method} {}", uri.path());
        return render(
            Reply::Error(StatusCode::NOT_FOUND, "NOT_FOUND", message),
            &request_id,
        )
        .into_response();
    };
    let call = Call {
        method: method.as_str(),
        path: path.trim_matches('/'),
        query: parse_query(uri.query()),
        headers: &headers,
        body: &body,
    };
    let (response, delay) = shared.process(&call);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    response
}

impl Shared {
    /// Handles one API call under the lock; returns the answer and how long to sit on it.
    fn process(&self, call: &Call<'_>) -> (Response, Option<Duration>) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let request_id = new_request_id(&mut inner.ids);
        let (endpoint_name, route) = route(call.method, call.path);
        inner.stats.total_calls += 1;
        *inner
            .stats
            .calls
            .entry(endpoint_name.to_owned())
            .or_default() += 1;
        let mut record = CallRecord {
            request_id: request_id.clone(),
            method: call.method.to_owned(),
            path: call.path.to_owned(),
            endpoint: endpoint_name.to_owned(),
            status: 0,
            faults: Vec::new(),
            effect: false,
            replay: false,
        };
        let mut draw = faults::Draw::default();
        let reply = 'reply: {
            if !self.authorized(inner, call.headers) {
                break 'reply Reply::Error(
                    StatusCode::UNAUTHORIZED,
                    "AUTHENTICATION_FAILED",
                    "missing or invalid X-API-TOKEN or bearer token".into(),
                );
            }
            let Some(route) = route else {
                break 'reply not_found(format!("no route {} /API/v3/{}", call.method, call.path));
            };
            draw = faults::draw(&inner.faults, &mut inner.rng, call.body);
            match draw.before {
                Some(kind @ (FaultKind::Poison | FaultKind::ServerError)) => {
                    record.faults.push(kind);
                    break 'reply Reply::Error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "INTERNAL_ERROR",
                        format!("injected fault: {}", kind.as_str()),
                    );
                }
                Some(kind) => {
                    record.faults.push(kind);
                    break 'reply Reply::Error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TOO_MANY_REQUESTS",
                        "injected fault: too many requests".into(),
                    );
                }
                None => {}
            }
            let key = (endpoint_name == endpoint::IMPORT_RESPONSES)
                .then(|| header(call.headers, "idempotency-key"))
                .flatten();
            if let Some(key) = key {
                let fingerprint = fingerprint(call.body);
                let stored = inner
                    .state
                    .idempotency_keys
                    .iter_mut()
                    .find(|r| r.key == key && r.method == call.method && r.path == call.path);
                if let Some(stored) = stored {
                    if stored.fingerprint != fingerprint {
                        break 'reply Reply::Error(
                            StatusCode::CONFLICT,
                            "IDEMPOTENCY_CONFLICT",
                            format!(
                                "Idempotency-Key {key} was already used for {} /API/v3/{} \
                                 with a different body",
                                call.method, call.path
                            ),
                        );
                    }
                    stored.replays += 1;
                    record.replay = true;
                    break 'reply Reply::Ok(stored.result.clone());
                }
            }
            let outcome = self.dispatch(inner, route, call);
            record.effect = outcome.effect;
            if let (Some(key), Reply::Ok(result)) = (key, &outcome.reply) {
                inner.state.idempotency_keys.push(IdempotencyRecord {
                    key: key.to_owned(),
                    method: call.method.to_owned(),
                    path: call.path.to_owned(),
                    fingerprint: fingerprint(call.body),
                    result: result.clone(),
                    replays: 0,
                });
            }
            outcome.reply
        };
        let status = reply.status();
        let mut rendered = render(reply, &request_id);
        let mut delay = None;
        if status.is_success() && draw.malformed {
            record.faults.push(FaultKind::Malformed);
            rendered.body.truncate(rendered.body.len() / 2);
        }
        if status.is_success() && draw.slow {
            record.faults.push(FaultKind::Slow);
            delay = Some(Duration::from_millis(inner.faults.slow_ms));
        }
        let mut response = rendered.into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(
                http_header::RETRY_AFTER,
                HeaderValue::from(inner.faults.retry_after_seconds),
            );
        }
        record.status = status.as_u16();
        let faults: Vec<&str> = record.faults.iter().map(|f| f.as_str()).collect();
        tracing::info!(
            method = call.method,
            path = %format_args!("/API/v3/{}", call.path),
            endpoint = endpoint_name,
            status = record.status,
            faults = %faults.join(","),
            replay = record.replay,
            request_id = %request_id,
            "mock qualtrics call"
        );
        inner.stats.record(record);
        (response, delay)
    }

    fn authorized(&self, inner: &Inner, headers: &HeaderMap) -> bool {
        if let Some(token) = header(headers, "x-api-token") {
            return token == self.config.api_token;
        }
        let bearer = header(headers, "authorization")
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        bearer.is_some_and(|token| {
            inner
                .tokens
                .get(token)
                .is_some_and(|expires| Instant::now() < *expires)
        })
    }

    fn dispatch(&self, inner: &mut Inner, route: Route, call: &Call<'_>) -> Outcome {
        let polls = self.polls_to_complete();
        let origin = self.origin.as_str();
        let result = match route {
            Route::CreateList { dir } => endpoints::create_list(inner, dir, call),
            Route::ListLists { dir } => endpoints::list_lists(inner, &dir, call, origin),
            Route::ImportContacts { dir, list } => {
                endpoints::import_contacts(inner, &dir, &list, call, origin)
            }
            Route::ContactsStatus { dir, list, import } => {
                endpoints::contacts_status(inner, polls, &dir, &list, &import)
            }
            Route::CreateDistribution => endpoints::create_distribution(inner, call),
            Route::ListDistributions => endpoints::list_distributions(inner, call, origin),
            Route::ImportResponses { survey } => surveys::import_responses(inner, survey, call),
            Route::ImportProgress { survey, progress } => {
                surveys::import_progress(inner, polls, &survey, &progress)
            }
            Route::StartExport { survey } => surveys::start_export(inner, survey, call),
            Route::ExportProgress { survey, progress } => {
                surveys::export_progress(inner, polls, &survey, &progress)
            }
            Route::ExportFile { survey, file } => {
                surveys::export_file(inner, polls, &survey, &file)
            }
        };
        result.unwrap_or_else(Outcome::read)
    }
}

/// A rendered answer: status, content type and body.
struct Rendered {
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Rendered {
    fn into_response(self) -> Response {
        let headers = [(http_header::CONTENT_TYPE, self.content_type)];
        (self.status, headers, self.body).into_response()
    }
}

/// Renders a reply with the real API's envelopes.
fn render(reply: Reply, request_id: &str) -> Rendered {
    let status = reply.status();
    let http_status = format!(
        "{} - {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Unknown")
    );
    let envelope = match reply {
        Reply::Ok(result) => json!({
            "result": result,
            "meta": { "httpStatus": http_status, "requestId": request_id },
        }),
        Reply::Error(_, code, message) => json!({
            "meta": {
                "httpStatus": http_status,
                "requestId": request_id,
                "error": { "errorCode": code, "errorMessage": message },
            },
        }),
        Reply::File(content_type, body) => {
            return Rendered {
                status,
                content_type,
                body,
            };
        }
    };
    Rendered {
        status,
        content_type: "application/json",
        body: serde_json::to_vec(&envelope).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_matched_with_their_endpoint_names() {
        let name = |m, p| route(m, p).0;
        assert_eq!(
            name("POST", "directories/POOL_1/mailinglists"),
            endpoint::CREATE_MAILING_LIST
        );
        assert_eq!(
            name(
                "GET",
                "directories/POOL_1/mailinglists/CG_1/transactioncontacts/CTR_1"
            ),
            endpoint::TRANSACTION_CONTACTS_STATUS
        );
        assert_eq!(
            name("GET", "surveys/SV_1/export-responses/F/file"),
            endpoint::EXPORT_RESPONSES_FILE
        );
        assert_eq!(name("DELETE", "distributions"), "unknown");
        assert_eq!(name("GET", "surveys//import-responses/P"), "unknown");
    }
}
