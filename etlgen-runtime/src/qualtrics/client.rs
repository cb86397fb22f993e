//! The real Qualtrics client: reqwest with rustls, auth, rate limits and retries.
//!
//! - **Auth**: `X-API-TOKEN`, or OAuth client credentials (`POST /oauth2/token` with HTTP
//!   Basic, cached until shortly before it expires, dropped on a 401).
//! - **Rate limits**: one governor limiter per endpoint name, sized from
//!   `[qualtrics.rate_limits]` or [`super::default_budget`]. Each Lambda instance has its
//!   own limiters, so a budget is per instance: divide the brand's budget by the step's
//!   maximum concurrency when configuring it.
//! - **Retries**: 429, 5xx and timeouts are retried with exponential backoff and full
//!   jitter (backon), bounded by `max_retries`. A `Retry-After` longer than the computed delay
//!   wins; one longer than `backoff_max_ms` ends the retries, so the message goes back to SQS
//!   instead of holding the Lambda. A request that is not [`ApiRequest::replayable`] (a
//!   `POST` other than a response import with its `Idempotency-Key`) is sent again here
//!   only when it was refused
//!   unapplied (a 429, a connection that never opened): after a timeout or a 5xx it may have
//!   taken effect, and sending it again would create a second list or distribution, so its
//!   error goes back to SQS, whose redelivery looks first for what the attempt left.
//! - **Refused credentials**: a 401 or 403 is retryable, as the AWS ports' are: a rotated or
//!   wrong token is a deployment mistake, not a bad record, so the message goes to the
//!   dead-letter queue, to redrive once the secret is fixed, instead of being acknowledged as
//!   rejected. The request is sent again here only with new credentials: a new OAuth token
//!   after a 401, or a secret that changed when read again (see `auth`).
//! - **Logging**: every response logs its `meta.requestId` (a downloaded file carries none).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

pub use super::auth::token_from_secret;
use super::auth::{Auth, Credentials};
use super::{ApiRequest, ApiResponse, Body, Method, default_budget, parse_meta};
use crate::StepError;
use crate::config::QualtricsConfig;
use crate::ports::{ObjectReader, QualtricsApi, SecretStore};

/// The Qualtrics API client. Build it once at cold start with the fetched secret.
pub struct Client {
    http: reqwest::Client,
    timeout: Duration,
    base_url: String,
    credentials: Credentials,
    limiters: HashMap<String, Arc<DefaultDirectRateLimiter>>,
    budgets: std::collections::BTreeMap<String, u32>,
    backoff: ExponentialBuilder,
    max_backoff: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Client {
    /// Builds the client from `[qualtrics]` and the secret's value, with an HTTPS client of
    /// its own ([`crate::aws::https_client`], the platform's trust store: `[tls]` is not
    /// read). A step's is built by [`crate::aws::services`], with [`Client::with_http`].
    pub fn new(config: &QualtricsConfig, secret: &str) -> Result<Self, crate::Error> {
        Self::with_http(config, secret, crate::aws::https_client()?)
    }

    /// Builds the client from `[qualtrics]` and the secret's value, sending through `http`
    /// (a step shares the one its AWS clients use). Build `http` with
    /// [`crate::aws::https_client_trusting`] (or `https_client`), which follows no redirect, so `X-API-TOKEN` only ever
    /// goes to the datacenter's host (see [`crate::aws::http`]).
    pub fn with_http(
        config: &QualtricsConfig,
        secret: &str,
        http: reqwest::Client,
    ) -> Result<Self, crate::Error> {
        let credentials = Credentials::new(config.auth, config.oauth_scope.as_deref(), secret)?;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(config.backoff_base_ms))
            .with_max_delay(Duration::from_millis(config.backoff_max_ms))
            .with_max_times(config.max_retries)
            .with_jitter();
        Ok(Self {
            http,
            timeout: Duration::from_millis(config.timeout_ms),
            base_url: config.base_url(),
            credentials,
            limiters: HashMap::new(),
            budgets: config.rate_limits.clone(),
            backoff,
            max_backoff: Duration::from_millis(config.backoff_max_ms),
        }
        .with_limiters())
    }

