//! Answers: what a client pipeline is made of, raw and resolved.
//!
//! Prompts, flags and the answers file all produce an [`AnswersFile`]: plain
//! optional values, exactly what a user wrote. [`Answers::resolve`] turns it
//! into checked types against the catalog before any file is touched (parse,
//! then resolve, as ripgrep's lowargs and hiargs do). The resolved answers
//! serialize back to the answers file that lives in the generated repository
//! and is the single source of truth for re-rendering.

mod names;
mod settings;
mod values;
mod wiring;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, StepKind};

pub use names::{ClientName, EnvName, StepName};
pub use settings::{ResolvedSettings, SettingValue};
pub use values::{Datacenter, Region, Schedule};
pub use wiring::{RunInputs, consumes, run_inputs};

/// Where the answers file lives inside a generated repository.
pub const ANSWERS_PATH: &str = ".etlgen/answers.toml";

/// AWS's limit on Lambda function and IAM role names; the longest names
/// etlgen derives are `<client>-<env>-<step>`, in a personal environment
/// `<client>-<env>-<workspace>-<step>`.
const AWS_NAME_LIMIT: usize = 64;

/// S3's limit on bucket names, and the suffix of the longest one etlgen
/// derives, `<client>-<env>-data` (`<client>-<env>-<workspace>-data`).
const S3_BUCKET_LIMIT: usize = 63;
const BUCKET_SUFFIX: &str = "data";

/// The source a client POSTs to, and the role its principals assume to do so
/// (`<client>-<env>-submit`), which no step may share.
const HTTP_SOURCE: &str = "http";
const SUBMIT_ROLE: &str = "submit";

/// A bad answer: names the field, the value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// A value is malformed.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// Flag or answers-file key.
        field: String,
        /// What was given.
        value: String,
        /// What is allowed.
        reason: String,
    },
    /// A required value is absent.
    #[error("missing {field}: {hint}")]
    Missing {
        /// Flag or answers-file key.
        field: String,
        /// How to provide it.
        hint: String,
    },
    /// The answers contradict each other or the catalog's rules.
    #[error("{0}")]
    Conflict(String),
}

/// The answers as written: every field optional, nothing checked yet.
///
/// This is the on-disk format of `.etlgen/answers.toml` and of `--answers`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswersFile {
    /// The etlgen version that wrote the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etlgen_version: Option<String>,
    /// Client name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Source kind id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// AWS region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Qualtrics datacenter id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    /// Deployment environments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environments: Option<Vec<String>>,
    /// `Some("")` or absent means event-driven.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The pipeline's steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepEntry>>,
}

/// An answers document that is not TOML in the answers format.
#[derive(Debug, thiserror::Error)]
#[error("{message}{at}")]
pub struct AnswersSyntaxError {
    /// toml's one-line message (an unknown key, a wrong type, a bad value).
    pub message: String,
    /// Where, as " at line L, column C"; empty when toml gives no place.
    pub at: String,
}

impl AnswersFile {
    /// Parses an answers document (`.etlgen/answers.toml`, `--answers`).
    /// toml's own message spans several lines; the error keeps one, with
    /// the place.
    pub fn parse(text: &str) -> Result<AnswersFile, AnswersSyntaxError> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let at = e.span().map_or_else(String::new, |span| {
                let before = &text[..span.start];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(" at line {line}, column {column}")
            });
            AnswersSyntaxError {
                message: e.message().trim().to_string(),
                at,
            }
        })
    }
}

/// One `[[steps]]` entry of the answers file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepEntry {
    /// Step name; defaults to the kind id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Catalog kind id.
    pub kind: String,
    /// Overrides of the kind's settings and params.
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub settings: toml::Table,
}

