//! The plan: which files a set of answers produces, from which source, with
//! which context, and who owns each. Pure: no I/O.
//!
//! Separating the plan from rendering lets `--dry-run` list the files, and
//! later `check` and `update` compare trees, without duplicating the rules of
//! which template goes where.

use std::sync::Arc;

use serde::Serialize;

use crate::answers::{ANSWERS_PATH, Answers, EnvName, Step, StepName};
use crate::catalog::Catalog;
use crate::lifecycle::lock::LOCK_PATH;
use crate::lockfile;
use crate::templates::{self, Each, FRAMEWORK, FRAMEWORK_DIR, Owner, TEMPLATE_SUFFIX, Templates};

/// The etlgen version, recorded in every answers file.
pub const ETLGEN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every file a render will produce.
#[derive(Debug)]
pub struct Plan {
    /// The answers the plan was made from.
    pub answers: Answers,
    /// Files in plan order (set order, then template order).
    pub files: Vec<PlannedFile>,
}

/// One output file.
#[derive(Debug)]
pub struct PlannedFile {
    /// Path relative to the repository root, `/`-separated.
    pub path: String,
    /// Ownership class.
    pub owner: Owner,
    /// Where its bytes come from.
    pub source: Source,
}

/// Where a planned file's bytes come from.
#[derive(Debug)]
pub enum Source {
    /// Rendered by Tera from `template` with `context`.
    Render {
        /// Template name (its path under `templates/`).
        template: String,
        /// Shared context of the set instance.
        context: Arc<tera::Context>,
    },
    /// Copied byte for byte from the binary.
    Copy(&'static [u8]),
    /// Produced by the planner (the answers file).
    Bytes(Vec<u8>),
    /// Composed from the rendered workspace manifests (`Cargo.lock`).
    Lockfile,
    /// The record of every other rendered file (`.etlgen/lock.toml`).
    RenderLock,
}

/// What templates see about the repository as a whole.
#[derive(Debug, Serialize)]
struct RepoContext<'a> {
    etlgen_version: &'static str,
    /// The framework's minimum Rust version, which the workspace inherits.
    rust_version: &'static str,
    client: &'a str,
    source: &'a str,
    source_description: &'a str,
    region: &'a str,
    datacenter: &'a str,
    environments: Vec<&'a str>,
    schedule: Option<&'a str>,
    steps: Vec<StepContext<'a>>,
    /// The notifier steps, which every other step tells when a run fails.
    notifiers: Vec<&'a str>,
    framework_dir: &'static str,
    /// Whether any step calls the Qualtrics API (renders `[qualtrics]`).
    uses_qualtrics: bool,
    /// Whether any step talks to the client's SFTP server (renders `[sftp]`).
    uses_sftp: bool,
    /// Config keys that still hold a REPLACE_ME placeholder.
    placeholders: Vec<String>,
    /// The emulator environment every repository has besides `environments`
    /// (`config/local.toml`, `infra/envs/local`).
    local_env: &'static str,
    /// The environment each developer deploys from their own workspace.
    personal_env: &'static str,
    /// Whether the client delivers the input from its own account (the
    /// source's `client_delivers`), so `client_principals` is rendered.
    client_delivers: bool,
    /// The Terraform infrastructure (`infra/`).
    terraform: TerraformContext<'a>,
}

/// What the Terraform templates need beyond the steps themselves.
#[derive(Debug, Serialize)]
struct TerraformContext<'a> {
    /// The Terraform versions every root module accepts: at least 1.10, for
    /// the S3 backend's native locking (`use_lockfile`).
    required_version: &'static str,
    /// The `hashicorp/aws` provider version every environment pins.
    aws_provider_version: &'static str,
    /// The step that reads the landing zone (the validator), if any.
    input_step: Option<&'a str>,
    /// The step the schedule starts (the SFTP poller), if any.
    scheduled_step: Option<&'a str>,
}

/// The Terraform versions generated root modules accept.
pub const TERRAFORM_REQUIRED_VERSION: &str = ">= 1.10.0, < 2.0.0";

/// The `hashicorp/aws` provider version generated environments pin; the
/// tests run `terraform validate` and `apply` with exactly this version.
pub const AWS_PROVIDER_VERSION: &str = "5.100.0";

