//! `POST /oauth2/token`: OAuth client credentials, outside `/API/v3/` and never faulted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::fields::{new_request_id, parse_query};
use super::files::base64;
use super::{Shared, header};

/// The lifetime of a token, in seconds.
const TOKEN_LIFETIME: u64 = 3600;

/// `POST /oauth2/token`: client credentials with HTTP Basic. Never faulted.
pub(super) async fn oauth_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let config = &shared.config;
    let credentials = format!("{}:{}", config.oauth_client_id, config.oauth_client_secret);
    let expected = base64(credentials.as_bytes());
    let authorized = header(&headers, "authorization")
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, value)| {
            scheme.eq_ignore_ascii_case("basic") && value.trim() == expected
        });
    let oauth_error = |status: StatusCode, error: &str, description: &str| {
        tracing::info!(
            status = status.as_u16(),
            error,
            "mock qualtrics OAuth token refused"
        );
        let body = json!({ "error": error, "error_description": description });
        (status, Json(body)).into_response()
    };
    if !authorized {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "HTTP Basic client_id:client_secret do not match",
        );
    }
    let form = parse_query(std::str::from_utf8(&body).ok());
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if field("grant_type").as_deref() != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    let token = {
        let mut inner = shared.lock();
        let token = new_request_id(&mut inner.ids);
        let expires = Instant::now() + Duration::from_secs(TOKEN_LIFETIME);
        inner.tokens.insert(token.clone(), expires);
        inner.stats.oauth_tokens += 1;
        token
    };
    tracing::info!("mock qualtrics OAuth token issued");
    let mut result = json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME,
    });
    if let Some(scope) = field("scope") {
        result["scope"] = json!(scope);
    }
    Json(result).into_response()
}
