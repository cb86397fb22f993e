//! `local run`: one run of the pipeline, from a file to a JSON summary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use etlgen_runtime::LogicalDate;
use etlgen_runtime::local::aws_sdk_s3::primitives::ByteStream;
use etlgen_runtime::local::aws_sdk_sqs::types::QueueAttributeName;
use etlgen_runtime::local::lambda::Status;
use etlgen_runtime::local::qualtrics::Stats;
use etlgen_runtime::local::{aws_sdk_s3, aws_sdk_sqs, reqwest};
use serde::Serialize;

use super::outputs::Outputs;
use super::stack::State;

/// `cargo xtask local run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The client file (CSV or JSON lines).
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// The run's logical date [default: today, UTC].
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    logical_date: Option<LogicalDate>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    timeout: u64,
}

/// Today's date, UTC.
fn today() -> Result<LogicalDate> {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?;
    etlgen_runtime::kinds::sources::http::date_of_timestamp(now.as_millis() as u64)
        .context("the clock is out of range")
}

fn parse_date(text: &str) -> Result<LogicalDate, String> {
    text.parse().map_err(|_| format!("{text:?} is not a date: use YYYY-MM-DD, such as 2024-05-01"))
}

/// What one step did during the run.
#[derive(Debug, Default, Serialize)]
pub struct StepSummary {
    pub invocations: u64,
    pub messages_done: u64,
    pub messages_failed: u64,
    pub dlq_depth: u64,
}

/// The summary `run` prints.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub status: &'static str,
    pub run_id: Option<String>,
    pub logical_date: Option<String>,
    pub seconds: f64,
    pub rows_in: Option<u64>,
    pub rows_rejected: Option<u64>,
    pub rows_per_second: Option<f64>,
    pub steps: BTreeMap<String, StepSummary>,
    pub api: Option<ApiSummary>,
}

/// The Qualtrics calls of the run (from the mock's counters).
#[derive(Debug, Serialize)]
pub struct ApiSummary {
    pub calls: u64,
    pub faulted: u64,
    pub by_endpoint: BTreeMap<String, u64>,
}

/// Everything observable at one instant.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub emulator: Status,
    pub queues: BTreeMap<String, u64>,
    pub dlqs: BTreeMap<String, u64>,
    pub qualtrics: Option<Stats>,
}

/// With `api`, the mock Qualtrics API's counters too.
pub async fn snapshot(state: &State, outputs: &Outputs, api: bool) -> Result<Snapshot> {
    let http = reqwest::Client::new();
    let emulator: Status = http
        .get(format!("{}/status", state.control_url))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("reaching the Lambda emulator (is the stack up?)")?
        .json()
        .await?;
    let qualtrics = match state.mock_qualtrics_port {
        Some(_) if api => Some(
            http.get(format!("{}/__mock/stats", state.qualtrics_url))
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .context("reaching the mock Qualtrics API")?
                .json()
                .await
                .context("reading the mock Qualtrics API's counters")?,
        ),
        _ => None,
    };
    let sqs = aws_sdk_sqs::Client::new(&state.aws().sdk_config().await?);
    let mut queues = BTreeMap::new();
    let mut dlqs = BTreeMap::new();
    for (step, info) in &outputs.steps {
        queues.insert(step.clone(), depth(&sqs, &info.queue_url, true).await?);
        dlqs.insert(step.clone(), depth(&sqs, &info.dlq_url, false).await?);
    }
    Ok(Snapshot { emulator, queues, dlqs, qualtrics })
}

/// Messages on a queue; with `in_flight`, also those being handled or delayed. A DLQ's depth
/// is `ApproximateNumberOfMessagesVisible`, the attribute its alarm watches.
pub async fn depth(sqs: &aws_sdk_sqs::Client, url: &str, in_flight: bool) -> Result<u64> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(crate::sdk_error)
        .with_context(|| format!("reading the attributes of {url}"))?;
    let attributes = out.attributes().cloned().unwrap_or_default();
    let get = |name: QueueAttributeName| -> u64 {
        attributes.get(&name).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    let mut total = get(QueueAttributeName::ApproximateNumberOfMessages);
    if in_flight {
        total += get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            + get(QueueAttributeName::ApproximateNumberOfMessagesDelayed);
    }
    Ok(total)
}

pub async fn run(args: RunArgs) -> Result<()> {
    let state = State::load()?;
    let outputs = Outputs::load()?;
    let date = match args.logical_date {
        Some(date) => date,
        None => today()?,
    };
    let name = args
        .input
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("--input {} has no file name", args.input.display()))?
        .to_owned();
    let body =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let before = snapshot(&state, &outputs, true).await?;
    let earlier = runs_of(&s3_client(&state).await?, &outputs.data_bucket, date).await?;
    let started = Instant::now();
    drop_input(&state, &outputs, date, &name, body).await?;
    let (status, mut after, run) =
        wait(&state, &outputs, &before, Duration::from_secs(args.timeout), Some((date, &earlier)))
            .await?;
    let seconds = started.elapsed().as_secs_f64();
    after.qualtrics = snapshot(&state, &outputs, true).await?.qualtrics;
    let s3 = s3_client(&state).await?;
    let manifest = match &run {
        Some(run) => read_manifest(&s3, &outputs.data_bucket, date, run).await?,
        None => None,
    };
    let summary = summarize(status, run, Some(date), seconds, manifest, &outputs, &before, &after);
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if summary.status != "complete" {
        bail!("the run did not complete: {}", summary.status);
    }
    Ok(())
}