/// Resolved, checked answers. Building one is the only way past this module.
#[derive(Debug, Clone, PartialEq)]
pub struct Answers {
    /// Client name.
    pub client: ClientName,
    /// Source kind id (checked against the catalog).
    pub source: String,
    /// AWS region.
    pub region: Region,
    /// Qualtrics datacenter id.
    pub datacenter: Datacenter,
    /// Deployment environments, in the order given.
    pub environments: Vec<EnvName>,
    /// `None` when the pipeline is event-driven.
    pub schedule: Option<Schedule>,
    /// The pipeline's steps in order, the source's own step first.
    pub steps: Vec<Step>,
}

/// One resolved step of the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Its unique name.
    pub name: StepName,
    /// Catalog kind id.
    pub kind: String,
    /// Catalog defaults with the answers' overrides applied.
    pub settings: ResolvedSettings,
    /// Only what the answers override, kept for writing the answers back.
    pub overrides: toml::Table,
    /// Whether the step came with the source rather than from the answers.
    pub implied: bool,
    /// The later steps that read this step's output, in pipeline order.
    pub feeds: Vec<StepName>,
}

impl Answers {
    /// Checks raw answers against the catalog. `field` prefixes in errors are
    /// the answers-file keys, which are also the long flag names.
    pub fn resolve(raw: &AnswersFile, catalog: &Catalog) -> Result<Answers, AnswerError> {
        let missing = |field: &str, hint: &str| AnswerError::Missing {
            field: field.to_string(),
            hint: hint.to_string(),
        };
        let client = ClientName::try_from(
            raw.client
                .clone()
                .ok_or_else(|| missing("client", "pass it as `etlgen new <client>`"))?,
        )?;
        let source = raw
            .source
            .clone()
            .unwrap_or_else(|| catalog.defaults.source.clone());
        let source_kind = catalog
            .source(&source)
            .ok_or_else(|| AnswerError::Invalid {
                field: "source".into(),
                value: source.clone(),
                reason: format!("expected one of: {}", catalog.source_ids()),
            })?;
        let region = Region::try_from(
            raw.region
                .clone()
                .unwrap_or_else(|| catalog.defaults.region.clone()),
        )?;
        let datacenter = Datacenter::try_from(
            raw.datacenter
                .clone()
                .unwrap_or_else(|| catalog.defaults.datacenter.clone()),
        )?;
        let environments = resolve_environments(
            raw.environments
                .as_ref()
                .unwrap_or(&catalog.defaults.environments),
        )?;
        let schedule = resolve_schedule(raw.schedule.as_deref(), source_kind)?;
        let default_steps: Vec<StepEntry>;
        let entries = match &raw.steps {
            Some(steps) => steps,
            None => {
                default_steps = catalog.default_steps();
                &default_steps
            }
        };
        let steps = resolve_steps(entries, source_kind.step.as_deref(), &source, catalog)?;
        let answers = Answers {
            client,
            source,
            region,
            datacenter,
            environments,
            schedule,
            steps,
        };
        answers.check_derived_names()?;
        Ok(answers)
    }

