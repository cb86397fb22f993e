//! Terraform in `infra/envs/<env>`, and the outputs every command reads: the steps' queues,
//! DLQs and functions, where a run starts, the buckets and the secrets.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

use super::stack::{env_dir, root};

/// Runs terraform in infra/envs/local.
pub fn terraform(args: &[&str]) -> Result<String> {
    let out = Command::new("terraform")
        .arg(format!("-chdir={}", env_dir().display()))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("running terraform (is it installed and on PATH?)")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("terraform {} failed:\n{stdout}", args.first().unwrap_or(&""));
    }
    Ok(stdout)
}

/// The outputs of infra/envs/local.
#[derive(Debug, Clone, Deserialize)]
pub struct Outputs {
    pub region: String,
    /// The pipeline's name (`[pipeline] name`).
    pub pipeline: String,
    pub data_bucket: String,
    pub landing_bucket: Option<String>,
    /// Where a run starts (the SFTP poller's queue for an SFTP source).
    pub entry: Option<Entry>,
    /// The step that reads input files (where a replay goes).
    pub input: Option<Entry>,
    /// The steps in pipeline order.
    pub step_order: Vec<String>,
    pub steps: BTreeMap<String, StepOutputs>,
    #[serde(default)]
    pub secret_names: Vec<String>,
}

/// Where a run starts.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    pub source: String,
    pub step: String,
    pub queue_url: String,
}

/// One step's resources.
#[derive(Debug, Clone, Deserialize)]
pub struct StepOutputs {
    pub queue_url: String,
    pub queue_arn: String,
    pub dlq_url: String,
    pub dlq_arn: String,
    pub function_name: String,
}

impl Outputs {
    /// The outputs of infra/envs/local.
    pub fn load() -> Result<Outputs> {
        Outputs::from_json(&terraform(&["output", "-json", "-no-color"])?)
    }

    /// The outputs of infra/envs/<env>, a deployed environment (its backend must be
    /// reachable with the current credentials).
    pub fn load_env(env: &str) -> Result<Outputs> {
        let dir = root().join("infra/envs").join(env);
        ensure!(dir.is_dir(), "no environment {env:?}: infra/envs/{env} does not exist");
        let out = Command::new("terraform")
            .arg(format!("-chdir={}", dir.display()))
            .args(["output", "-json", "-no-color"])
            .stderr(Stdio::inherit())
            .output()
            .context("running terraform (is it installed and on PATH?)")?;
        ensure!(
            out.status.success(),
            "terraform output failed in infra/envs/{env} (run `terraform init` there first)"
        );
        Outputs::from_json(&String::from_utf8_lossy(&out.stdout))
    }

    fn from_json(json: &str) -> Result<Outputs> {
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(json)?;
        let values: serde_json::Map<String, serde_json::Value> =
            raw.into_iter().map(|(k, v)| (k, v["value"].clone())).collect();
        serde_json::from_value(serde_json::Value::Object(values))
            .context("reading the Terraform outputs (was the environment applied?)")
    }
}
