//! The Qualtrics API v3: request and response types, endpoint budgets, and the client.
//!
//! Steps build an [`ApiRequest`] (method, path relative to `…/API/v3/`, body, and the
//! [`endpoint`] name that selects its rate-limit budget) and send it through the
//! [`crate::ports::QualtricsApi`] port. The real implementation, [`client::Client`], adds
//! authentication, per-endpoint rate limiting and retries; the fake in [`crate::testing`]
//! records requests instead.

mod auth;
pub mod client;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::StepError;

pub use auth::REREAD_EVERY;
pub use client::Client;

/// Endpoint names: the keys of `[qualtrics.rate_limits]` and of [`default_budget`].
pub mod endpoint {
    /// `POST /directories/{id}/mailinglists`.
    pub const CREATE_MAILING_LIST: &str = "create_mailing_list";
    /// `POST …/mailinglists/{id}/transactioncontacts`.
    pub const IMPORT_TRANSACTION_CONTACTS: &str = "import_transaction_contacts";
    /// `GET …/transactioncontacts/{importId}`.
    pub const TRANSACTION_CONTACTS_STATUS: &str = "transaction_contacts_status";
    /// `GET /directories/{id}/mailinglists`.
    pub const LIST_MAILING_LISTS: &str = "list_mailing_lists";
    /// `POST /distributions`.
    pub const CREATE_DISTRIBUTION: &str = "create_distribution";
    /// `GET /distributions?surveyId=…`.
    pub const LIST_DISTRIBUTIONS: &str = "list_distributions";
    /// `POST /surveys/{id}/import-responses`.
    pub const IMPORT_RESPONSES: &str = "import_responses";
    /// `GET /surveys/{id}/import-responses/{progressId}`.
    pub const IMPORT_RESPONSES_PROGRESS: &str = "import_responses_progress";
    /// `POST /surveys/{id}/export-responses`.
    pub const EXPORT_RESPONSES: &str = "export_responses";
    /// `GET /surveys/{id}/export-responses/{progressId}`.
    pub const EXPORT_RESPONSES_PROGRESS: &str = "export_responses_progress";
    /// `GET /surveys/{id}/export-responses/{fileId}/file`.
    pub const EXPORT_RESPONSES_FILE: &str = "export_responses_file";
    /// Any other call.
    pub const DEFAULT: &str = "default";
}

/// The documented per-minute budget of an endpoint (the published limits vary; override
/// them in `[qualtrics.rate_limits]`). Unknown names get the `default` budget of 500.
pub fn default_budget(name: &str) -> u32 {
    use endpoint::*;
    match name {
        IMPORT_TRANSACTION_CONTACTS
        | IMPORT_RESPONSES
        | IMPORT_RESPONSES_PROGRESS
        | EXPORT_RESPONSES
        | EXPORT_RESPONSES_FILE => 100,
        EXPORT_RESPONSES_PROGRESS => 1000,
        CREATE_DISTRIBUTION => 3000,
        _ => 500,
    }
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
}

impl Method {
    /// The method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
        }
    }
}

/// A request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// No body.
    Empty,
    /// A JSON body (`Content-Type: application/json`).
    Json(serde_json::Value),
    /// A text body with its content type, such as CSV for a response import.
    Text {
        /// The content type.
        content_type: String,
        /// The text.
        text: String,
    },
}

/// One Qualtrics API call.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    /// The rate-limit budget this call draws from (an [`endpoint`] name).
    pub endpoint: &'static str,
    /// The method.
    pub method: Method,
    /// The path below `…/API/v3/`, without a leading slash.
    pub path: String,
    /// Query parameters (names are case-sensitive: `format`, not `Format`).
    pub query: Vec<(String, String)>,
    /// Extra headers, such as `Idempotency-Key`.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Body,
}

