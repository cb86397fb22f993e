//! The client's hooks of the `export` step (seeded by etlgen, then the client's).
use etlgen_runtime::Envelope;
use etlgen_runtime::kinds::exporter::{Destination, Hooks, Settings};

#[derive(Debug, Default, Clone)]
pub struct ClientHooks;

impl Hooks for ClientHooks {
    /// Acme collects exports from its own bucket, one file per day.
    fn destination(
        &self,
        input: &Envelope<etlgen_runtime::serde_json::Value>,
        _: &Settings,
        _: &str,
    ) -> Destination {
        Destination::S3 {
            bucket: "acme-inbox".into(),
            key: format!("nps/{}.zip", input.logical_date),
        }
    }
}
