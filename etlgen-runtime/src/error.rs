//! Errors a step can return, classified by what the pipeline should do about them.
//!
//! The classification is the whole point: a retryable error (a 429, a 5xx, a timeout) fails
//! the message so SQS redelivers it after the visibility timeout; a permanent error (bad data)
//! is written to the rejected-records report and the message is acknowledged, so a bad record
//! never loops until the dead-letter queue and never blocks its batch.

use std::time::Duration;

/// Whether trying again can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: throttling, server errors, timeouts, unavailable dependencies.
    Retryable,
    /// The input or the request is wrong; the same attempt will fail the same way.
    Permanent,
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Retryable => "retryable",
            Self::Permanent => "permanent",
        })
    }
}

/// The error of one step attempt for one message.
#[derive(Debug, thiserror::Error)]
#[error("{class} error: {message}")]
pub struct StepError {
    class: ErrorClass,
    message: String,
    retry_after: Option<Duration>,
    status: Option<u16>,
    #[source]
    source: Option<crate::Error>,
}

impl StepError {
    /// A transient failure: the message is retried.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Retryable, message)
    }

    /// A failure caused by the data or the request: the record is rejected, not retried.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Permanent, message)
    }

    /// A timeout, which is always retryable.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::retryable(format!("timed out: {}", message.into()))
    }

    /// Classifies an HTTP status: 408, 429 and 5xx are retryable, anything else permanent.
    pub fn from_status(status: u16, message: impl Into<String>) -> Self {
        let message = format!("HTTP {status}: {}", message.into());
        let error = if is_retryable_status(status) {
            Self::retryable(message)
        } else {
            Self::permanent(message)
        };
        error.with_status(status)
    }

    fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            retry_after: None,
            status: None,
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl Into<crate::Error>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Records how long the server asked us to wait (`Retry-After`).
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// Records the HTTP status of the answer the error comes from.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// The HTTP status of the answer the error comes from: `None` when no answer came (a
    /// timeout, a dropped connection), so the request may still be running on the server.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The classification.
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// True for [`ErrorClass::Retryable`].
    pub fn is_retryable(&self) -> bool {
        self.class == ErrorClass::Retryable
    }

    /// The message, without the class prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The server's requested wait, when it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The error and each error that caused it, for a log line: see [`chain`].
    pub fn chain(&self) -> impl std::fmt::Display + '_ {
        chain(self)
    }
}

/// `error` and each error that caused it, `: `-separated, for a log line. A failure on the
/// wire says why only in its causes (an AWS SDK error's message is "dispatch failure"; the
/// refused certificate or reset connection is further down). A cause whose text the line
/// already holds is left out, which anyhow's `{:#}` does not do (and the runtime has no
/// other use for anyhow): the Qualtrics client's messages repeat reqwest's.
pub fn chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> impl std::fmt::Display + 'a {
    Chain(error)
}

struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut line = self.0.to_string();
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            next = cause.source();
        }
        f.write_str(&line)
    }
}

/// True for the statuses worth retrying: 408 (timeout), 429 (throttled) and every 5xx.
pub fn is_retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

/// A malformed envelope is permanent. One from a newer runtime is retryable: it is not bad
/// data but a deploy still under way (its producer updated before this consumer), and
/// acknowledging it would lose a batch the fan-in waits for. Retried, it reaches the
/// dead-letter queue, to be redriven once this step runs the newer runtime.
impl From<crate::envelope::EnvelopeError> for StepError {
    fn from(err: crate::envelope::EnvelopeError) -> Self {
        let error = match &err {
            crate::envelope::EnvelopeError::UnsupportedVersion { .. } => {
                Self::retryable(err.to_string())
            }
            _ => Self::permanent(err.to_string()),
        };
        error.with_source(err)
    }
}

impl From<serde_json::Error> for StepError {
    fn from(err: serde_json::Error) -> Self {
        Self::permanent(format!("invalid JSON: {err}")).with_source(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        for status in [408, 429, 500, 502, 503, 504, 599] {
            assert!(
                StepError::from_status(status, "x").is_retryable(),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 409, 422, 600] {
            assert!(
                !StepError::from_status(status, "x").is_retryable(),
                "{status}"
            );
        }
    }

    #[test]
    fn constructors_and_accessors() {
        let e = StepError::timeout("GET /x").with_retry_after(Duration::from_secs(3));
        assert_eq!(e.class(), ErrorClass::Retryable);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(e.to_string(), "retryable error: timed out: GET /x");
        let p = StepError::permanent("bad email").with_source(std::io::Error::other("io"));
        assert_eq!(p.class(), ErrorClass::Permanent);
        assert_eq!(p.message(), "bad email");
        assert!(std::error::Error::source(&p).is_some());
    }

    #[test]
    fn the_chain_shows_every_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("dispatch failure")]
        struct Dispatch(#[source] std::io::Error);
        let e = StepError::retryable("GetObject s3://b/k").with_source(Dispatch(
            std::io::Error::other("invalid peer certificate: UnknownIssuer"),
        ));
        assert_eq!(
            e.chain().to_string(),
            "retryable error: GetObject s3://b/k: dispatch failure: invalid peer certificate: \
             UnknownIssuer"
        );
        let json = serde_json::from_str::<u8>("x").unwrap_err();
        let e = StepError::from(json);
        assert_eq!(
            e.chain().to_string(),
            e.to_string(),
            "the cause is in the message"
        );
    }

    #[test]
    fn malformed_envelopes_are_permanent() {
        let err = crate::Envelope::<u8>::from_json("nope").unwrap_err();
        assert!(!StepError::from(err).is_retryable());
    }
}
