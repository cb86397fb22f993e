//! Layered configuration, compiled into the binary and selected at run time.
//!
//! A Lambda must start in milliseconds and must not depend on files beside it, so the
//! generated `main.rs` embeds the TOML files with `include_str!` into a [`ConfigSources`].
//! At cold start the environment is chosen by the `ETL_ENV` variable and the layers are merged,
//! later ones winning:
//!
//! 1. `default.toml`;
//! 2. the environment's file (`dev.toml`, `prod.toml`, …);
//! 3. environment variables `ETL__SECTION__KEY` (double underscores split the path, so
//!    `ETL__QUALTRICS__DATACENTER=fra1` sets `qualtrics.datacenter`).
//!
//! Outside `prod`, resource identifiers must not name production ([`isolation`]).
//!
//! Secrets are never configuration: `qualtrics.secret_id` names the Secrets Manager secret,
//! which is fetched once at cold start.
//!
//! # Schema
//!
//! ```toml
//! [pipeline]
//! name = "acme-nps"                 # required; part of every idempotency key
//! data_bucket = "acme-nps-dev-data" # required; raw zone, reports, run state
//! notifiers = ["notify"]            # optional; told when a step rejects a run's message
//!
//! [runtime]
//! batch_concurrency = 8             # messages processed at once (standard queues)
//! ledger = true                     # skip envelopes whose effect is already recorded
//! claim_lease_seconds = 300         # once-per-run claims expire after this (crash recovery);
//!                                   # at least the function timeout
//! failure_topic_arn = "arn:aws:sns:…" # optional; told about every rejected message
//!
//! [aws]
//! region = "eu-west-1"              # optional; else the Lambda's region
//! endpoint_url = "http://127.0.0.1:5055"  # optional; an emulator such as moto
//! force_path_style = false          # S3 path-style addressing (emulators)
//!
//! [tls]                             # which certificate authorities HTTPS trusts
//! roots = "bundled"                 # Mozilla's, compiled in; or "platform" (the OS store)
//! extra_ca_file = "/opt/ca.pem"     # optional; PEM certificates trusted besides `roots`
//!
//! [qualtrics]                       # optional; only steps that call Qualtrics need it
//! datacenter = "fra1"               # https://fra1.qualtrics.com/API/v3/
//! base_url = "http://127.0.0.1:9000/API/v3/"  # optional; overrides the datacenter URL
//! secret_id = "acme-nps/dev/qualtrics"        # Secrets Manager id, never the secret
//! auth = "token"                    # "token" (X-API-TOKEN) or "oauth" (client credentials)
//! oauth_scope = "manage:all"        # oauth only
//! timeout_ms = 30000                # per request
//! max_retries = 5                   # after the first attempt, on 429/5xx/timeouts
//! backoff_base_ms = 200
//! backoff_max_ms = 20000
//! [qualtrics.rate_limits]           # requests per minute per endpoint; see qualtrics::endpoint
//! default = 500
//! import_transaction_contacts = 100
//!
//! [sftp]                            # optional; needs the `sftp` feature
//! host = "sftp.client.example"
//! port = 22
//! user = "acme"
//! secret_id = "acme-nps/dev/sftp"   # {"password"} or {"private_key", "passphrase"}
//! host_key_sha256 = "SHA256:…"      # the server's key fingerprint, always checked
//!
//! [steps.invite]                    # one table per step, named as in main.rs
//! next_steps = ["remind", "notify"]  # optional; every step that reads this step's output,
//!                                   # each at the queue_url of its own table
//! queue_url = "https://sqs…/acme-nps-dev-invite"  # this step's queue, for its senders
//! next_step = "remind"              # optional; the one step that reads this step's output
//! next_queue_url = "https://sqs…/acme-nps-dev-remind"
//! message_group_id = "qualtrics"    # only when the next queue is FIFO
//! fifo = false                      # optional; else detected from the event source ARN
//! batch_concurrency = 4             # optional; overrides runtime.batch_concurrency
//! # … plus the step kind's own settings, documented on its `Settings` type.
//! ```

