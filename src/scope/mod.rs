//! The scoping document of a pipeline, for `etlgen plan`.
//!
//! A solution architect scoping a client needs to see, before any code
//! exists, what a set of answers amounts to: the steps and their queues, what
//! the framework already does and which hook points are client work, the AWS
//! resources each environment gets, and how many Qualtrics calls a run makes
//! against the documented rate limits. [`Scope::new`] derives all of it from
//! resolved [`Answers`], purely, into one serializable struct that is both
//! the JSON output and the input of the Markdown renderer. (Not to be
//! confused with [`crate::plan`], which plans the files of a render.)

mod diagram;
mod hooks;
pub mod markdown;
mod qualtrics;
mod resources;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::answers::{Answers, AnswersFile, Step};
use crate::catalog::{Catalog, Stage, StepKind, StepSettings};
use crate::plan::ETLGEN_VERSION;

pub use hooks::Hook;
pub use qualtrics::{ApiCall, Assumptions, CallsPer, EndpointLoad, QualtricsLoad};
pub use resources::{Module, Resource, Resources};

/// Why a scoping document could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    /// The answers file could not be read. (The cause, which names the
    /// path, follows in the error chain.)
    #[error("cannot read the answers file")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The answers file is not valid TOML in the answers format.
    #[error(
        "invalid answers file {path}; its keys are those of .etlgen/answers.toml (see docs/answers.md): {message}"
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with the line and column.
        message: String,
    },
    /// A bug in etlgen: the framework's source lacks a hook's documentation,
    /// or the pipeline document could not be rendered.
    #[error("etlgen cannot describe this pipeline (a bug in etlgen): {0}")]
    Internal(String),
}

/// Everything `etlgen plan` reports about one pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct Scope {
    /// The etlgen that made the document.
    pub etlgen_version: String,
    /// Client name.
    pub client: String,
    /// Where the input comes from.
    pub source: SourceInfo,
    /// AWS region.
    pub region: String,
    /// Qualtrics datacenter id.
    pub datacenter: String,
    /// `https://<datacenter>.qualtrics.com/API/v3/`.
    pub qualtrics_base_url: String,
    /// Deployment environments (each gets [`Scope::resources`]; so does the
    /// emulator environment `local`).
    pub environments: Vec<String>,
    /// The steps, in pipeline order.
    pub steps: Vec<ScopeStep>,
    /// Client-specific values outside the steps (`[sftp]`) and the secrets
    /// to set out of band.
    pub client_values: Vec<String>,
    /// Secrets Manager entries whose values are set out of band, `<env>` for
    /// the environment.
    pub secrets: Vec<String>,
    /// The AWS resources of one environment.
    pub resources: Resources,
    /// The Qualtrics API calls of one run.
    pub qualtrics: QualtricsLoad,
    /// The pipeline as a Mermaid flowchart (the generated `docs/pipeline.md`'s).
    pub mermaid: String,
}

/// The source of a pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    /// `s3`, `sftp` or `http`.
    pub id: String,
    /// What it does.
    pub description: String,
    /// The EventBridge schedule (UTC), for a polling source.
    pub schedule: Option<String>,
}

/// One step of the pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct ScopeStep {
    /// Step name.
    pub name: String,
    /// Catalog kind.
    pub kind: String,
    /// Pipeline stage.
    pub stage: Stage,
    /// What the framework does for this step with no client code.
    pub description: String,
    /// The earlier steps whose output this step reads.
    pub reads_from: Vec<String>,
    /// How input reaches a step no other step feeds: `landing-bucket`,
    /// `api-gateway` or `schedule`.
    pub entry: Option<String>,
    /// The later steps that read this step's output.
    pub feeds: Vec<String>,
    /// Its queue and dead-letter queue.
    pub queue: QueueInfo,
    /// Its Lambda function, `<client>-<env>-<step>`.
    pub function: String,
    /// Queue, trigger and function settings, after the answers' overrides.
    pub settings: StepSettings,
    /// Whether it calls the Qualtrics API.
    pub calls_qualtrics: bool,
    /// The hook points a client may override in `lambdas/<step>/src/hooks.rs`.
    pub hooks: Vec<Hook>,
    /// `steps.<step>.<key>` values that still hold a `REPLACE_ME` placeholder.
    pub client_values: Vec<String>,
}