    /// The answers file for this pipeline, written by `etlgen_version`.
    pub fn to_file(&self, etlgen_version: &str) -> AnswersFile {
        AnswersFile {
            etlgen_version: Some(etlgen_version.to_string()),
            client: Some(self.client.to_string()),
            source: Some(self.source.clone()),
            region: Some(self.region.to_string()),
            datacenter: Some(self.datacenter.to_string()),
            environments: Some(self.environments.iter().map(ToString::to_string).collect()),
            schedule: self.schedule.as_ref().map(ToString::to_string),
            steps: Some(
                self.steps
                    .iter()
                    .filter(|s| !s.implied || !s.overrides.is_empty())
                    .map(|s| StepEntry {
                        name: Some(s.name.to_string()),
                        kind: s.kind.clone(),
                        settings: s.overrides.clone(),
                    })
                    .collect(),
            ),
        }
    }

    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name.as_str() == name)
    }

    /// AWS caps function and role names at 64 characters and bucket names at
    /// 63; every name etlgen derives must fit in every environment, a
    /// personal one with its longest workspace, or `terraform apply` fails
    /// late.
    fn check_derived_names(&self) -> Result<(), AnswerError> {
        let longest_env = self
            .environments
            .iter()
            .max_by_key(|e| e.name_part_len())
            .filter(|e| e.name_part_len() > EnvName::LOCAL.len());
        let (env_part, env_len) = match longest_env {
            Some(env) if env.is_personal() => (format!("{env}-<workspace>"), env.name_part_len()),
            Some(env) => (env.to_string(), env.name_part_len()),
            None => (EnvName::LOCAL.to_string(), EnvName::LOCAL.len()),
        };
        let workspace_note = if longest_env.is_some_and(EnvName::is_personal) {
            format!(
                " with a {}-character workspace, the longest a personal environment accepts",
                EnvName::WORKSPACE_MAX
            )
        } else {
            String::new()
        };
        let client = self.client.as_str();
        // `<client>-<env>-<suffix>` must fit the `limit` of `service`; `what` names it,
        // `shorter` the fix.
        let fits = |what: &str, suffix: &str, (service, limit): (&str, usize), shorter: &str| {
            let len = client.len() + 1 + env_len + 1 + suffix.len();
            if len <= limit {
                return Ok(());
            }
            Err(AnswerError::Conflict(format!(
                "the {what} \"{client}-{env_part}-{suffix}\" would be {len} \
                 characters{workspace_note}; {service} allows {limit}. Choose a shorter {shorter}"
            )))
        };
        let client_or_env = "client or environment name";
        fits(
            "data bucket name",
            BUCKET_SUFFIX,
            ("S3", S3_BUCKET_LIMIT),
            client_or_env,
        )?;
        for step in &self.steps {
            let shorter = "client, environment or step name";
            let aws = ("AWS", AWS_NAME_LIMIT);
            fits("Lambda function name", step.name.as_str(), aws, shorter)?;
        }
        if self.source == HTTP_SOURCE {
            if self.step(SUBMIT_ROLE).is_some() {
                return Err(AnswerError::Conflict(format!(
                    "a step is named {SUBMIT_ROLE:?}, the name of the role an HTTP source's \
                     client assumes (`<client>-<env>-{SUBMIT_ROLE}`); choose another step name"
                )));
            }
            fits(
                "client's submit role name",
                SUBMIT_ROLE,
                ("AWS", AWS_NAME_LIMIT),
                client_or_env,
            )?;
        }
        Ok(())
    }
}