pub mod isolation;

use std::collections::BTreeMap;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The variable that selects the environment at run time.
pub const ENV_VAR: &str = "ETL_ENV";

/// The prefix of configuration environment variables; `__` separates path segments.
pub const ENV_PREFIX: &str = "ETL__";

/// The embedded TOML files of a Lambda: the defaults and one file per environment.
#[derive(Debug, Clone, Copy)]
pub struct ConfigSources {
    /// The contents of `default.toml`.
    pub default: &'static str,
    /// `(name, contents)` of each environment file, for example `("dev", …)`.
    pub environments: &'static [(&'static str, &'static str)],
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `ETL_ENV` is not set.
    #[error("{ENV_VAR} is not set; set it to one of: {}", allowed.join(", "))]
    MissingEnvironment {
        /// The environments this binary was built with.
        allowed: Vec<String>,
    },
    /// `ETL_ENV` names an environment this binary has no file for.
    #[error("unknown environment {name:?} in {ENV_VAR}; this binary knows: {}", allowed.join(", "))]
    UnknownEnvironment {
        /// The requested name.
        name: String,
        /// The environments this binary was built with.
        allowed: Vec<String>,
    },
    /// A non-production environment names production resources.
    #[error(
        "environment {environment:?} must not use production resources, but {} name production; \
         point them at {environment} resources",
        keys.join(", ")
    )]
    ProductionResource {
        /// The selected environment.
        environment: String,
        /// The offending keys, as dotted paths.
        keys: Vec<String>,
    },
    /// A layer is not valid TOML or a value has the wrong type or is missing.
    #[error("invalid configuration for environment {environment:?}: {source}")]
    Invalid {
        /// The selected environment.
        environment: String,
        /// Figment's error, naming the key and the layer it came from.
        #[source]
        source: Box<figment::Error>,
    },
}

/// The process-environment layer: `ETL__SECTION__KEY`, lowercased, `__` splitting the path.
///
/// Step names contain hyphens, which environment variable names cannot (Lambda allows only
/// `[A-Za-z0-9_]`), so in `ETL__STEPS__<STEP>__<KEY>` an underscore in the step segment stands
/// for a hyphen: `ETL__STEPS__IMPORT_CONTACTS__QUEUE_URL` sets
/// `steps.import-contacts.queue_url`. Step names never contain underscores, so this is
/// unambiguous.
fn env_layer() -> Env {
    Env::prefixed(ENV_PREFIX)
        .split("__")
        .map(|key| step_key(key.as_str()).into())
}

/// Rewrites `steps.<step_with_underscores>.<key>` to the hyphenated step name.
fn step_key(key: &str) -> String {
    match key.split_once('.') {
        Some((section, rest)) if section.eq_ignore_ascii_case("steps") => {
            match rest.split_once('.') {
                Some((step, field)) => format!("{section}.{}.{field}", step.replace('_', "-")),
                None => key.to_owned(),
            }
        }
        _ => key.to_owned(),
    }
}

impl ConfigSources {
    /// The environment names, in declaration order.
    pub fn environment_names(&self) -> Vec<String> {
        self.environments
            .iter()
            .map(|(n, _)| (*n).to_owned())
            .collect()
    }

    /// Loads the environment named by `ETL_ENV`, with `ETL__…` variable overrides.
    pub fn load(&self) -> Result<Config, ConfigError> {
        match std::env::var(ENV_VAR) {
            Ok(name) if !name.is_empty() => self.load_env(&name),
            _ => Err(ConfigError::MissingEnvironment {
                allowed: self.environment_names(),
            }),
        }
    }

    /// Loads a named environment, with `ETL__…` variable overrides.
    pub fn load_env(&self, environment: &str) -> Result<Config, ConfigError> {
        let figment = self.files(environment)?.merge(env_layer());
        Config::from_figment(environment, figment)
    }

    /// Loads a named environment from the files only, ignoring the process environment
    /// (what tests and the harness use, so they cannot be changed by the caller's shell).
    pub fn load_files(&self, environment: &str) -> Result<Config, ConfigError> {
        Config::from_figment(environment, self.files(environment)?)
    }