/// A step's queues, named as `infra/modules/step` names them.
#[derive(Debug, Clone, Serialize)]
pub struct QueueInfo {
    /// `<client>-<env>-<step>`, with `.fifo` for a FIFO queue.
    pub name: String,
    /// `<client>-<env>-<step>-dlq`, with `.fifo` for a FIFO queue.
    pub dlq: String,
    /// Whether both are FIFO queues with one message group.
    pub fifo: bool,
    /// Six times the timeout plus the batching window, at most 12 hours.
    pub visibility_timeout_seconds: u32,
}

/// The placeholder environment in resource names (in the personal `dev`,
/// `dev-<workspace>`).
pub const ENV: &str = "<env>";

/// The marker of a client-specific value nobody has filled in yet.
const PLACEHOLDER: &str = "REPLACE_ME";

/// SQS's limit on a visibility timeout (12 hours).
const MAX_VISIBILITY_TIMEOUT: u32 = 43_200;

impl Scope {
    /// Describes the pipeline `answers` make, assuming `records` records per
    /// run for the Qualtrics call counts.
    pub fn new(answers: &Answers, catalog: &Catalog, records: u64) -> Result<Scope, ScopeError> {
        let prefix = format!("{}-{ENV}", answers.client);
        let steps = answers
            .steps
            .iter()
            .map(|step| scope_step(step, answers, catalog, &prefix))
            .collect::<Result<Vec<_>, _>>()?;
        let uses_sftp = answers.steps.iter().any(|s| uses_sftp(s, catalog));
        let mut client_values = Vec::new();
        if uses_sftp {
            client_values
                .extend(["sftp.host", "sftp.user", "sftp.host_key_sha256"].map(String::from));
        }
        let mut secrets = Vec::new();
        if steps.iter().any(|s| s.calls_qualtrics) {
            secrets.push(format!("{}/{ENV}/qualtrics", answers.client));
        }
        if uses_sftp {
            secrets.push(format!("{}/{ENV}/sftp", answers.client));
        }
        let source = catalog
            .source(&answers.source)
            .ok_or_else(|| ScopeError::Internal(format!("unknown source {}", answers.source)))?;
        Ok(Scope {
            etlgen_version: ETLGEN_VERSION.to_string(),
            client: answers.client.to_string(),
            source: SourceInfo {
                id: source.id.clone(),
                description: source.description.clone(),
                schedule: answers.schedule.as_ref().map(ToString::to_string),
            },
            region: answers.region.to_string(),
            datacenter: answers.datacenter.to_string(),
            qualtrics_base_url: format!("https://{}.qualtrics.com/API/v3/", answers.datacenter),
            environments: answers
                .environments
                .iter()
                .map(ToString::to_string)
                .collect(),
            resources: resources::resources(answers, catalog, &prefix, uses_sftp),
            qualtrics: qualtrics::load(answers, catalog, records),
            mermaid: diagram::mermaid(answers)?,
            steps,
            client_values,
            secrets,
        })
    }
}