    /// Reads secret `secret_id` from `store` again when Qualtrics refuses the credentials
    /// (401 or 403), at most once a minute, and sends the refused request again if the
    /// secret changed: a rotated secret reaches a warm Lambda without a redeploy.
    pub fn rereading(mut self, store: Arc<dyn SecretStore>, secret_id: impl Into<String>) -> Self {
        self.credentials.reread_from(store, secret_id.into());
        self
    }

    fn with_limiters(mut self) -> Self {
        use super::endpoint::*;
        let names = [
            CREATE_MAILING_LIST,
            IMPORT_TRANSACTION_CONTACTS,
            TRANSACTION_CONTACTS_STATUS,
            CREATE_DISTRIBUTION,
            IMPORT_RESPONSES,
            IMPORT_RESPONSES_PROGRESS,
            EXPORT_RESPONSES,
            EXPORT_RESPONSES_PROGRESS,
            EXPORT_RESPONSES_FILE,
            DEFAULT,
        ];
        for name in names {
            let budget = self.budget(name);
            let per_minute = NonZeroU32::new(budget).unwrap_or(NonZeroU32::MIN);
            self.limiters.insert(
                name.to_owned(),
                Arc::new(RateLimiter::direct(Quota::per_minute(per_minute))),
            );
        }
        self
    }

    /// The per-minute budget of an endpoint: configured, else documented, else `default`.
    pub fn budget(&self, endpoint: &str) -> u32 {
        if let Some(budget) = self.budgets.get(endpoint) {
            return *budget;
        }
        if !KNOWN.contains(&endpoint)
            && let Some(budget) = self.budgets.get(super::endpoint::DEFAULT)
        {
            return *budget;
        }
        default_budget(endpoint)
    }

    fn limiter(&self, endpoint: &str) -> &DefaultDirectRateLimiter {
        self.limiters
            .get(endpoint)
            .or_else(|| self.limiters.get(super::endpoint::DEFAULT))
            .expect("the default limiter is always built")
    }

    fn origin(&self) -> &str {
        self.base_url
            .trim_end_matches('/')
            .trim_end_matches("/API/v3")
    }

