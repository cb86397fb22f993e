//! On-call operations (see RUNBOOK.md), on the local stack or a deployed environment:
//!
//! - `redrive <step>`: the step's dead-letter messages back to its queue, with SQS's
//!   `StartMessageMoveTask`, or by receiving and re-sending where the endpoint lacks it.
//! - `replay --run <run_id> [--from-step S]`: the run again from its raw copy. Steps skip
//!   what their ledger says is done, so a replay of a completed run changes nothing unless
//!   `--from-step` runs again that step and every step reading it (the `replay` module).
//! - `backfill --from DATE --to DATE`: every run whose raw data is filed under those logical
//!   dates, replayed for its own date.
//! - `runs`: recent runs and how far each step got.
//!
//! With `--env local` (the default) they act on the stack `cargo xtask local up` started;
//! with another environment, on AWS with the default credentials, reading the resources
//! from that environment's Terraform outputs (`infra/envs/<env>`).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use etlgen_runtime::envelope::{Envelope, LogicalDate, RunId};
use etlgen_runtime::kinds::validator::Source;
use etlgen_runtime::local::{aws_config, aws_sdk_s3, aws_sdk_sqs};

use crate::local::{Outputs, State};

mod redrive;
mod replay;
mod runs;

pub use redrive::redrive;
pub use runs::runs;

/// Which environment an operation acts on.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The environment: `local` (the stack of `cargo xtask local up`) or one of infra/envs/.
    #[arg(long, default_value = "local")]
    env: String,
}

/// `cargo xtask redrive`.
#[derive(Debug, clap::Args)]
pub struct Redrive {
    /// The step whose dead-letter queue to empty.
    step: String,
    #[command(flatten)]
    target: Target,
}

/// `cargo xtask replay`.
#[derive(Debug, clap::Args)]
pub struct Replay {
    /// The run to replay (its id, as `runs` lists it).
    #[arg(long = "run", value_name = "RUN_ID")]
    run: String,
    /// Run again this step and every step reading it, directly or not: their ledger
    /// entries for the run are cleared, an exporter or notifier does its work again, and
    /// inputs they kept from steps not run again are sent to them again.
    #[arg(long, value_name = "STEP")]
    from_step: Option<String>,
    /// Say which steps would run again and what would be sent to them, and change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    target: Target,
}

/// `cargo xtask backfill`.
#[derive(Debug, clap::Args)]
pub struct Backfill {
    /// The first logical date.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    from: LogicalDate,
    /// The last logical date (inclusive).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    to: LogicalDate,
    /// Replay the runs found; without it, outside `--env local`, only list them.
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    target: Target,
}

/// `cargo xtask runs`.
#[derive(Debug, clap::Args)]
pub struct Runs {
    /// How many runs to list, newest dates first.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

fn parse_date(text: &str) -> Result<LogicalDate, String> {
    text.parse().map_err(|_| format!("{text:?} is not a date: use YYYY-MM-DD, such as 2024-05-01"))
}

/// The clients and resources of one environment.
struct Env {
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    outputs: Outputs,
}

impl Env {
    async fn open(target: &Target) -> Result<Env> {
        let (sdk, outputs) = if target.env == "local" {
            let state = State::load()?;
            (state.aws().sdk_config().await?, Outputs::load()?)
        } else {
            let outputs = Outputs::load_env(&target.env)?;
            let http = etlgen_runtime::aws::https_client()?;
            let sdk = etlgen_runtime::aws::sdk_defaults(&http)
                .region(aws_config::Region::new(outputs.region.clone()))
                .load()
                .await;
            (sdk, outputs)
        };
        let s3 =
            aws_sdk_s3::config::Builder::from(&sdk).force_path_style(target.env == "local").build();
        Ok(Env {
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            outputs,
        })
    }

