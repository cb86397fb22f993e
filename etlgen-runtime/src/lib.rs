//! The runtime library every etlgen-generated Lambda step is built on.
//!
//! A generated client repository vendors this crate unchanged; each Lambda in it is a thin
//! `main.rs` that names one step kind and a `hooks.rs` where the client's custom code lives.
//! Everything a step needs to be safe to retry lives here, in one place:
//!
//! - [`envelope`]: the versioned message every step reads and writes, with a deterministic
//!   idempotency key;
//! - [`error`]: errors classified as retryable or permanent;
//! - [`config`]: layered configuration (defaults, environment file, environment variables);
//! - [`step`] and [`runner`]: the step abstraction and the code that drives it per message;
//! - [`sqs`] and [`lambda`]: the partial-batch SQS adapter and the Lambda entry point;
//! - [`ports`], [`aws`] and [`qualtrics`]: the external systems, behind small traits, with the
//!   real implementations;
//! - [`kinds`]: one module per catalog step kind, each with a `Hooks` trait;
//! - [`testing`]: in-memory fakes of every port and a harness for client tests.
//!
//! See `README.md` ("Generated crate contract") for the exact shape of a generated crate.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod aws;
pub mod config;
pub mod envelope;
pub mod error;
pub mod kinds;
pub mod lambda;
#[cfg(feature = "local")]
pub mod local;
pub mod ports;
pub mod qualtrics;
pub mod runner;
#[cfg(feature = "sftp")]
pub mod sftp;
pub mod sqs;
pub mod step;
pub mod testing;
pub mod zones;

/// The error type of fallible entry points (`main`, initialisation): any boxed error.
///
/// Step code reports [`error::StepError`] instead, which carries the retry classification.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;

pub use envelope::{Envelope, IdempotencyKey, LogicalDate, RunId};

pub use error::StepError;
/// Re-exported so hooks and tests need no dependency of their own for JSON values.
pub use serde_json;
/// Re-exported so hooks that compute times (send dates) use the same crate.
pub use time;