    /// Loads a named environment from the files, then `overlay` (TOML) over them: what the
    /// deployment passes as `ETL__…` variables, written as TOML for a test.
    pub fn load_files_with(&self, environment: &str, overlay: &str) -> Result<Config, ConfigError> {
        let figment = self.files(environment)?.merge(Toml::string(overlay));
        Config::from_figment(environment, figment)
    }

    fn files(&self, environment: &str) -> Result<Figment, ConfigError> {
        let (_, env_file) = self
            .environments
            .iter()
            .find(|(name, _)| *name == environment)
            .ok_or_else(|| ConfigError::UnknownEnvironment {
                name: environment.to_owned(),
                allowed: self.environment_names(),
            })?;
        Ok(Figment::from(Toml::string(self.default)).merge(Toml::string(env_file)))
    }
}

/// The resolved configuration of one Lambda in one environment.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The selected environment (`dev`, `prod`, …); set by the loader, not by a file.
    pub environment: String,
    /// The pipeline's identity and storage.
    pub pipeline: PipelineConfig,
    /// How batches are processed.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// AWS SDK overrides.
    #[serde(default)]
    pub aws: AwsConfig,
    /// Which certificate authorities the HTTPS client trusts.
    #[serde(default)]
    pub tls: TlsConfig,
    /// The Qualtrics API client; absent for steps that never call it.
    #[serde(default)]
    pub qualtrics: Option<QualtricsConfig>,
    /// The client's SFTP server; absent unless a step polls or exports over SFTP.
    #[serde(default)]
    pub sftp: Option<SftpConfig>,
    /// Per-step tables, keyed by step name.
    #[serde(default)]
    pub steps: BTreeMap<String, StepConfig>,
    #[serde(skip)]
    figment: Figment,
}

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize)]
pub struct PipelineConfig {
    /// The pipeline name, part of every idempotency key.
    pub name: String,
    /// The bucket holding the raw zone, reports and run state.
    pub data_bucket: String,
    /// The pipeline's notifier steps: every other step tells them when it rejects a
    /// message of a run, at the `queue_url` of their tables (see `kinds::notifier`).
    #[serde(default)]
    pub notifiers: Vec<String>,
}

/// `[runtime]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RuntimeConfig {
    /// Messages processed concurrently in a standard-queue batch.
    pub batch_concurrency: usize,
    /// Record each completed envelope and skip it when redelivered.
    pub ledger: bool,
    /// How long a once-per-run claim protects a delivery before a redelivery may take it
    /// over (set it to at least the function timeout).
    pub claim_lease_seconds: u64,
    /// An SNS topic told about every permanently rejected message, so nothing is dropped
    /// silently (the report itself is always written).
    pub failure_topic_arn: Option<String>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            batch_concurrency: 8,
            ledger: true,
            claim_lease_seconds: 300,
            failure_topic_arn: None,
        }
    }
}

/// `[aws]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AwsConfig {
    /// The region; the Lambda's own when absent.
    pub region: Option<String>,
    /// An endpoint for every AWS client (a local emulator).
    pub endpoint_url: Option<String>,
    /// S3 path-style addressing, which emulators need.
    pub force_path_style: bool,
}

/// `[tls]`: which certificate authorities the step's HTTPS client trusts (AWS and Qualtrics
/// alike; see `aws::trust`). A misspelt key is an error, not a setting silently ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The trust store.
    pub roots: TrustRoots,
    /// A PEM file of CA certificates trusted besides [`TlsConfig::roots`]: a private CA, or
    /// the one a TLS-inspecting egress firewall signs with. Give an absolute path (a
    /// Lambda layer's files are under `/opt`).
    pub extra_ca_file: Option<std::path::PathBuf>,
}

/// `[tls] roots`: where the trusted root certificates come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustRoots {
    /// Mozilla's root certificates, compiled into the binary (the `webpki-roots` crate): no
    /// file is read at cold start, and every environment trusts the same roots.
    #[default]
    Bundled,
    /// The platform's store, read at cold start: `SSL_CERT_FILE` and `SSL_CERT_DIR` when set,
    /// else the distribution's bundle (`rustls-native-certs`).
    Platform,
}