impl ApiRequest {
    /// A request without body.
    pub fn new(endpoint: &'static str, method: Method, path: impl Into<String>) -> Self {
        Self {
            endpoint,
            method,
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    /// A `GET`.
    pub fn get(endpoint: &'static str, path: impl Into<String>) -> Self {
        Self::new(endpoint, Method::Get, path)
    }

    /// A `POST` with a JSON body.
    pub fn post_json(
        endpoint: &'static str,
        path: impl Into<String>,
        body: serde_json::Value,
    ) -> Self {
        Self::new(endpoint, Method::Post, path).body(Body::Json(body))
    }

    /// Sets the body.
    pub fn body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Whether sending the request again cannot repeat its effect, so the client may retry
    /// it after an answer that came after the effect (a timeout, a 5xx, a dropped
    /// connection): `GET`, `PUT` and `DELETE` are idempotent by HTTP's definition, and
    /// Qualtrics answers a response import (`IMPORT_RESPONSES`) carrying an
    /// `Idempotency-Key` it has seen with the first answer instead of importing again. It
    /// documents the key for that endpoint only, so a key on any other `POST` (a hook may
    /// add one) does not make it replayable.
    ///
    /// Any other `POST` (creating a mailing list or a distribution) is sent again by the
    /// client only when it was refused unapplied: a 429, or a connection that never opened.
    /// Otherwise its retryable error goes back to SQS, and the redelivery's step looks for
    /// what the first attempt left before creating it again (see `kinds::claim`).
    pub fn replayable(&self) -> bool {
        let keyed =
            (self.headers.iter()).any(|(name, _)| name.eq_ignore_ascii_case("idempotency-key"));
        self.method != Method::Post || (self.endpoint == endpoint::IMPORT_RESPONSES && keyed)
    }

    /// Adds `Idempotency-Key: key`, unless the request already carries one (a client hook
    /// that chose its own key keeps it).
    pub fn idempotency_key(self, key: impl Into<String>) -> Self {
        if self
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("idempotency-key"))
        {
            return self;
        }
        self.header("Idempotency-Key", key)
    }

    /// Adds a query parameter.
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }
}

/// A successful (2xx) response.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    /// The HTTP status.
    pub status: u16,
    /// `meta.requestId`, for Qualtrics support.
    pub request_id: Option<String>,
    /// The raw body: JSON for API calls, a file for downloads.
    pub body: Bytes,
}

#[derive(Deserialize)]
struct Envelope<T> {
    result: T,
}

/// The `meta` part of a Qualtrics response.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// The request id.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The status text, such as `"400 - Bad Request"`.
    #[serde(default)]
    pub http_status: Option<String>,
    /// The error, on failure.
    #[serde(default)]
    pub error: Option<ApiErrorDetail>,
}

/// `meta.error` of an error response.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiErrorDetail {
    /// The error code.
    #[serde(default)]
    pub error_code: Option<String>,
    /// The message.
    #[serde(default)]
    pub error_message: Option<String>,
}

#[derive(Deserialize)]
struct MetaOnly {
    #[serde(default)]
    meta: Meta,
}

/// Reads `meta` from a response body, success or error; empty when the body has none.
pub fn parse_meta(body: &[u8]) -> Meta {
    serde_json::from_slice::<MetaOnly>(body)
        .map(|m| m.meta)
        .unwrap_or_default()
}

