//! The client's hooks of the `import-contacts` step (seeded by etlgen, then the client's).
use etlgen_runtime::StepError;
use etlgen_runtime::kinds::Record;
use etlgen_runtime::kinds::contacts::{self, Contact, Hooks, Settings};

#[derive(Debug, Default, Clone)]
pub struct ClientHooks;

impl Hooks for ClientHooks {
    /// The default mapping, plus Acme's segment derived from the e-mail domain.
    fn map(&self, record: &Record, settings: &Settings) -> Result<Contact, StepError> {
        let mut contact = contacts::map(record, settings)?;
        let domain = contact
            .email
            .as_deref()
            .and_then(|e| e.split('@').nth(1))
            .unwrap_or("unknown");
        contact
            .embedded_data
            .insert("segment".into(), domain.into());
        Ok(contact)
    }
}
