//! The service catalog: what etlgen can put in a client pipeline.
//!
//! The catalog is data (`catalog.toml`, embedded in the binary), in the style
//! of cargo-lambda's template manifest, so that adding a kind or changing a
//! default is an edit to one file instead of `if`s scattered through the
//! renderer. This module only parses it and answers questions about it.

use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

const CATALOG_TOML: &str = include_str!("catalog.toml");

/// The whole catalog: sources, step kinds and the defaults of `new --yes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Where a pipeline's input comes from.
    #[serde(rename = "source")]
    pub sources: Vec<SourceKind>,
    /// The step kinds, in pipeline order within each stage.
    #[serde(rename = "kind")]
    pub kinds: Vec<StepKind>,
    /// The answers `--yes` accepts.
    pub defaults: Defaults,
}

/// A source kind: how client data enters the pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceKind {
    /// Catalog id, as given to `--source`.
    pub id: String,
    /// One line for `etlgen list`.
    pub description: String,
    /// The step kind this source adds at the head of the pipeline, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Whether the pipeline runs on a schedule (it must) or on arrival (it
    /// must not have one).
    pub scheduled: bool,
    /// The schedule `--yes` accepts for a scheduled source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_schedule: Option<String>,
    /// Whether the client delivers the input itself, from its own AWS account, so the
    /// infrastructure takes `client_principals` to grant that delivery.
    #[serde(default)]
    pub client_delivers: bool,
}

/// Where in the pipeline a kind runs. Steps are ordered by stage first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Brings client data into the landing zone.
    Source,
    /// Stores raw input, parses and validates it.
    Pre,
    /// One Qualtrics API call per message.
    Processing,
    /// Exports back to the client.
    Post,
    /// Notifications, after everything else.
    Notify,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Source => "source",
            Stage::Pre => "pre-processing",
            Stage::Processing => "processing",
            Stage::Post => "post-processing",
            Stage::Notify => "notification",
        })
    }
}

/// A step kind: one SQS queue + one Lambda + one DLQ.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepKind {
    /// Catalog id, as given to `--services`.
    pub id: String,
    /// Path of the implementing step type under `etlgen_runtime::`.
    pub runtime: String,
    /// Whether the kind calls the Qualtrics API.
    pub calls_qualtrics: bool,
    /// etlgen-runtime features the kind's crate enables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// Pipeline stage.
    pub stage: Stage,
    /// One line for `etlgen list`.
    pub description: String,
    /// Whether a user may choose it (`sftp-poller` comes with the sftp source).
    pub selectable: bool,
    /// Whether it may appear more than once under different names.
    pub repeatable: bool,
    /// The message type it reads (see [`Catalog::ANY`] and friends).
    pub consumes: String,
    /// The message type it sends on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emits: Option<String>,
    /// How many messages of a run it sends each reader.
    #[serde(default)]
    pub sends: Sends,
    /// Whether it is a notifier, which every other step tells when it rejects a message
    /// of a run for good (`pipeline.notifiers`), and which counts the inputs of a run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notifies: bool,
    /// Whether it acts once per run, when every input the run brings has come, and so
    /// gets `inputs_per_batch` and `inputs_per_run` in its config.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub counts_inputs: bool,
    /// Hook points the client may override in the step's `hooks.rs`.
    pub hooks: Vec<String>,
    /// Default queue and function settings.
    pub settings: StepSettings,
    /// Kind-specific parameters, rendered into the step's config.
    #[serde(default)]
    pub params: Vec<Param>,
}

/// How many messages of a run a kind sends each reader. A notifier counts its inputs
/// with it to know when a run is done (`inputs_per_batch`, `inputs_per_run`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sends {
    /// One for each message it reads.
    #[default]
    PerInput,
    /// One for each batch of valid records (the validator).
    PerBatch,
    /// One per run, under the same record key whichever message sent it, so a reader
    /// sees one however often it is sent.
    PerRun,
}

