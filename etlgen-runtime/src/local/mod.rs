//! The local stack: what `cargo xtask local` runs so a generated pipeline moves real
//! messages on a laptop or in CI, without AWS and without Qualtrics.
//!
//! - [`qualtrics`]: a mock Qualtrics API v3 that records every effect, deduplicates by
//!   `Idempotency-Key` and misbehaves on request (429 with `Retry-After`, 500, slow and
//!   malformed responses).
//! - [`lambda`]: a Lambda emulator. It reads the event source mappings Terraform created,
//!   long-polls their queues and invokes each step's real `bootstrap` binary through the
//!   Lambda Runtime API, as Lambda does.
//!
//! Only the workspace's `xtask` crate enables the `local` feature; the Lambdas never do.

pub mod lambda;
pub mod qualtrics;

// The clients the xtask's local and on-call commands use, re-exported so they stay at the
// framework's versions.
pub use aws_config;
pub use aws_sdk_s3;
pub use aws_sdk_secretsmanager;
pub use aws_sdk_sqs;
pub use axum;
pub use reqwest;
