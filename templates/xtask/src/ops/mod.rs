//! On-call operations (see RUNBOOK.md), on the local stack or a deployed environment:
//!
//! - `redrive <step>`: the step's dead-letter messages back to its queue, with SQS's
//!   `StartMessageMoveTask`, or by receiving and re-sending where the endpoint lacks it.
//! - `replay --run <run_id> [--from-step S]`: the run again from its raw copy. Steps skip
//!   what their ledger says is done, so a replay of a completed run changes nothing unless
//!   `--from-step` clears the ledger of that step and the ones after it.
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
use etlgen_runtime::kinds::RunManifest;
use etlgen_runtime::kinds::validator::Source;
use etlgen_runtime::local::{aws_config, aws_sdk_s3, aws_sdk_sqs};

use crate::local::{Outputs, State};

mod redrive;
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
    /// Process again from this step on (clears its ledger for the run, and the ledger of
    /// every step after it).
    #[arg(long, value_name = "STEP")]
    from_step: Option<String>,
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

/// Sends the run's raw copy to the input step again, for the run's own date and id.
async fn replay_run(env: &Env, raw: &RawRun, from_step: Option<&str>) -> Result<()> {
    let input =
        env.outputs.input.as_ref().context("this pipeline has no input step to replay into")?;
    if let Some(step) = from_step {
        clear_ledgers(env, raw, step).await?;
    }
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let envelope = Envelope::new(
        env.outputs.pipeline.clone(),
        RunId::new(raw.run.clone()),
        raw.date,
        input.step.clone(),
        format!("replay-{stamp}"),
        Source::Object {
            bucket: env.outputs.data_bucket.clone(),
            key: raw.key.clone(),
            version_id: None,
        },
    );
    let mut send = env
        .sqs
        .send_message()
        .queue_url(&input.queue_url)
        .message_body(serde_json::to_string(&envelope)?);
    if input.queue_url.ends_with(".fifo") {
        send = send
            .message_group_id(env.outputs.pipeline.clone())
            .message_deduplication_id(envelope.idempotency_key.to_string());
    }
    send.send()
        .await
        .map_err(crate::sdk_error)
        .with_context(|| format!("sending to {}", input.queue_url))?;
    println!(
        "Replaying run {} of {} from {} ({}).",
        raw.run,
        raw.date,
        raw.key,
        from_step.unwrap_or(&input.step)
    );
    Ok(())
}

/// Removes the ledger entries of `from` and every step after it for the run's batches, so
/// they process them again.
async fn clear_ledgers(env: &Env, raw: &RawRun, from: &str) -> Result<()> {
    let order = &env.outputs.step_order;
    let start = order.iter().position(|s| s == from).with_context(|| {
        format!("no step {from:?} in this pipeline; its steps are: {}", order.join(", "))
    })?;
    let manifest_key = format!("runs/{}/{}/manifest.json", raw.date, raw.run);
    let manifest: RunManifest = match env.read(&manifest_key).await? {
        Some(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("reading {manifest_key}"))?
        }
        None => bail!("run {} has no manifest yet: replay it without --from-step", raw.run),
    };
    let run = RunId::new(raw.run.clone());
    let mut cleared = 0;
    for step in &order[start..] {
        for batch in 1..=manifest.batches {
            let key = format!("batch-{batch:06}");
            let mut found = clear_batch(env, &run, step, &key).await?;
            if found == 0 {
                // A step reading several steps keys each one's output `<sender>/<key>`.
                for sender in order {
                    found += clear_batch(env, &run, step, &format!("{sender}/{key}")).await?;
                }
            }
            cleared += found;
        }
    }
    ensure!(
        cleared > 0,
        "no ledger entry of {} is keyed by this run's batches, so --from-step cannot make it \
         process them again (steps after the distribution scheduler are keyed otherwise); \
         replay without --from-step, or redrive the step's DLQ",
        order[start..].join(", ")
    );
    println!(
        "Cleared {cleared} ledger entries of {} for run {}.",
        order[start..].join(", "),
        raw.run
    );
    Ok(())
}

/// Removes the ledger entries of `step` for the batch keyed `key` of `run`, or, if it went
/// as parts because it was over SQS's message limit, for its parts `<key>.1`, `<key>.2`, …;
/// how many there were.
async fn clear_batch(env: &Env, run: &RunId, step: &str, key: &str) -> Result<usize> {
    if clear_entry(env, run, step, key).await? {
        return Ok(1);
    }
    let mut parts = 0;
    while clear_entry(env, run, step, &format!("{key}.{}", parts + 1)).await? {
        parts += 1;
    }
    Ok(parts)
}

/// Removes the ledger entry of `step` for the record key `key` of `run`; whether there
/// was one.
async fn clear_entry(env: &Env, run: &RunId, step: &str, key: &str) -> Result<bool> {
    let key = etlgen_runtime::IdempotencyKey::derive(&env.outputs.pipeline, run, step, key);
    let ledger = etlgen_runtime::zones::ledger(&env.outputs.pipeline, step, &key);
    if env.read(&ledger).await?.is_none() {
        return Ok(false);
    }
    env.s3
        .delete_object()
        .bucket(&env.outputs.data_bucket)
        .key(&ledger)
        .send()
        .await
        .map_err(crate::sdk_error)
        .with_context(|| format!("clearing {ledger}"))?;
    Ok(true)
}

pub fn replay(args: Replay) -> Result<()> {
    block_on(async {
        let env = Env::open(&args.target).await?;
        let raw = find_raw_run(&env, &args.run).await?;
        replay_run(&env, &raw, args.from_step.as_deref()).await
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
            replay_run(&env, raw, None).await?;
        }
        println!("Backfill of {} to {}: {} runs replayed.", args.from, args.to, runs.len());
        Ok(())
    })
}