fn resolve_environments(raw: &[String]) -> Result<Vec<EnvName>, AnswerError> {
    if raw.is_empty() {
        return Err(AnswerError::Missing {
            field: "environments".into(),
            hint: "give at least one, for example --env dev --env prod".into(),
        });
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for env in raw {
        if env == EnvName::LOCAL {
            return Err(AnswerError::Invalid {
                field: "environment".into(),
                value: env.clone(),
                reason: "`local` is reserved for the emulator environment every repository \
                         already has; choose another name"
                    .into(),
            });
        }
        let env = EnvName::try_from(env.as_str())?;
        let personal = format!("{}-", EnvName::PERSONAL);
        if env.as_str().starts_with(&personal) && raw.iter().any(|e| e == EnvName::PERSONAL) {
            return Err(AnswerError::Conflict(format!(
                "environment {:?} could share its names with a developer's stack of the \
                 personal `{}` (`<client>-{}-<workspace>-…`); choose a name that does not \
                 start with {personal:?}",
                env.as_str(),
                EnvName::PERSONAL,
                EnvName::PERSONAL,
            )));
        }
        if !seen.insert(env.clone()) {
            return Err(AnswerError::Conflict(format!(
                "environment {:?} is listed twice",
                env.as_str()
            )));
        }
        out.push(env);
    }
    Ok(out)
}

/// A scheduled source needs a schedule (its default when none is given); an
/// event-driven one runs on arrival and must not have one.
fn resolve_schedule(
    raw: Option<&str>,
    source: &crate::catalog::SourceKind,
) -> Result<Option<Schedule>, AnswerError> {
    match (raw.map(str::trim), source.scheduled) {
        (None, true) => {
            let default = source.default_schedule.as_deref().unwrap_or_default();
            Ok(Some(Schedule::try_from(default)?))
        }
        (Some(""), true) => Err(AnswerError::Conflict(format!(
            "the {} source polls on a schedule, so the pipeline cannot be event-driven; give \
             --schedule, for example --schedule 'rate(1 hour)'",
            source.id
        ))),
        (Some(s), true) => Ok(Some(Schedule::try_from(s)?)),
        (None | Some(""), false) => Ok(None),
        (Some(s), false) => Err(AnswerError::Invalid {
            field: "schedule".into(),
            value: s.to_string(),
            reason: format!(
                "the {} source runs when input arrives, so it takes no schedule; leave \
                 --schedule out, or use --source sftp to poll on a schedule",
                source.id
            ),
        }),
    }
}

fn resolve_steps(
    entries: &[StepEntry],
    source_step: Option<&str>,
    source: &str,
    catalog: &Catalog,
) -> Result<Vec<Step>, AnswerError> {
    let mut steps = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let kind = catalog
            .kind(&entry.kind)
            .ok_or_else(|| AnswerError::Invalid {
                field: format!("steps[{i}].kind"),
                value: entry.kind.clone(),
                reason: format!(
                    "unknown service; expected one of: {}",
                    catalog.selectable_ids()
                ),
            })?;
        if !kind.selectable && source_step != Some(kind.id.as_str()) {
            return Err(AnswerError::Invalid {
                field: format!("steps[{i}].kind"),
                value: entry.kind.clone(),
                reason: format!(
                    "it comes with its source, not on its own (source is {source}); expected \
                     one of: {}",
                    catalog.selectable_ids()
                ),
            });
        }
        steps.push(resolve_step(entry, kind, false)?);
    }
    if steps
        .iter()
        .all(|s| s.kind.as_str() == source_step.unwrap_or_default())
    {
        return Err(AnswerError::Missing {
            field: "services".into(),
            hint: format!("choose at least one of: {}", catalog.selectable_ids()),
        });
    }
    if let Some(id) = source_step
        && !steps.iter().any(|s| s.kind == id)
    {
        let kind = catalog
            .kind(id)
            .expect("catalog tests check source steps exist");
        let entry = StepEntry {
            name: None,
            kind: id.to_string(),
            settings: toml::Table::new(),
        };
        steps.push(resolve_step(&entry, kind, true)?);
    }
    for (i, step) in steps.iter().enumerate() {
        if steps[..i].iter().any(|s| s.name == step.name) {
            return Err(AnswerError::Conflict(format!(
                "two steps are named {:?}; give each instance its own name (`name = ...` \
                 in the answers file, or {kind}:NAME in --services)",
                step.name.as_str(),
                kind = step.kind
            )));
        }
        if crate::lockfile::is_registry_package(step.name.as_str()) {
            return Err(AnswerError::Invalid {
                field: "step name".into(),
                value: step.name.to_string(),
                reason: "it is the name of a crate the framework depends on, and each step is \
                         a crate of the generated workspace; choose another name"
                    .into(),
            });
        }
        let kind = catalog.kind(&step.kind).expect("resolved above");
        if !kind.repeatable && steps[..i].iter().any(|s| s.kind == step.kind) {
            return Err(AnswerError::Conflict(format!(
                "{} may appear only once in a pipeline",
                kind.id
            )));
        }
    }
    wiring::order_and_wire(steps, catalog)
}

/// Resolves one entry; errors locate it by step name (`steps.invite`), which
/// is what the user typed in `--set` or the answers file.
fn resolve_step(entry: &StepEntry, kind: &StepKind, implied: bool) -> Result<Step, AnswerError> {
    let name = StepName::try_from(entry.name.clone().unwrap_or_else(|| kind.id.clone()))?;
    let settings = ResolvedSettings::resolve(kind, &entry.settings, &format!("steps.{name}"))?;
    Ok(Step {
        name,
        kind: kind.id.clone(),
        settings,
        overrides: entry.settings.clone(),
        implied,
        feeds: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