/// What templates see about one step.
#[derive(Debug, Clone, Serialize)]
struct StepContext<'a> {
    name: &'a str,
    kind: &'a str,
    /// The step type, e.g. `kinds::distribution::DistributionScheduler`.
    runtime: &'a str,
    /// Its module, where the `Hooks` trait and the default functions live.
    module: &'a str,
    /// The step type's name, e.g. `DistributionScheduler`.
    type_name: &'a str,
    /// etlgen-runtime features the crate enables.
    features: Vec<&'a str>,
    /// Whether the step calls the Qualtrics API (and reads its secret).
    calls_qualtrics: bool,
    /// Whether the step talks to the client's SFTP server (and reads its secret).
    uses_sftp: bool,
    /// The message type the step reads (`input`, `schedule`, `records`, …).
    consumes: &'a str,
    /// Whether the step reads the landing zone (the input) rather than a queue
    /// fed by another step.
    reads_input: bool,
    /// The step's segment in `ETL__STEPS__<KEY>__…` variables: the name in
    /// upper case, hyphens as underscores (the framework maps them back).
    env_key: String,
    stage: String,
    description: &'a str,
    hooks: &'a [String],
    settings: &'a crate::answers::ResolvedSettings,
    /// Every later step that reads this step's output.
    feeds: Vec<&'a str>,
    /// Those of `feeds` this step sends to through their queues (the rest
    /// read the landing zone).
    sends_to: Vec<&'a str>,
    /// The step's `[steps.<name>]` entries: config key and TOML literal.
    config: Vec<ConfigEntry>,
    /// The notifiers this step tells of a run's failure and does not already send to.
    tells: Vec<&'a str>,
}

/// One `key = value` line of a step's config table.
#[derive(Debug, Clone, Serialize)]
struct ConfigEntry {
    key: String,
    value: String,
}

/// A bug in etlgen's own templates or catalog, or answers the renderer
/// cannot honour.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The template set is inconsistent.
    #[error(transparent)]
    Template(#[from] templates::TemplateError),
    /// Building a Tera context failed.
    #[error("cannot build the template context: {0}")]
    Context(#[from] tera::Error),
}

impl Plan {
    /// Plans the repository for `answers` with the built-in templates.
    pub fn new(answers: Answers) -> Result<Plan, PlanError> {
        Plan::with_templates(answers, Templates::builtin(), Catalog::builtin())
    }

    /// Plans the repository for `answers` with `templates`.
    pub fn with_templates(
        answers: Answers,
        templates: &Templates,
        catalog: &Catalog,
    ) -> Result<Plan, PlanError> {
        let repo = repo_context(&answers, catalog);
        let base = tera::Context::from_serialize(&repo)?;
        let mut files = Vec::new();
        let mut add = |path: String, source: Source| {
            let owner = templates.owner(&path);
            files.push(PlannedFile {
                path,
                owner,
                source,
            });
        };

        for set in &templates.manifest.sets {
            match set.each {
                Each::Repository => {
                    let ctx = Arc::new(base.clone());
                    for (path, source) in set_files(&set.dir, &set.into, &[], &ctx) {
                        add(path, source);
                    }
                }
                Each::Environment => {
                    for env in &answers.environments {
                        let mut ctx = base.clone();
                        ctx.insert("env", env.as_str());
                        ctx.insert("personal", &env.is_personal());
                        let vars = [("{env}", env.as_str())];
                        for (path, source) in set_files(&set.dir, &set.into, &vars, &Arc::new(ctx))
                        {
                            add(path, source);
                        }
                    }
                }
                Each::Step => {
                    for (step, step_ctx) in answers.steps.iter().zip(&repo.steps) {
                        let mut ctx = base.clone();
                        ctx.insert("step", step_ctx);
                        let vars = [
                            ("{step}", step.name.as_str()),
                            ("{kind}", step.kind.as_str()),
                        ];
                        let dir = substitute(&set.dir, &vars);
                        for (path, source) in set_files(&dir, &set.into, &vars, &Arc::new(ctx)) {
                            add(path, source);
                        }
                    }
                }
            }
        }
        for file in templates::files(&FRAMEWORK) {
            let rel = file.path().to_string_lossy().replace('\\', "/");
            if is_vendored(&rel) {
                add(
                    format!("{FRAMEWORK_DIR}/{rel}"),
                    Source::Copy(file.contents()),
                );
            }
        }
        let answers_text = answers_file_text(&answers);
        add(
            ANSWERS_PATH.to_string(),
            Source::Bytes(answers_text.into_bytes()),
        );
        add("Cargo.lock".to_string(), Source::Lockfile);
        add(LOCK_PATH.to_string(), Source::RenderLock);
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Plan { answers, files })
    }
}

/// The framework's files that belong in a client repository: its sources,
/// tests, examples and manifest, not build output or editor debris.
fn is_vendored(rel: &str) -> bool {
    let first = rel.split('/').next().unwrap_or_default();
    !(first == "target" || first == "Cargo.lock" || rel.ends_with('~') || rel.ends_with(".swp"))
}

/// The answers file, with a header saying what it is and what never goes in it.
pub fn answers_file_text(answers: &Answers) -> String {
    let body = toml::to_string(&answers.to_file(ETLGEN_VERSION))
        .expect("answers always serialize to TOML");
    format!(
        "# The answers this repository was generated from: the single source of truth\n\
         # for re-rendering it with etlgen. Change it through etlgen, not by hand.\n\
         # It never holds secrets: those live in AWS Secrets Manager.\n\n{body}"
    )
}