/// How the Qualtrics client authenticates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// `X-API-TOKEN: <secret>`.
    #[default]
    Token,
    /// OAuth client credentials; the secret is JSON `{"client_id","client_secret"}`.
    #[serde(rename = "oauth")]
    OAuth,
}

/// `[qualtrics]`.
#[derive(Debug, Clone, Deserialize)]
pub struct QualtricsConfig {
    /// The datacenter id, for example `fra1`.
    pub datacenter: String,
    /// Overrides `https://{datacenter}.qualtrics.com/API/v3/` (a mock server).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The Secrets Manager id of the API token or OAuth client credentials.
    pub secret_id: String,
    /// The authentication method.
    #[serde(default)]
    pub auth: AuthMethod,
    /// OAuth scopes, space separated.
    #[serde(default)]
    pub oauth_scope: Option<String>,
    /// Per-request timeout in milliseconds, reading the answer included (a response
    /// export's whole download, too).
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Retries after the first attempt on 429, 5xx and timeouts.
    #[serde(default = "defaults::max_retries")]
    pub max_retries: usize,
    /// The first backoff delay in milliseconds.
    #[serde(default = "defaults::backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// The largest backoff delay in milliseconds.
    #[serde(default = "defaults::backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Requests per minute by endpoint name; `default` applies to the rest.
    #[serde(default)]
    pub rate_limits: BTreeMap<String, u32>,
}

impl QualtricsConfig {
    /// The API base URL, always ending in `/`.
    pub fn base_url(&self) -> String {
        let url = self
            .base_url
            .clone()
            .unwrap_or_else(|| format!("https://{}.qualtrics.com/API/v3/", self.datacenter));
        if url.ends_with('/') {
            url
        } else {
            format!("{url}/")
        }
    }
}

mod defaults {
    pub fn timeout_ms() -> u64 {
        30_000
    }
    pub fn max_retries() -> usize {
        5
    }
    pub fn backoff_base_ms() -> u64 {
        200
    }
    pub fn backoff_max_ms() -> u64 {
        20_000
    }
    pub fn sftp_port() -> u16 {
        22
    }
}

/// `[sftp]`: the client's SFTP server (the Lambda needs the `sftp` feature).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SftpConfig {
    /// The host name.
    pub host: String,
    /// The port.
    #[serde(default = "defaults::sftp_port")]
    pub port: u16,
    /// The user name.
    pub user: String,
    /// The Secrets Manager id of `{"password"}` or `{"private_key", "passphrase"}`.
    pub secret_id: String,
    /// The server's host key fingerprint, `SHA256:…` as `ssh-keygen -lf` prints it.
    pub host_key_sha256: String,
}

/// `[steps.<name>]`: what every step has; the kind's own settings sit beside these.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StepConfig {
    /// Every step that reads this step's output (fan-out): each gets its own
    /// copy of every envelope, at the `queue_url` of its own table. Takes
    /// precedence over `next_step`.
    #[serde(default)]
    pub next_steps: Vec<String>,
    /// This step's own queue, which steps naming it in `next_steps` send to
    /// (set at deploy time, as `ETL__STEPS__<STEP>__QUEUE_URL`).
    #[serde(default)]
    pub queue_url: Option<String>,
    /// The name of the step that reads this step's output.
    #[serde(default)]
    pub next_step: Option<String>,
    /// The queue of that step.
    #[serde(default)]
    pub next_queue_url: Option<String>,
    /// The message group for a FIFO queue: with `next_steps`, the group of
    /// this step's own queue; with `next_step`, of the next step's queue.
    #[serde(default)]
    pub message_group_id: Option<String>,
    /// Forces FIFO (`true`) or standard (`false`) batch handling.
    #[serde(default)]
    pub fifo: Option<bool>,
    /// Overrides `runtime.batch_concurrency`.
    #[serde(default)]
    pub batch_concurrency: Option<usize>,
}

