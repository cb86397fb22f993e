//! The client's hooks of the `poll-sftp` step (seeded by etlgen, then the client's).
use etlgen_runtime::kinds::sources::sftp::{self, Hooks, Settings};
use etlgen_runtime::ports::RemoteFile;

#[derive(Debug, Default, Clone)]
pub struct ClientHooks;

impl Hooks for ClientHooks {
    /// Acme's server writes `tmp_` files while uploading; skip them.
    fn select(&self, file: &RemoteFile, settings: &Settings) -> bool {
        !file
            .path
            .rsplit('/')
            .next()
            .unwrap_or("")
            .starts_with("tmp_")
            && sftp::select(file, settings)
    }
}
