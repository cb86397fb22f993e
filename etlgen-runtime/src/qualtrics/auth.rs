//! The Qualtrics client's credentials: an API token, or OAuth client credentials, from a
//! secret read at cold start, and read again when Qualtrics refuses them.
//!
//! A warm Lambda lives for hours, so a secret rotated in Secrets Manager would otherwise
//! reach it only at its next cold start: every message until then would be refused, and a
//! redrive of the dead-letter queue refused again. Reading the secret again on a refusal
//! lets the fixed secret reach warm instances without a redeploy.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::AuthMethod;
use crate::ports::SecretStore;

/// The least time between two reads of a refused secret: a secret that stays wrong costs a
/// read a minute, not one per message.
pub const REREAD_EVERY: Duration = Duration::from_secs(60);

/// One set of credentials.
pub(super) enum Auth {
    Token(String),
    OAuth {
        client_id: String,
        client_secret: String,
        scope: Option<String>,
        /// The access token and when to stop using it.
        cached: Mutex<Option<(String, Instant)>>,
    },
}

#[derive(Deserialize)]
struct ClientCredentials {
    client_id: String,
    client_secret: String,
}

/// Reads an API token from a secret: the raw token, or JSON with `api_token` or `token`.
pub fn token_from_secret(secret: &str) -> String {
    #[derive(Deserialize)]
    struct Wrapped {
        #[serde(alias = "token", alias = "apiToken", alias = "X-API-TOKEN")]
        api_token: String,
    }
    serde_json::from_str::<Wrapped>(secret)
        .map(|w| w.api_token)
        .unwrap_or_else(|_| secret.trim().to_owned())
}

impl Auth {
    fn from_secret(method: AuthMethod, scope: Option<&str>, secret: &str) -> Result<Self, String> {
        Ok(match method {
            AuthMethod::Token => Self::Token(token_from_secret(secret)),
            AuthMethod::OAuth => {
                let creds: ClientCredentials = serde_json::from_str(secret).map_err(|e| {
                    format!("the OAuth secret must be JSON with client_id and client_secret: {e}")
                })?;
                Self::OAuth {
                    client_id: creds.client_id,
                    client_secret: creds.client_secret,
                    scope: scope.map(str::to_owned),
                    cached: Mutex::new(None),
                }
            }
        })
    }

    fn same_secret(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Token(a), Self::Token(b)) => a == b,
            (
                Self::OAuth {
                    client_id: a,
                    client_secret: sa,
                    ..
                },
                Self::OAuth {
                    client_id: b,
                    client_secret: sb,
                    ..
                },
            ) => a == b && sa == sb,
            _ => false,
        }
    }
}

/// The credentials in use, and where to read them again.
pub(super) struct Credentials {
    current: RwLock<Arc<Auth>>,
    method: AuthMethod,
    scope: Option<String>,
    source: Option<(Arc<dyn SecretStore>, String)>,
    last_read: Mutex<Option<Instant>>,
}

impl Credentials {
    pub(super) fn new(
        method: AuthMethod,
        scope: Option<&str>,
        secret: &str,
    ) -> Result<Self, String> {
        Ok(Self {
            current: RwLock::new(Arc::new(Auth::from_secret(method, scope, secret)?)),
            method,
            scope: scope.map(str::to_owned),
            source: None,
            last_read: Mutex::new(None),
        })
    }

    /// Reads secret `id` from `store` again when the credentials are refused.
    pub(super) fn reread_from(&mut self, store: Arc<dyn SecretStore>, id: String) {
        self.source = Some((store, id));
    }

    /// The credentials to send.
    pub(super) fn current(&self) -> Arc<Auth> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&current)
    }

    /// Whether these are OAuth client credentials.
    pub(super) fn is_oauth(&self) -> bool {
        self.method == AuthMethod::OAuth
    }

    /// After Qualtrics refused `refused`: true if other credentials are in use now, so the
    /// refused request may be sent again. Another refusal may have put them in use already;
    /// otherwise the secret is read again, at most once per [`REREAD_EVERY`], and put in
    /// use if it differs.
    pub(super) async fn reread(&self, refused: &Arc<Auth>) -> bool {
        let Some((store, id)) = &self.source else {
            return false;
        };
        let mut last_read = self.last_read.lock().await;
        // Checked under the lock, so a refusal that waited for another's read sees its result.
        if !Arc::ptr_eq(refused, &self.current()) {
            return true;
        }
        if last_read.is_some_and(|at| at.elapsed() < REREAD_EVERY) {
            return false;
        }
        *last_read = Some(Instant::now());
        let secret = match store.secret(id).await {
            Ok(secret) => secret,
            Err(error) => {
                tracing::warn!(%error, secret = %id, "could not read the refused Qualtrics secret again");
                return false;
            }
        };
        let fresh = match Auth::from_secret(self.method, self.scope.as_deref(), &secret) {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::warn!(%error, secret = %id, "the Qualtrics secret read again is unusable");
                return false;
            }
        };
        if fresh.same_secret(&self.current()) {
            tracing::warn!(secret = %id, "the Qualtrics secret read again is the one refused");
            return false;
        }
        tracing::info!(secret = %id, "the Qualtrics secret changed: using its new value");
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        true
    }
}