impl Config {
    fn from_figment(environment: &str, figment: Figment) -> Result<Self, ConfigError> {
        let figment = figment.merge(Serialized::default("environment", environment));
        let invalid = |source: figment::Error| ConfigError::Invalid {
            environment: environment.to_owned(),
            source: Box::new(source),
        };
        let mut config: Config = figment.extract().map_err(invalid)?;
        if !isolation::PRODUCTION.contains(&environment) {
            let root = figment.find_value("").map_err(invalid)?;
            let keys = isolation::production_references(&root);
            if !keys.is_empty() {
                return Err(ConfigError::ProductionResource {
                    environment: environment.to_owned(),
                    keys,
                });
            }
        }
        config.figment = figment;
        Ok(config)
    }

    /// The common settings of a step; empty when the file has no table for it.
    pub fn step(&self, name: &str) -> StepConfig {
        self.steps.get(name).cloned().unwrap_or_default()
    }

    /// How many steps send their output to the step named `name` (`next_steps`, or
    /// `next_step`).
    pub fn producers_of(&self, name: &str) -> usize {
        (self.steps.values())
            .filter(|s| {
                s.next_steps.iter().any(|n| n == name) || s.next_step.as_deref() == Some(name)
            })
            .count()
    }

    /// A step kind's own settings, read from `[steps.<name>]`.
    pub fn step_settings<T: DeserializeOwned>(&self, name: &str) -> Result<T, ConfigError> {
        let path = format!("steps.{name}");
        let invalid = |source: figment::Error| ConfigError::Invalid {
            environment: self.environment.clone(),
            source: Box::new(source),
        };
        if self.figment.find_value(&path).is_ok() {
            self.figment.extract_inner(&path).map_err(invalid)
        } else {
            Figment::new().extract().map_err(invalid)
        }
    }

