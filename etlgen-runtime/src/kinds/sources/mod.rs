//! The three ways data enters a pipeline.
//!
//! - [`s3`]: a file dropped in the client's bucket; S3 event notifications go to the
//!   validator's queue, so this module only parses them.
//! - [`http`]: an HTTP POST to API Gateway, integrated straight into the validator's queue;
//!   this module parses the forwarded body.
//! - [`sftp`]: the `sftp-poller` step, run on a schedule, which copies new files from the
//!   client's SFTP server into the landing prefix, where S3 takes over.
//!
//! Only the poller is a Lambda of its own, so this module re-exports its `KIND`, `HOOKS`,
//! `Hooks` and step type.

pub mod http;
pub mod s3;
pub mod sftp;

pub use sftp::{HOOKS, Hooks, KIND, Settings, SftpPoller};