    /// The OAuth access token of `auth`, fetched if none is cached; `None` with a token.
    async fn bearer(&self, auth: &Arc<Auth>) -> Result<Option<String>, Failed> {
        let Auth::OAuth {
            client_id,
            client_secret,
            scope,
            cached,
        } = &**auth
        else {
            return Ok(None);
        };
        let mut cached = cached.lock().await;
        if let Some((token, expires)) = &*cached
            && Instant::now() < *expires
        {
            return Ok(Some(token.clone()));
        }
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let response = self
            .http
            .post(format!("{}/oauth2/token", self.origin()))
            .timeout(self.timeout)
            .basic_auth(client_id, Some(client_secret))
            .form(&form)
            .send()
            .await
            .map_err(|e| Failed::unapplied(transport_error(e)))?;
        let status = response.status().as_u16();
        let body = (response.bytes().await).map_err(|e| Failed::unapplied(transport_error(e)))?;
        // Asking for a token changes nothing, so it may be asked again, unless the client's
        // own credentials were refused.
        if !(200..300).contains(&status) {
            let error = status_error(status, "OAuth token request failed".to_owned());
            let refused = matches!(status, 401 | 403);
            return Err(if refused && !self.new_secret(auth).await {
                Failed::left_to_sqs(error)
            } else {
                Failed::unapplied(error)
            });
        }
        let token: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            Failed::unapplied(StepError::permanent(format!(
                "unexpected OAuth token response: {e}"
            )))
        })?;
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(3600).saturating_sub(60));
        *cached = Some((token.access_token.clone(), Instant::now() + lifetime));
        Ok(Some(token.access_token))
    }

    async fn forget_token(&self, auth: &Auth) {
        if let Auth::OAuth { cached, .. } = auth {
            *cached.lock().await = None;
        }
    }

    /// After `auth` was refused: whether other credentials are in use now, swapped in by
    /// another request's refusal or read again here (see `auth`).
    async fn new_secret(&self, auth: &Arc<Auth>) -> bool {
        self.credentials.reread(auth).await
    }

    /// Sends one attempt of `request` with `auth`; the answer, whatever its status.
    async fn respond(
        &self,
        request: &ApiRequest,
        auth: &Arc<Auth>,
    ) -> Result<reqwest::Response, Failed> {
        self.limiter(request.endpoint).until_ready().await;
        let url = format!("{}{}", self.base_url, request.path.trim_start_matches('/'));
        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut builder = self
            .http
            .request(method, &url)
            .timeout(self.timeout)
            .query(&request.query);
        let bearer = self.bearer(auth).await?;
        builder = match (&**auth, bearer) {
            (_, Some(bearer)) => builder.bearer_auth(bearer),
            (Auth::Token(token), None) => builder.header("X-API-TOKEN", token),
            (Auth::OAuth { .. }, None) => builder,
        };
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        builder = match &request.body {
            Body::Empty => builder,
            Body::Json(value) => builder.json(value),
            Body::Text { content_type, text } => builder
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(text.clone()),
        };
        builder.send().await.map_err(|e| {
            let unapplied = e.is_connect();
            let error = transport_error(e);
            if unapplied {
                Failed::unapplied(error)
            } else {
                Failed::after_sending(request, error)
            }
        })
    }

    async fn attempt(&self, request: &ApiRequest) -> Result<ApiResponse, Failed> {
        let auth = self.credentials.current();
        let response = self.respond(request, &auth).await?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(self.failure(request, response, &auth).await);
        }
        let body = (response.bytes().await)
            .map_err(|e| Failed::after_sending(request, transport_error(e)))?;
        let request_id = parse_meta(&body).request_id;
        log_call(request, status, request_id.as_deref());
        Ok(ApiResponse {
            status,
            request_id,
            body,
        })
    }

    /// One attempt of a download: a successful answer whose body is still to be read.
    async fn attempt_download(&self, request: &ApiRequest) -> Result<reqwest::Response, Failed> {
        let auth = self.credentials.current();
        let response = self.respond(request, &auth).await?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(self.failure(request, response, &auth).await);
        }
        // A file carries no `meta`, so no requestId to log.
        log_call(request, status, None);
        Ok(response)
    }

    /// The error for an answer outside 2xx to a request sent with `auth`, from its
    /// Qualtrics error envelope.
    async fn failure(
        &self,
        request: &ApiRequest,
        response: reqwest::Response,
        auth: &Arc<Auth>,
    ) -> Failed {
        let status = response.status().as_u16();
        if response.status().is_redirection() {
            let location = response.headers().get(reqwest::header::LOCATION);
            log_call(request, status, None);
            return Failed::left_to_sqs(StepError::from_status(
                status,
                format!(
                    "{} {} answered a redirect to {:?}, which is not followed (it would send the \
                     API token to another host); check [qualtrics] datacenter or base_url",
                    request.method.as_str(),
                    request.path,
                    location.and_then(|l| l.to_str().ok()).unwrap_or("nowhere"),
                ),
            ));
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => return Failed::after_sending(request, transport_error(e)),
        };
        let meta = parse_meta(&body);
        let request_id = meta.request_id.clone();
        log_call(request, status, request_id.as_deref());
        // A new OAuth token may be accepted where the cached one was refused; refused
        // credentials stay refused until their secret is fixed, so it is read again.
        let new_token = status == 401 && self.credentials.is_oauth();
        if new_token {
            self.forget_token(auth).await;
        }
        let new_secret = matches!(status, 401 | 403) && !new_token && self.new_secret(auth).await;
        let detail = meta.error.unwrap_or_default();
        let message = format!(
            "{} {}: {} {} (requestId {})",
            request.method.as_str(),
            request.path,
            detail.error_code.unwrap_or_default(),
            detail
                .error_message
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect()),
            request_id.as_deref().unwrap_or("unknown"),
        );
        let mut error = status_error(status, message);
        if let Some(wait) = retry_after {
            error = error.with_retry_after(wait);
        }
        match status {
            // Refused before it was applied.
            429 => Failed::unapplied(error),
            401 | 403 if new_token || new_secret => Failed::unapplied(error),
            401 | 403 => Failed::left_to_sqs(error),
            _ => Failed::after_sending(request, error),
        }
    }

    /// Retries `attempt` with backoff and jitter while it fails in a way it may be sent again
    /// ([`Failed::again`]), honouring `Retry-After` unless it asks for more than the longest
    /// backoff.
    async fn retried<T, F, Fut>(&self, attempt: F) -> Result<T, StepError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failed>>,
    {
        let max_backoff = self.max_backoff;
        attempt
            .retry(self.backoff)
            .when(|failed| failed.again)
            .adjust(move |failed, delay| {
                let delay = delay?;
                match failed.error.retry_after() {
                    Some(wait) if wait > max_backoff => None,
                    Some(wait) => Some(wait.max(delay)),
                    None => Some(delay),
                }
            })
            .notify(|failed, delay| {
                tracing::warn!(error = %failed.error.chain(), ?delay, "qualtrics call will be retried");
            })
            .await
            .map_err(|failed| failed.error)
    }
}