    /// Builds a configuration directly from TOML text (tests and tools).
    pub fn from_toml(environment: &str, toml: &str) -> Result<Self, ConfigError> {
        Self::from_figment(environment, Figment::from(Toml::string(toml)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCES: ConfigSources = ConfigSources {
        default: include_str!("../../examples/config/default.toml"),
        environments: &[
            ("dev", include_str!("../../examples/config/dev.toml")),
            ("prod", include_str!("../../examples/config/prod.toml")),
        ],
    };

    #[test]
    fn example_files_load_and_the_environment_file_wins() {
        let dev = SOURCES.load_files("dev").unwrap();
        let prod = SOURCES.load_files("prod").unwrap();
        assert_eq!(dev.environment, "dev");
        assert_eq!(prod.environment, "prod");
        assert_ne!(dev.pipeline.data_bucket, prod.pipeline.data_bucket);
        assert!(dev.pipeline.data_bucket.contains("dev"));
        let q = dev.qualtrics.as_ref().unwrap();
        assert!(q.secret_id.contains("dev"));
        assert_eq!(
            q.base_url(),
            format!("https://{}.qualtrics.com/API/v3/", q.datacenter)
        );
        assert!(dev.steps.contains_key("invite"));
    }

    #[test]
    fn unknown_or_missing_environment_names_the_allowed_ones() {
        let err = SOURCES.load_files("staging").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("staging") && text.contains("dev, prod"),
            "{text}"
        );
        let missing = ConfigError::MissingEnvironment {
            allowed: SOURCES.environment_names(),
        };
        assert!(missing.to_string().contains("ETL_ENV"));
    }

    #[test]
    #[allow(
        clippy::result_large_err,
        reason = "figment::Jail's closure type is fixed"
    )]
    fn environment_variables_override_files() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ETL__RUNTIME__BATCH_CONCURRENCY", "3");
            jail.set_env("ETL__QUALTRICS__DATACENTER", "iad1");
            jail.set_env("ETL_ENV", "prod");
            let config = SOURCES.load().map_err(|e| e.to_string())?;
            assert_eq!(config.environment, "prod");
            assert_eq!(config.runtime.batch_concurrency, 3);
            assert_eq!(config.qualtrics.unwrap().datacenter, "iad1");
            Ok(())
        });
    }

    #[test]
    #[allow(
        clippy::result_large_err,
        reason = "figment::Jail's closure type is fixed"
    )]
    fn a_variable_addresses_a_hyphenated_step_with_underscores() {
        assert_eq!(
            step_key("steps.import_contacts.queue_url"),
            "steps.import-contacts.queue_url"
        );
        assert_eq!(
            step_key("runtime.batch_concurrency"),
            "runtime.batch_concurrency"
        );
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "ETL__STEPS__IMPORT_CONTACTS__QUEUE_URL",
                "https://sqs.test/ic",
            );
            jail.set_env("ETL_ENV", "dev");
            let config = SOURCES.load().map_err(|e| e.to_string())?;
            let step = config.step("import-contacts");
            assert_eq!(step.queue_url.as_deref(), Some("https://sqs.test/ic"));
            Ok(())
        });
    }

    #[test]
    fn step_settings_are_typed_and_default_when_absent() {
        #[derive(Deserialize, Default)]
        struct Settings {
            #[serde(default)]
            survey_id: Option<String>,
        }
        let config = Config::from_toml(
            "test",
            "[pipeline]\nname='p'\ndata_bucket='b'\n[steps.a]\nsurvey_id='SV_1'\nnext_step='b'\n",
        )
        .unwrap();
        let a: Settings = config.step_settings("a").unwrap();
        assert_eq!(a.survey_id.as_deref(), Some("SV_1"));
        assert_eq!(config.step("a").next_step.as_deref(), Some("b"));
        let missing: Settings = config.step_settings("zzz").unwrap();
        assert!(missing.survey_id.is_none());
    }

    #[test]
    fn dev_can_never_name_production_resources() {
        let sources = ConfigSources {
            default: "[pipeline]\nname='p'\ndata_bucket='p-dev-data'\n[steps.a]\nnext_queue_url='https://sqs/1/p-prod-a'\nsubject='prod news'\n",
            environments: &[("dev", ""), ("prod", "")],
        };
        let err = sources.load_files("dev").unwrap_err();
        assert!(
            matches!(&err, ConfigError::ProductionResource { keys, .. } if keys == &["steps.a.next_queue_url"]),
            "{err}"
        );
        assert!(sources.load_files("prod").is_ok(), "prod may name itself");
    }

    #[test]
    #[allow(
        clippy::result_large_err,
        reason = "figment::Jail's closure type is fixed"
    )]
    fn tls_trusts_the_bundled_roots_unless_told_otherwise() {
        let base = "[pipeline]\nname='p'\ndata_bucket='b'\n";
        let default = Config::from_toml("dev", base).unwrap();
        assert_eq!(default.tls.roots, TrustRoots::Bundled);
        assert_eq!(default.tls.extra_ca_file, None);
        figment::Jail::expect_with(|jail| {
            jail.set_env("ETL__TLS__ROOTS", "platform");
            jail.set_env("ETL__TLS__EXTRA_CA_FILE", "/opt/ca.pem");
            jail.set_env("ETL_ENV", "dev");
            let config = SOURCES.load().map_err(|e| e.to_string())?;
            assert_eq!(config.tls.roots, TrustRoots::Platform);
            assert_eq!(
                config.tls.extra_ca_file.as_deref(),
                Some(std::path::Path::new("/opt/ca.pem"))
            );
            Ok(())
        });
        let err = Config::from_toml("dev", &format!("{base}[tls]\nroots='system'\n")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("tls.roots") && text.contains("bundled") && text.contains("platform"),
            "{text}"
        );
        let err =
            Config::from_toml("dev", &format!("{base}[tls]\nextra_ca='/ca.pem'\n")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("extra_ca") && text.contains("extra_ca_file") && text.contains("tls"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_required_key_is_a_clear_error() {
        let err = Config::from_toml("dev", "[pipeline]\nname='p'\n").unwrap_err();
        assert!(err.to_string().contains("data_bucket"), "{err}");
    }
}
