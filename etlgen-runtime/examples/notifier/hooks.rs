//! The client's hooks of the `notify` step (seeded by etlgen, then the client's).
use etlgen_runtime::Envelope;
use etlgen_runtime::kinds::notifier::{self, Hooks, Notification, Settings};

#[derive(Debug, Default, Clone)]
pub struct ClientHooks;

impl Hooks for ClientHooks {
    /// Acme only wants to hear about failures.
    fn render(
        &self,
        input: &Envelope<etlgen_runtime::serde_json::Value>,
        settings: &Settings,
    ) -> Option<Notification> {
        let failed = input.payload["status"] == "failed";
        failed.then(|| notifier::render(input, settings)).flatten()
    }
}