fn substitute(text: &str, vars: &[(&str, &str)]) -> String {
    vars.iter()
        .fold(text.to_string(), |acc, (k, v)| acc.replace(k, v))
}

/// The files of template folder `dir`, mapped into `into`.
fn set_files(
    dir: &str,
    into: &str,
    vars: &[(&str, &str)],
    ctx: &Arc<tera::Context>,
) -> Vec<(String, Source)> {
    let Some(folder) = templates::TEMPLATES.get_dir(dir) else {
        return Vec::new();
    };
    let into = substitute(into, vars);
    templates::files(folder)
        .into_iter()
        .map(|file| {
            let name = file.path().to_string_lossy().replace('\\', "/");
            let rel = substitute(&name[dir.len() + 1..], vars);
            let (rel, source) = match rel.strip_suffix(TEMPLATE_SUFFIX) {
                Some(out) => (
                    out.to_string(),
                    Source::Render {
                        template: name.clone(),
                        context: Arc::clone(ctx),
                    },
                ),
                None => (rel, Source::Copy(file.contents())),
            };
            let path = if into.is_empty() {
                rel
            } else {
                format!("{into}/{rel}")
            };
            (path, source)
        })
        .collect()
}

fn repo_context<'a>(answers: &'a Answers, catalog: &'a Catalog) -> RepoContext<'a> {
    let run_inputs = crate::answers::run_inputs(&answers.steps, catalog);
    let notifiers: Vec<&str> = (answers.steps.iter())
        .filter(|s| catalog.kind(&s.kind).is_some_and(|k| k.notifies))
        .map(|s| s.name.as_str())
        .collect();
    let steps: Vec<StepContext<'a>> = answers
        .steps
        .iter()
        .map(|step| {
            let inputs = run_inputs.get(step.name.as_str()).copied();
            step_context(
                step,
                answers,
                catalog,
                inputs.unwrap_or_default(),
                &notifiers,
            )
        })
        .collect();
    let mut placeholders: Vec<String> = steps
        .iter()
        .flat_map(|s| {
            s.config
                .iter()
                .filter(|e| e.value.contains(PLACEHOLDER))
                .map(move |e| format!("steps.{}.{}", s.name, e.key))
        })
        .collect();
    let uses_sftp = steps.iter().any(|s| s.features.contains(&"sftp"));
    if uses_sftp {
        placeholders.extend(SFTP_PLACEHOLDERS.iter().map(|k| format!("sftp.{k}")));
    }
    let terraform = TerraformContext {
        required_version: TERRAFORM_REQUIRED_VERSION,
        aws_provider_version: AWS_PROVIDER_VERSION,
        input_step: steps.iter().find(|s| s.reads_input).map(|s| s.name),
        scheduled_step: steps
            .iter()
            .find(|s| s.consumes == Catalog::SCHEDULE)
            .map(|s| s.name),
    };
    RepoContext {
        local_env: EnvName::LOCAL,
        personal_env: EnvName::PERSONAL,
        client_delivers: catalog
            .source(&answers.source)
            .is_some_and(|s| s.client_delivers),
        terraform,
        uses_qualtrics: steps.iter().any(|s| s.calls_qualtrics),
        uses_sftp,
        placeholders,
        etlgen_version: ETLGEN_VERSION,
        rust_version: lockfile::framework_rust_version(),
        client: answers.client.as_str(),
        source: &answers.source,
        source_description: catalog
            .source(&answers.source)
            .map(|s| s.description.as_str())
            .unwrap_or_default(),
        region: answers.region.as_str(),
        datacenter: answers.datacenter.as_str(),
        environments: answers.environments.iter().map(|e| e.as_str()).collect(),
        schedule: answers.schedule.as_ref().map(|s| s.as_str()),
        steps,
        notifiers,
        framework_dir: FRAMEWORK_DIR,
    }
}

/// The marker of a client-specific value nobody has filled in yet.
const PLACEHOLDER: &str = "REPLACE_ME";

/// The `[sftp]` keys `config/default.toml` renders with a placeholder.
const SFTP_PLACEHOLDERS: &[&str] = &["host", "user", "host_key_sha256"];