async fn s3_client(state: &State) -> Result<aws_sdk_s3::Client> {
    let config = aws_sdk_s3::config::Builder::from(&state.aws().sdk_config().await?)
        .force_path_style(true)
        .build();
    Ok(aws_sdk_s3::Client::from_conf(config))
}

/// Puts the file where the pipeline's source finds it.
async fn drop_input(
    state: &State,
    outputs: &Outputs,
    date: LogicalDate,
    name: &str,
    body: Vec<u8>,
) -> Result<()> {
    let entry = outputs.entry.as_ref().context("this pipeline has no input step to start a run")?;
    match entry.source.as_str() {
        "s3" => {
            let bucket =
                outputs.landing_bucket.as_ref().context("no landing bucket in the outputs")?;
            let key = format!("landing/{date}/{name}");
            s3_client(state)
                .await?
                .put_object()
                .bucket(bucket)
                .key(&key)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(crate::sdk_error)
                .with_context(|| format!("uploading s3://{bucket}/{key}"))?;
        }
        "sftp" => {
            let dir = state.sftp_dir.as_ref().context(
                "this pipeline's source is SFTP, and the stack has no SFTP folder: bring it up again with `cargo xtask local down` and `cargo xtask local up`",
            )?;
            let path = dir.join(name);
            std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
            let tick = serde_json::json!({
                "source": "schedule",
                "schedule": "local",
                "scheduled_time": format!("{date}T06:00:00Z"),
                "execution_id": format!("local-{}", SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_millis()),
            });
            send(state, outputs, &entry.queue_url, tick.to_string()).await?;
        }
        "http" => {
            let text = String::from_utf8(body).context("an HTTP submission must be UTF-8 text")?;
            send(state, outputs, &entry.queue_url, text).await?;
        }
        other => bail!("unknown source {other:?} in the outputs of infra/envs/local"),
    }
    Ok(())
}

/// Sends one message; to a FIFO queue in the pipeline's message group, as a new message
/// (each `local run` is a new submission, never a duplicate of an earlier one).
async fn send(state: &State, outputs: &Outputs, queue_url: &str, body: String) -> Result<()> {
    let mut send = aws_sdk_sqs::Client::new(&state.aws().sdk_config().await?)
        .send_message()
        .queue_url(queue_url)
        .message_body(body);
    if queue_url.ends_with(".fifo") {
        let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_nanos();
        send = send
            .message_group_id(outputs.pipeline.clone())
            .message_deduplication_id(format!("local-run-{stamp}"));
    }
    send.send()
        .await
        .map_err(crate::sdk_error)
        .with_context(|| format!("sending to {queue_url}"))?;
    Ok(())
}

/// How long the stack may sit idle after the input was dropped, with no run started, before
/// the run is reported as never started (the source step dropped or rejected its input).
const IDLE_BEFORE_START: Duration = Duration::from_secs(30);