    fn step(&self, step: &str) -> Result<&crate::local::StepOutputs> {
        self.outputs.steps.get(step).with_context(|| {
            format!(
                "no step {step:?} in this pipeline; its steps are: {}",
                self.outputs.steps.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// Keys under `prefix` (all pages).
    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let bucket = &self.outputs.data_bucket;
        let mut keys = Vec::new();
        let mut pages =
            self.s3.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page
                .map_err(crate::sdk_error)
                .with_context(|| format!("listing s3://{bucket}/{prefix}"))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        }
        Ok(keys)
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<()> {
        let bucket = &self.outputs.data_bucket;
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .map_err(crate::sdk_error)
            .with_context(|| format!("writing s3://{bucket}/{key}"))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let bucket = &self.outputs.data_bucket;
        self.s3
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(crate::sdk_error)
            .with_context(|| format!("deleting s3://{bucket}/{key}"))?;
        Ok(())
    }

    /// Sends `body` to a queue; to a FIFO queue in the pipeline's group, deduplicated by
    /// `dedup`.
    async fn send(&self, queue_url: &str, body: &str, dedup: &str) -> Result<()> {
        let mut send = self.sqs.send_message().queue_url(queue_url).message_body(body);
        if queue_url.ends_with(".fifo") {
            send = send
                .message_group_id(self.outputs.pipeline.clone())
                .message_deduplication_id(dedup);
        }
        send.send()
            .await
            .map_err(crate::sdk_error)
            .with_context(|| format!("sending to {queue_url}"))?;
        Ok(())
    }

    async fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.s3.get_object().bucket(&self.outputs.data_bucket).key(key).send().await {
            Ok(object) => Ok(Some(object.body.collect().await?.into_bytes().to_vec())),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
            Err(e) => Err(crate::sdk_error(e)).with_context(|| format!("reading {key}")),
        }
    }
}

fn block_on<F: std::future::Future<Output = Result<()>>>(future: F) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(future)
}

/// A run in the raw zone.
struct RawRun {
    date: LogicalDate,
    run: String,
    key: String,
}

impl RawRun {
    fn id(&self) -> RunId {
        RunId::new(self.run.clone())
    }
}

/// The runs whose raw data is filed under `date`.
async fn raw_runs(env: &Env, date: LogicalDate) -> Result<Vec<RawRun>> {
    let prefix = format!("raw/{date}/");
    let mut runs: BTreeMap<String, RawRun> = BTreeMap::new();
    for key in env.list(&prefix).await? {
        let Some(run) = key.strip_prefix(&prefix).and_then(|rest| rest.split('/').next()) else {
            continue;
        };
        runs.entry(run.to_owned()).or_insert(RawRun {
            date,
            run: run.to_owned(),
            key: key.clone(),
        });
    }
    Ok(runs.into_values().collect())
}

async fn find_raw_run(env: &Env, run: &str) -> Result<RawRun> {
    for key in env.list("raw/").await? {
        let mut parts = key.splitn(4, '/');
        let (_, Some(date), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == run {
            let date = date.parse().with_context(|| format!("the raw key {key} has no date"))?;
            return Ok(RawRun { date, run: run.to_owned(), key });
        }
    }
    bail!("no raw data for run {run:?} under raw/; `cargo xtask runs` lists the runs")
}

/// Sends the run's raw copy to the input step again, for the run's own date and id; with
/// `from_step`, first clears what that step and the steps reading it have done of the run,
/// and sends them the inputs they kept from steps that do not run again (the `replay`
/// module).
async fn replay_run(env: &Env, raw: &RawRun, from_step: Option<&str>, dry_run: bool) -> Result<()> {
    let plan = match from_step {
        Some(step) => Some(replay::plan(env, raw, step).await?),
        None => None,
    };
    if dry_run {
        let input = env.outputs.input.as_ref().map_or("the input step", |i| i.step.as_str());
        match &plan {
            Some(plan) => plan.describe(raw, input),
            None => println!(
                "Would send the raw copy {} to {input}; every step skips what it has done.",
                raw.key
            ),
        }
        println!("Nothing changed (--dry-run).");
        return Ok(());
    }
    if let Some(plan) = &plan {
        replay::clear(env, raw, plan).await?;
    }
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    if plan.as_ref().is_none_or(|p| p.raw) {
        let input =
            env.outputs.input.as_ref().context("this pipeline has no input step to replay into")?;
        let envelope = Envelope::new(
            env.outputs.pipeline.clone(),
            raw.id(),
            raw.date,
            input.step.clone(),
            format!("replay-{stamp}"),
            Source::Object {
                bucket: env.outputs.data_bucket.clone(),
                key: raw.key.clone(),
                version_id: None,
            },
        );
        let body = serde_json::to_string(&envelope)?;
        env.send(&input.queue_url, &body, &envelope.idempotency_key.to_string()).await?;
        println!("Sent the raw copy {} to {}.", raw.key, input.step);
    }
    if let Some(plan) = &plan {
        replay::resend(env, raw, plan, stamp).await?;
    }
    let steps = plan.map_or_else(|| "every step".to_owned(), |p| p.steps.join(", "));
    println!("Replaying run {} of {}: {steps}.", raw.run, raw.date);
    Ok(())
}

pub fn replay(args: Replay) -> Result<()> {
    block_on(async {
        let env = Env::open(&args.target).await?;
        let raw = find_raw_run(&env, &args.run).await?;
        replay_run(&env, &raw, args.from_step.as_deref(), args.dry_run).await
    })
}

pub fn backfill(args: Backfill) -> Result<()> {
    ensure!(args.from <= args.to, "--from {} is after --to {}", args.from, args.to);
    block_on(async {
        let env = Env::open(&args.target).await?;
        let mut runs = Vec::new();
        let mut date = args.from;
        loop {
            let found = raw_runs(&env, date).await?;
            if found.is_empty() {
                println!("{date}: no raw data");
            }
            for raw in &found {
                println!("{date}: run {} ({})", raw.run, raw.key);
            }
            runs.extend(found);
            if date >= args.to {
                break;
            }
            date = LogicalDate::new(date.date().next_day().context("past the last date")?);
        }
        // Every run filed under the dates is replayed, an abandoned one too: in a deployed
        // environment, look at the list first.
        if args.target.env != "local" && !args.yes {
            println!("Nothing replayed: check the runs above, then run again with --yes.");
            return Ok(());
        }
        for raw in &runs {
            replay_run(&env, raw, None, false).await?;
        }
        println!("Backfill of {} to {}: {} runs replayed.", args.from, args.to, runs.len());
        Ok(())
    })
}