/// Queue, trigger and function settings of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSettings {
    /// SQS messages per invocation.
    pub batch_size: u32,
    /// `MaximumBatchingWindowInSeconds`.
    pub batching_window_seconds: u32,
    /// `ScalingConfig.MaximumConcurrency`.
    pub max_concurrency: u32,
    /// FIFO queue with one message group.
    pub fifo: bool,
    /// Lambda timeout.
    pub timeout_seconds: u32,
    /// Lambda memory.
    pub memory_mb: u32,
    /// Lambda ephemeral storage (`/tmp`), where the validator's dedup writes past its
    /// memory; AWS's 512 MB unless a kind needs more.
    #[serde(default = "default_ephemeral_storage_mb")]
    pub ephemeral_storage_mb: u32,
    /// Receives before a message moves to the DLQ.
    pub max_receive_count: u32,
}

/// Lambda's default ephemeral storage.
fn default_ephemeral_storage_mb() -> u32 {
    512
}

/// A kind-specific parameter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    /// Key in the answers' `[steps.settings]` and in the step's config.
    pub name: String,
    /// One line of help.
    pub help: String,
    /// Key in the step's config table, when it differs from `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_key: Option<String>,
    /// Default value, which also fixes the value's type; `None` means a
    /// string that is unset unless the answers set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<toml::Value>,
    /// Allowed values, when the parameter is a choice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// Inclusive bounds of an integer parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<(i64, i64)>,
    /// An etlgen-runtime feature the step needs when this parameter is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// The value must be the `name` of one of the tables in this other
    /// (array) parameter: a primary key must be one of the columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names_one_of: Option<String>,
    /// What the step consumes instead when this parameter is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumes_instead: Option<String>,
}

/// The answers `new --yes` accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Source kind id.
    pub source: String,
    /// Step kind ids.
    pub services: Vec<String>,
    /// AWS region.
    pub region: String,
    /// Qualtrics datacenter id.
    pub datacenter: String,
    /// Deployment environments.
    pub environments: Vec<String>,
}

impl Catalog {
    /// The message type of a step that reads whatever earlier stages leave.
    pub const ANY: &'static str = "any";
    /// The message type the landing zone delivers (files, API payloads).
    pub const INPUT: &'static str = "input";
    /// The message type the pipeline's schedule delivers.
    pub const SCHEDULE: &'static str = "schedule";

