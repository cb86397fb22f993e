//! The client's hooks of the `invite` step (seeded by etlgen, then the client's).
use etlgen_runtime::LogicalDate;
use etlgen_runtime::kinds::distribution::{self, Hooks, Settings};

#[derive(Debug, Default, Clone)]
pub struct ClientHooks;

impl Hooks for ClientHooks {
    /// Acme sends on the day after the logical date, at the configured hour.
    fn send_time(
        &self,
        date: LogicalDate,
        settings: &Settings,
    ) -> etlgen_runtime::time::OffsetDateTime {
        distribution::send_time(date, settings) + etlgen_runtime::time::Duration::days(1)
    }
}