impl ApiResponse {
    /// Parses `result` out of the `{"result":…,"meta":…}` envelope.
    pub fn result<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        serde_json::from_slice::<Envelope<T>>(&self.body)
            .map(|e| e.result)
            .map_err(|e| {
                StepError::permanent(format!(
                    "unexpected Qualtrics response (requestId {}): {e}",
                    self.request_id.as_deref().unwrap_or("unknown")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_reads_and_keyed_response_imports_are_replayable() {
        let import = || ApiRequest::post_json(endpoint::IMPORT_RESPONSES, "p", json!({}));
        assert!(ApiRequest::get(endpoint::DEFAULT, "p").replayable());
        assert!(import().idempotency_key("k").replayable());
        assert!(!import().replayable());
        // Qualtrics documents the key for response imports only.
        let create = ApiRequest::post_json(endpoint::CREATE_DISTRIBUTION, "p", json!({}));
        assert!(!create.idempotency_key("k").replayable());
    }

    #[test]
    fn an_idempotency_key_is_added_once_and_a_hooks_own_key_wins() {
        let added = ApiRequest::get("e", "p").idempotency_key("k1");
        assert_eq!(added.headers, [("Idempotency-Key".into(), "k1".into())]);
        let own = ApiRequest::get("e", "p")
            .header("idempotency-key", "mine")
            .idempotency_key("k1");
        assert_eq!(own.headers, [("idempotency-key".into(), "mine".into())]);
    }

    #[test]
    fn result_and_meta_are_parsed() {
        let body =
            br#"{"result":{"id":"CG_1"},"meta":{"httpStatus":"200 - OK","requestId":"req-1"}}"#;
        let response = ApiResponse {
            status: 200,
            request_id: parse_meta(body).request_id,
            body: Bytes::from_static(body),
        };
        #[derive(Deserialize)]
        struct Id {
            id: String,
        }
        assert_eq!(response.result::<Id>().unwrap().id, "CG_1");
        assert_eq!(response.request_id.as_deref(), Some("req-1"));
        let err = response.result::<Vec<u8>>().unwrap_err();
        assert!(err.to_string().contains("req-1"));
    }

    #[test]
    fn error_envelope_is_parsed() {
        let body = br#"{"meta":{"requestId":"r","httpStatus":"400 - Bad Request","error":{"errorCode":"RP_0.1","errorMessage":"bad"}}}"#;
        let meta = parse_meta(body);
        let error = meta.error.unwrap();
        assert_eq!(error.error_code.as_deref(), Some("RP_0.1"));
        assert_eq!(error.error_message.as_deref(), Some("bad"));
        assert!(parse_meta(b"<html>").request_id.is_none());
    }

    #[test]
    fn budgets_follow_the_documented_limits() {
        assert_eq!(default_budget(endpoint::IMPORT_TRANSACTION_CONTACTS), 100);
        assert_eq!(default_budget(endpoint::CREATE_DISTRIBUTION), 3000);
        assert_eq!(default_budget("anything"), 500);
    }
}

/// One page of a list endpoint: `result.elements`, and `result.nextPage`, the full URL of
/// the next page (with its `skipToken`), or null on the last page.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The page's elements.
    #[serde(default = "Vec::new")]
    pub elements: Vec<T>,
    /// The next page's URL.
    #[serde(default)]
    pub next_page: Option<String>,
}

impl<T> Page<T> {
    /// The `skipToken` of the next page, if there is one.
    pub fn skip_token(&self) -> Option<String> {
        let url = self.next_page.as_deref()?;
        let query = url.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name == "skipToken").then(|| {
                percent_encoding::percent_decode_str(value)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
    }
}

/// Walks a list endpoint page by page until `found` picks an element. The first call is
/// `request`; later ones add the previous page's `skipToken`. Past `max_pages` pages it
/// fails (retryably, so the message waits in the DLQ) rather than answer "not found" for
/// what it did not read, which could make a step create something twice.
pub async fn find_in_pages<T, F>(
    api: &dyn crate::ports::QualtricsApi,
    request: ApiRequest,
    max_pages: usize,
    mut found: F,
) -> Result<Option<T>, StepError>
where
    T: DeserializeOwned,
    F: FnMut(&T) -> bool,
{
    let mut next = Some(request.clone());
    let mut pages = 0;
    while let Some(request) = next.take() {
        let page: Page<T> = api.send(request.clone()).await?.result()?;
        let token = page.skip_token();
        if let Some(hit) = page.elements.into_iter().find(|e| found(e)) {
            return Ok(Some(hit));
        }
        pages += 1;
        if let Some(token) = token {
            if pages >= max_pages {
                return Err(StepError::retryable(format!(
                    "{} has more than {max_pages} pages: looked no further, to create nothing twice",
                    request.path
                )));
            }
            let mut again = request;
            again.query.retain(|(name, _)| name != "skipToken");
            next = Some(again.query("skipToken", token));
        }
    }
    Ok(None)
}