/// What templates see about `step`, which reads `inputs` per run, in a pipeline whose
/// notifiers are `notifiers`.
fn step_context<'a>(
    step: &'a Step,
    answers: &'a Answers,
    catalog: &'a Catalog,
    inputs: crate::answers::RunInputs,
    notifiers: &[&'a str],
) -> StepContext<'a> {
    let kind = catalog
        .kind(&step.kind)
        .expect("answers are resolved against the catalog");
    let mut features: Vec<&str> = kind.features.iter().map(String::as_str).collect();
    let mut config = Vec::new();
    for param in &kind.params {
        if let Some(value) = step.settings.param(&param.name) {
            config.push(ConfigEntry {
                key: param.config_key().to_string(),
                value: value.to_string(),
            });
            features.extend(param.feature.as_deref());
        }
    }
    if kind.counts_inputs {
        for (key, value) in [
            ("inputs_per_batch", inputs.per_batch),
            ("inputs_per_run", inputs.per_run),
        ] {
            config.push(ConfigEntry {
                key: key.to_owned(),
                value: value.to_string(),
            });
        }
    }
    features.sort_unstable();
    features.dedup();
    let (module, type_name) = kind
        .runtime
        .rsplit_once("::")
        .unwrap_or(("", &kind.runtime));
    let reads_landing = |name: &StepName| {
        let consumer = answers
            .step(name.as_str())
            .expect("feeds name resolved steps");
        let consumer_kind = catalog.kind(&consumer.kind).expect("resolved");
        crate::answers::consumes(consumer, consumer_kind) == Catalog::INPUT
    };
    let consumes = crate::answers::consumes(step, kind);
    let sends_to: Vec<&str> = (step.feeds.iter())
        .filter(|n| !reads_landing(n))
        .map(StepName::as_str)
        .collect();
    // Every step but a notifier tells the notifiers when it rejects a run's message.
    let tells = (notifiers.iter().copied())
        .filter(|n| !kind.notifies && !sends_to.contains(n))
        .collect();
    StepContext {
        module,
        type_name,
        uses_sftp: features.contains(&"sftp"),
        reads_input: consumes == Catalog::INPUT,
        consumes,
        env_key: step.name.as_str().replace('-', "_").to_uppercase(),
        features,
        calls_qualtrics: kind.calls_qualtrics,
        config,
        name: step.name.as_str(),
        kind: &kind.id,
        runtime: &kind.runtime,
        stage: kind.stage.to_string(),
        description: &kind.description,
        hooks: &kind.hooks,
        settings: &step.settings,
        feeds: step.feeds.iter().map(StepName::as_str).collect(),
        sends_to,
        tells,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answers::AnswersFile;

    fn plan(doc: &str) -> Plan {
        let raw: AnswersFile = toml::from_str(doc).unwrap();
        Plan::new(Answers::resolve(&raw, Catalog::builtin()).unwrap()).unwrap()
    }

    fn paths(p: &Plan) -> Vec<&str> {
        p.files.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn sets_are_rendered_per_environment_and_per_step() {
        let p = plan("client = \"acme\"\nenvironments = [\"dev\", \"qa\"]");
        let paths = paths(&p);
        for path in ["config/dev.toml", "config/qa.toml", "config/default.toml"] {
            assert!(paths.contains(&path), "{path}");
        }
        assert!(!paths.contains(&"config/prod.toml"));
        for step in ["validator", "contact-importer", "distribution-scheduler"] {
            assert!(paths.contains(&format!("lambdas/{step}/src/main.rs").as_str()));
            assert!(paths.contains(&format!("lambdas/{step}/tests/hooks.rs").as_str()));
        }
        let mut sorted = paths.clone();
        sorted.sort_unstable();
        assert_eq!(paths, sorted, "the plan is in path order");
    }

    #[test]
    fn every_file_has_its_owner_and_source() {
        let p = plan("client = \"acme\"");
        let file = |path: &str| p.files.iter().find(|f| f.path == path).unwrap();
        assert_eq!(file("lambdas/validator/src/hooks.rs").owner, Owner::Seeded);
        assert_eq!(file("lambdas/validator/src/main.rs").owner, Owner::Owned);
        assert_eq!(file("README.md").owner, Owner::Merged);
        assert!(matches!(file("Cargo.lock").source, Source::Lockfile));
        assert!(matches!(file(ANSWERS_PATH).source, Source::Bytes(_)));
        let vendored = file(&format!("{FRAMEWORK_DIR}/Cargo.toml"));
        assert!(matches!(vendored.source, Source::Copy(_)));
        assert!(!p.files.iter().any(|f| f.path.contains("/target/")));
    }

    #[test]
    fn config_values_are_toml_that_parses_back() {
        let doc: toml::Table = toml::from_str(
            r#"
            s = "a \"quoted\" value"
            n = 9
            arr = [".csv", ".txt"]
            cols = [{ name = "id", required = true }, { "first name" = "x", "a.b" = 1 }]
            t = { "key with space" = "v" }
            "#,
        )
        .unwrap();
        for (key, value) in &doc {
            let line = format!("{key} = {value}");
            let back: toml::Table = toml::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(&back[key], value, "{line}");
        }
    }
}