/// Waits until the run has started (a new run's raw copy exists under its date, or a
/// message reached a dead-letter queue; with `new_run` of `None`, at once) and then every
/// queue is drained and no invocation runs, three checks in a row (half a second apart).
/// Returns "complete", "failed" (a message reached a dead-letter queue), "not-started"
/// (idle for [`IDLE_BEFORE_START`] with no run) or "timeout", the last snapshot, and the
/// run's id.
pub async fn wait(
    state: &State,
    outputs: &Outputs,
    before: &Snapshot,
    timeout: Duration,
    new_run: Option<(LogicalDate, &BTreeSet<String>)>,
) -> Result<(&'static str, Snapshot, Option<String>)> {
    let deadline = Instant::now() + timeout;
    let s3 = s3_client(state).await?;
    let mut run = None;
    let mut quiet = 0;
    let mut idle_since = None;
    loop {
        let now = snapshot(state, outputs, false).await?;
        let dead =
            now.dlqs.iter().any(|(step, d)| *d > before.dlqs.get(step).copied().unwrap_or(0));
        if let (None, Some((date, earlier))) = (&run, new_run) {
            run =
                runs_of(&s3, &outputs.data_bucket, date).await?.difference(earlier).next().cloned();
        }
        let idle = now.emulator.in_flight() == 0 && now.queues.values().all(|d| *d == 0);
        let started = run.is_some() || dead || new_run.is_none();
        quiet = if idle && started { quiet + 1 } else { 0 };
        if quiet >= 3 {
            return Ok((if dead { "failed" } else { "complete" }, now, run));
        }
        idle_since = if idle { idle_since.or_else(|| Some(Instant::now())) } else { None };
        if !started && idle_since.is_some_and(|t| t.elapsed() >= IDLE_BEFORE_START) {
            eprintln!(
                "Every queue has been idle for {} s and no run started: the source step \
                 dropped or rejected the input; see its log in .local/logs/ and its \
                 reports/ in the data bucket.",
                IDLE_BEFORE_START.as_secs()
            );
            return Ok(("not-started", now, run));
        }
        if Instant::now() >= deadline {
            return Ok(("timeout", now, run));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `cargo xtask local wait`.
#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    timeout: u64,
}

/// Waits until every queue is drained and no invocation runs (after a redrive, a replay or
/// a backfill), and prints what each step did meanwhile. Fails if a dead-letter queue holds
/// messages at the end.
pub async fn wait_quiet(args: WaitArgs) -> Result<()> {
    let state = State::load()?;
    let outputs = Outputs::load()?;
    let before = snapshot(&state, &outputs, true).await?;
    let started = Instant::now();
    let (status, mut after, _) =
        wait(&state, &outputs, &before, Duration::from_secs(args.timeout), None).await?;
    after.qualtrics = snapshot(&state, &outputs, true).await?.qualtrics;
    let status = match status {
        "timeout" => "timeout",
        _ if after
            .dlqs
            .iter()
            .any(|(step, d)| *d > before.dlqs.get(step).copied().unwrap_or(0)) =>
        {
            "failed"
        }
        _ => "complete",
    };
    let summary = summarize(
        status,
        None,
        None,
        started.elapsed().as_secs_f64(),
        None,
        &outputs,
        &before,
        &after,
    );
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if status != "complete" {
        bail!("the pipeline did not settle cleanly: {status}");
    }
    Ok(())
}

/// The runs with a raw copy under `date`.
async fn runs_of(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    date: LogicalDate,
) -> Result<BTreeSet<String>> {
    let prefix = format!("raw/{date}/");
    let mut runs = BTreeSet::new();
    let mut pages = s3.list_objects_v2().bucket(bucket).prefix(&prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page
            .map_err(crate::sdk_error)
            .with_context(|| format!("listing s3://{bucket}/{prefix}"))?;
        runs.extend(
            page.contents().iter().filter_map(|o| {
                o.key()?.strip_prefix(&prefix)?.split('/').next().map(str::to_owned)
            }),
        );
    }
    Ok(runs)
}

async fn read_manifest(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    date: LogicalDate,
    run: &str,
) -> Result<Option<etlgen_runtime::kinds::RunManifest>> {
    let key = format!("runs/{date}/{run}/manifest.json");
    match s3.get_object().bucket(bucket).key(&key).send().await {
        Ok(object) => {
            let bytes = object.body.collect().await?.into_bytes();
            Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("reading {key}"))?))
        }
        Err(_) => Ok(None),
    }
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    status: &'static str,
    run_id: Option<String>,
    date: Option<LogicalDate>,
    seconds: f64,
    manifest: Option<etlgen_runtime::kinds::RunManifest>,
    outputs: &Outputs,
    before: &Snapshot,
    after: &Snapshot,
) -> Summary {
    let mut steps = BTreeMap::new();
    for (step, info) in &outputs.steps {
        let stats = |s: &Snapshot| {
            s.emulator.functions.get(&info.function_name).cloned().unwrap_or_default()
        };
        let (b, a) = (stats(before), stats(after));
        steps.insert(
            step.clone(),
            StepSummary {
                invocations: a.invocations.saturating_sub(b.invocations),
                messages_done: a.messages_succeeded.saturating_sub(b.messages_succeeded),
                messages_failed: a.messages_failed.saturating_sub(b.messages_failed),
                dlq_depth: after.dlqs.get(step).copied().unwrap_or(0),
            },
        );
    }
    let api = match (&before.qualtrics, &after.qualtrics) {
        (Some(b), Some(a)) => Some(ApiSummary {
            calls: a.total_calls.saturating_sub(b.total_calls),
            faulted: a.faults.values().sum::<u64>().saturating_sub(b.faults.values().sum::<u64>()),
            by_endpoint: a
                .calls
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(b.calls.get(k).copied().unwrap_or(0))))
                .filter(|(_, v)| *v > 0)
                .collect(),
        }),
        _ => None,
    };
    let rows_in = manifest.as_ref().map(|m| m.valid + m.rejected);
    Summary {
        status,
        run_id,
        logical_date: date.map(|d| d.to_string()),
        seconds,
        rows_in,
        rows_rejected: manifest.as_ref().map(|m| m.rejected),
        rows_per_second: rows_in.map(|r| r as f64 / seconds.max(0.001)),
        steps,
        api,
    }
}
