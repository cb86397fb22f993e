//! The client's hooks of the `validate` step (seeded by etlgen, then the client's).
use etlgen_runtime::kinds::Record;
use etlgen_runtime::kinds::validator::{self, Hooks, Settings};

#[derive(Debug, Default, Clone)]
pub struct ClientHooks;

impl Hooks for ClientHooks {
    /// The declared schema first, then Acme's own rule: no internal addresses.
    fn validate_row(&self, row: &mut Record, settings: &Settings) -> Result<(), String> {
        validator::validate_row(row, settings)?;
        match row.get("email").and_then(|e| e.as_str()) {
            Some(email) if email.ends_with("@acme.example") => Err("internal address".into()),
            _ => Ok(()),
        }
    }
}