    /// The catalog embedded in this etlgen binary, parsed once.
    pub fn builtin() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            toml::from_str(CATALOG_TOML).expect("the embedded catalog.toml is checked by tests")
        })
    }

    /// Looks a step kind up by id.
    pub fn kind(&self, id: &str) -> Option<&StepKind> {
        self.kinds.iter().find(|k| k.id == id)
    }

    /// Looks a source kind up by id.
    pub fn source(&self, id: &str) -> Option<&SourceKind> {
        self.sources.iter().find(|s| s.id == id)
    }

    /// The steps of `new --yes`: each default service under its kind's name.
    pub fn default_steps(&self) -> Vec<crate::answers::StepEntry> {
        self.defaults
            .services
            .iter()
            .map(|kind| crate::answers::StepEntry {
                name: None,
                kind: kind.clone(),
                settings: toml::Table::new(),
            })
            .collect()
    }

    /// The kinds a user may choose, in catalog order.
    pub fn selectable_kinds(&self) -> impl Iterator<Item = &StepKind> {
        self.kinds.iter().filter(|k| k.selectable)
    }

    /// The comma-separated ids of the selectable kinds, for error messages.
    pub fn selectable_ids(&self) -> String {
        self.selectable_kinds()
            .map(|k| k.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The comma-separated ids of the sources, for error messages.
    pub fn source_ids(&self) -> String {
        self.sources
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The selectable kinds that consume `message`, for error messages.
    pub fn consumers(&self, message: &str) -> Vec<&str> {
        self.selectable_kinds()
            .filter(|k| k.consumes == message)
            .map(|k| k.id.as_str())
            .collect()
    }

    /// The kinds that emit `message`, for error messages.
    pub fn producers(&self, message: &str) -> Vec<&str> {
        self.kinds
            .iter()
            .filter(|k| k.emits.as_deref() == Some(message))
            .map(|k| k.id.as_str())
            .collect()
    }
}

impl Param {
    /// The key this parameter has in the step's config table.
    pub fn config_key(&self) -> &str {
        self.config_key.as_deref().unwrap_or(&self.name)
    }
}

impl StepKind {
    /// The parameter named `name`, if this kind has one.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn embedded_catalog_parses_and_ids_are_unique() {
        let catalog: Catalog = toml::from_str(CATALOG_TOML).unwrap();
        let kinds: BTreeSet<_> = catalog.kinds.iter().map(|k| &k.id).collect();
        assert_eq!(kinds.len(), catalog.kinds.len(), "duplicate kind id");
        let sources: BTreeSet<_> = catalog.sources.iter().map(|s| &s.id).collect();
        assert_eq!(sources.len(), catalog.sources.len(), "duplicate source id");
    }

    #[test]
    fn the_issue_names_every_kind_and_source() {
        let catalog = Catalog::builtin();
        for id in [
            "validator",
            "contact-importer",
            "distribution-scheduler",
            "response-importer",
            "exporter",
            "notifier",
        ] {
            assert!(catalog.kind(id).is_some_and(|k| k.selectable), "{id}");
        }
        for id in ["s3", "sftp", "http"] {
            assert!(catalog.source(id).is_some(), "{id}");
        }
    }

    #[test]
    fn every_consumed_message_has_a_producer_and_source_steps_exist() {
        let catalog = Catalog::builtin();
        let special = [Catalog::ANY, Catalog::INPUT, Catalog::SCHEDULE];
        for kind in &catalog.kinds {
            let consumed = kind
                .params
                .iter()
                .filter_map(|p| p.consumes_instead.as_deref());
            for message in consumed.chain([kind.consumes.as_str()]) {
                assert!(
                    special.contains(&message) || !catalog.producers(message).is_empty(),
                    "{} consumes {message}, which no kind emits",
                    kind.id
                );
            }
            assert!(!kind.hooks.is_empty(), "{} has no hook points", kind.id);
        }
        for source in &catalog.sources {
            if let Some(step) = &source.step {
                let kind = catalog.kind(step).expect("source step kind exists");
                assert_eq!(
                    (kind.stage, kind.consumes.as_str()),
                    (Stage::Source, Catalog::SCHEDULE)
                );
                assert!(
                    source.scheduled,
                    "{} has a poller, so it runs on a schedule",
                    source.id
                );
            }
            assert_eq!(
                source.scheduled,
                source.default_schedule.is_some(),
                "{}",
                source.id
            );
        }
    }

    #[test]
    fn param_defaults_are_among_their_choices() {
        for kind in &Catalog::builtin().kinds {
            for p in &kind.params {
                if let (Some(d), false) = (&p.default, p.choices.is_empty()) {
                    let d = d.as_str().expect("choice params are strings");
                    assert!(p.choices.iter().any(|c| c == d), "{}.{}", kind.id, p.name);
                }
            }
        }
    }

    /// The catalog's hook points and kinds are the runtime's, so the hooks a
    /// scoping document lists are the ones a client can really override.
    #[test]
    fn kinds_and_hooks_match_the_runtime() {
        use etlgen_runtime::kinds;
        let runtime: &[(&str, &[&str])] = &[
            (kinds::validator::KIND, kinds::validator::HOOKS),
            (kinds::contacts::KIND, kinds::contacts::HOOKS),
            (kinds::distribution::KIND, kinds::distribution::HOOKS),
            (kinds::responses::KIND, kinds::responses::HOOKS),
            (kinds::sources::KIND, kinds::sources::HOOKS),
            (kinds::exporter::KIND, kinds::exporter::HOOKS),
            (kinds::notifier::KIND, kinds::notifier::HOOKS),
        ];
        let catalog = Catalog::builtin();
        assert_eq!(catalog.kinds.len(), runtime.len());
        for (id, hooks) in runtime {
            let kind = catalog
                .kind(id)
                .unwrap_or_else(|| panic!("catalog lacks {id}"));
            assert_eq!(kind.hooks, *hooks, "{id}");
            assert!(kind.runtime.starts_with("kinds::"), "{id}");
        }
    }

    #[test]
    fn default_services_are_selectable_kinds() {
        let catalog = Catalog::builtin();
        assert!(catalog.source(&catalog.defaults.source).is_some());
        for s in &catalog.defaults.services {
            assert!(catalog.kind(s).is_some_and(|k| k.selectable), "{s}");
        }
    }
}