fn log_call(request: &ApiRequest, status: u16, request_id: Option<&str>) {
    tracing::info!(
        endpoint = request.endpoint,
        method = request.method.as_str(),
        path = %request.path,
        status,
        request_id = request_id.unwrap_or(""),
        "qualtrics call"
    );
}

/// An attempt's error, and whether the client may send the request again itself.
struct Failed {
    error: StepError,
    again: bool,
}

impl Failed {
    /// Refused or never sent, so nothing was applied: sent again if retryable.
    fn unapplied(error: StepError) -> Self {
        let again = error.is_retryable();
        Self { error, again }
    }

    /// Failed once the request was sent, so it may have taken effect: sent again only if
    /// retryable and [`ApiRequest::replayable`].
    fn after_sending(request: &ApiRequest, error: StepError) -> Self {
        let again = error.is_retryable() && request.replayable();
        Self { error, again }
    }

    /// Not sent again by the client, whatever its class: SQS decides.
    fn left_to_sqs(error: StepError) -> Self {
        Self {
            error,
            again: false,
        }
    }
}

/// The error of a Qualtrics answer with a status outside 2xx: [`StepError::from_status`],
/// but a 401 or 403 is retryable (see the module doc), with what to fix.
pub fn status_error(status: u16, message: String) -> StepError {
    match status {
        401 | 403 => StepError::retryable(format!(
            "HTTP {status}: {message} (the Qualtrics credentials were refused: check the secret \
             named by [qualtrics] secret_id and the token's permissions, then redrive the \
             dead-letter queue)"
        ))
        .with_status(status),
        _ => StepError::from_status(status, message),
    }
}

const KNOWN: &[&str] = &[
    super::endpoint::CREATE_MAILING_LIST,
    super::endpoint::IMPORT_TRANSACTION_CONTACTS,
    super::endpoint::TRANSACTION_CONTACTS_STATUS,
    super::endpoint::CREATE_DISTRIBUTION,
    super::endpoint::IMPORT_RESPONSES,
    super::endpoint::IMPORT_RESPONSES_PROGRESS,
    super::endpoint::EXPORT_RESPONSES,
    super::endpoint::EXPORT_RESPONSES_PROGRESS,
    super::endpoint::EXPORT_RESPONSES_FILE,
];

fn transport_error(e: reqwest::Error) -> StepError {
    if e.is_timeout() {
        StepError::timeout(e.to_string()).with_source(e)
    } else if e.is_decode() || e.is_builder() {
        StepError::permanent(e.to_string()).with_source(e)
    } else if crate::aws::trust::is_untrusted_issuer(&e) {
        let hint = crate::aws::trust::UNTRUSTED_CERTIFICATE;
        StepError::retryable(format!("transport error: {e}: {hint}")).with_source(e)
    } else {
        StepError::retryable(format!("transport error: {e}")).with_source(e)
    }
}

/// Parses `Retry-After`: delay seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[async_trait]
impl QualtricsApi for Client {
    async fn send(&self, request: ApiRequest) -> Result<ApiResponse, StepError> {
        self.retried(|| self.attempt(&request)).await
    }

    async fn download(&self, request: ApiRequest) -> Result<ObjectReader, StepError> {
        let response = self.retried(|| self.attempt_download(&request)).await?;
        let chunks = futures_util::stream::try_unfold(response, |mut response| async move {
            let chunk = response.chunk().await.map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>(chunk.map(|chunk| (chunk, response)))
        });
        Ok(Box::pin(tokio_util::io::StreamReader::new(Box::pin(
            chunks,
        ))))
    }
}
