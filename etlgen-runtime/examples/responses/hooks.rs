//! The client's hooks of the `import-responses` step (seeded by etlgen, then the client's).
use etlgen_runtime::StepError;
use etlgen_runtime::kinds::Record;
use etlgen_runtime::kinds::responses::Hooks;

#[derive(Debug, Default, Clone)]
pub struct ClientHooks;

impl Hooks for ClientHooks {
    /// Acme's files call the NPS answer `score`; the survey's question is `Q1`.
    fn map(&self, mut record: Record) -> Result<Record, StepError> {
        let score = record
            .remove("score")
            .ok_or_else(|| StepError::permanent("no score"))?;
        record.insert("Q1".into(), score);
        Ok(record)
    }
}