/// Reads an answers file (the format of `.etlgen/answers.toml`).
pub fn read_answers(path: &Path) -> Result<AnswersFile, ScopeError> {
    let text = fs_err::read_to_string(path).map_err(|source| ScopeError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    AnswersFile::parse(&text).map_err(|e| ScopeError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn kind_of<'c>(step: &Step, catalog: &'c Catalog) -> &'c StepKind {
    catalog
        .kind(&step.kind)
        .expect("answers are resolved against the catalog")
}

/// Whether a step talks to the client's SFTP server: its kind's features, or
/// a parameter it sets (an exporter's `sftp_dir`), enable `sftp`.
fn uses_sftp(step: &Step, catalog: &Catalog) -> bool {
    let kind = kind_of(step, catalog);
    kind.features.iter().any(|f| f == "sftp")
        || kind
            .params
            .iter()
            .any(|p| p.feature.as_deref() == Some("sftp") && step.settings.param(&p.name).is_some())
}

fn scope_step(
    step: &Step,
    answers: &Answers,
    catalog: &Catalog,
    prefix: &str,
) -> Result<ScopeStep, ScopeError> {
    let kind = kind_of(step, catalog);
    let settings = step.settings.step;
    let suffix = if settings.fifo { ".fifo" } else { "" };
    let reads_from: Vec<String> = answers
        .steps
        .iter()
        .filter(|s| s.feeds.contains(&step.name))
        .map(|s| s.name.to_string())
        .collect();
    let entry = reads_from.is_empty().then(|| {
        match (
            crate::answers::consumes(step, kind),
            answers.source.as_str(),
        ) {
            (Catalog::SCHEDULE, _) => "schedule",
            (_, "http") => "api-gateway",
            _ => "landing-bucket",
        }
        .to_string()
    });
    let client_values = kind
        .params
        .iter()
        .filter(|p| {
            step.settings
                .param(&p.name)
                .is_some_and(|v| v.to_string().contains(PLACEHOLDER))
        })
        .map(|p| format!("steps.{}.{}", step.name, p.config_key()))
        .collect();
    Ok(ScopeStep {
        name: step.name.to_string(),
        kind: kind.id.clone(),
        stage: kind.stage,
        description: kind.description.clone(),
        reads_from,
        entry,
        feeds: step.feeds.iter().map(ToString::to_string).collect(),
        queue: QueueInfo {
            name: format!("{prefix}-{}{suffix}", step.name),
            dlq: format!("{prefix}-{}-dlq{suffix}", step.name),
            fifo: settings.fifo,
            visibility_timeout_seconds: MAX_VISIBILITY_TIMEOUT
                .min(6 * settings.timeout_seconds + settings.batching_window_seconds),
        },
        function: format!("{prefix}-{}", step.name),
        settings,
        calls_qualtrics: kind.calls_qualtrics,
        hooks: hooks::hooks(kind)?,
        client_values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn answers(doc: &str) -> Answers {
        let raw: AnswersFile = toml::from_str(doc).unwrap();
        Answers::resolve(&raw, Catalog::builtin()).unwrap()
    }

    #[test]
    fn steps_carry_queue_names_settings_and_placeholders() {
        let a = answers(
            "client = \"acme\"\n[[steps]]\nkind = \"validator\"\n[[steps]]\nkind = \"response-importer\"\n\
             name = \"nps\"\nsettings = { fifo = true, survey_id = \"SV_1\" }",
        );
        let scope = Scope::new(&a, Catalog::builtin(), 100).unwrap();
        let names: Vec<&str> = scope.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["validator", "nps"]);
        let nps = &scope.steps[1];
        assert_eq!(nps.queue.name, "acme-<env>-nps.fifo");
        assert_eq!(nps.queue.dlq, "acme-<env>-nps-dlq.fifo");
        assert_eq!(nps.function, "acme-<env>-nps");
        // FIFO drops the batching window: 6 × 300 s + 0.
        assert_eq!(nps.queue.visibility_timeout_seconds, 1800);
        assert_eq!(nps.reads_from, ["validator"]);
        assert!(nps.client_values.is_empty(), "the survey id is set");
        assert_eq!(scope.steps[0].entry.as_deref(), Some("landing-bucket"));
        assert_eq!(scope.secrets, ["acme/<env>/qualtrics"]);
    }

    #[test]
    fn visibility_timeout_is_six_timeouts_plus_the_window() {
        let a = answers(
            "client = \"acme\"\n[[steps]]\nkind = \"validator\"\n\
             settings = { timeout_seconds = 900, batching_window_seconds = 300 }",
        );
        let scope = Scope::new(&a, Catalog::builtin(), 1).unwrap();
        assert_eq!(scope.steps[0].queue.visibility_timeout_seconds, 5700);
    }
}
