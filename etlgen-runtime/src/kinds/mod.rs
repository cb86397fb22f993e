//! One module per catalog step kind.
//!
//! Each kind module has the same shape, so etlgen's templates are the same for every kind:
//!
//! - `pub const KIND: &str`: the catalog id;
//! - `pub const HOOKS: &[&str]`: the names of the overridable hook methods;
//! - `pub trait Hooks`: only default methods, each documented "By default …" and delegating
//!   to a public free function of the same name, so an override can still call it;
//! - the step type, generic over the hooks (`DistributionScheduler<H>`), implementing
//!   [`crate::step::Step`];
//! - `Settings`: the kind's `[steps.<name>]` keys.

pub mod contacts;
pub mod distribution;
pub mod exporter;
pub mod notifier;
pub mod responses;
pub mod sources;
pub mod validator;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::envelope::{Envelope, LogicalDate, RunId};
use crate::error::StepError;
use crate::ports::read_small;
use crate::step::StepContext;
use crate::zones;

/// One record: column name to value.
pub type Record = serde_json::Map<String, serde_json::Value>;

/// A batch of validated records, the payload between the validator and loaders.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordBatch {
    /// The records.
    pub records: Vec<Record>,
}

/// One output of a step: the payload for the next step and its record key.
#[derive(Debug, Clone, PartialEq)]
pub struct Output<T> {
    /// The record key of the next envelope (its idempotency key derives from it).
    pub record_key: String,
    /// The payload.
    pub payload: T,
}

impl<T> Output<T> {
    /// An output.
    pub fn new(record_key: impl Into<String>, payload: T) -> Self {
        Self {
            record_key: record_key.into(),
            payload,
        }
    }
}

/// Sends outputs to the next step.
pub async fn emit_all<I, T: Serialize>(
    input: &Envelope<I>,
    outputs: Vec<Output<T>>,
    cx: &StepContext,
) -> Result<(), StepError> {
    for output in outputs {
        cx.emit(&cx.next_envelope(input, output.record_key, output.payload))
            .await?;
    }
    Ok(())
}

/// The run manifest the validator writes once it knows how many batches a run has; the
/// fan-in of the distribution scheduler counts completed batches against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunManifest {
    /// Batches sent to the next step.
    pub batches: u64,
    /// Valid records.
    pub valid: u64,
    /// Rejected records.
    pub rejected: u64,
}

/// `runs/<date>/<run>/manifest.json`.
pub fn manifest_key(date: LogicalDate, run: &RunId) -> String {
    zones::run_state(date, run, "manifest.json")
}

/// `runs/<date>/<run>/batches/`: one marker per loaded batch.
pub fn batch_marker_prefix(date: LogicalDate, run: &RunId) -> String {
    zones::run_state(date, run, "batches/")
}

/// `runs/<date>/<run>/<step>/inputs/`: the inputs of a run a once-per-run step has read
/// (see [`all_inputs_come`]), each under its idempotency key.
pub fn input_marker_prefix(date: LogicalDate, run: &RunId, step: &str) -> String {
    zones::run_state(date, run, &format!("{step}/inputs/"))
}

/// Reads a small JSON state object.
pub async fn read_state<T: serde::de::DeserializeOwned>(
    cx: &StepContext,
    key: &str,
) -> Result<Option<T>, StepError> {
    match read_small(&*cx.services().objects, cx.data_bucket(), key).await? {
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
            StepError::permanent(format!("corrupt state object {key}")).with_source(e)
        })?)),
        None => Ok(None),
    }
}

/// Writes a small JSON state object.
pub async fn write_state<T: Serialize>(
    cx: &StepContext,
    key: &str,
    value: &T,
) -> Result<(), StepError> {
    let body = serde_json::to_vec(value)?;
    cx.services()
        .objects
        .put(cx.data_bucket(), key, body.into())
        .await
}

/// How many messages of a run a once-per-run step reads: `per_batch` for each batch the
/// validator emits, plus `per_run`. etlgen works both out from the pipeline's wiring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct RunInputs {
    /// Inputs per batch of valid records (a step before that sends one per batch).
    pub per_batch: u64,
    /// Inputs once per run (a step before that sends one per run).
    pub per_run: u64,
}

impl RunInputs {
    /// Whether any input is counted.
    pub fn counted(&self) -> bool {
        self.per_batch > 0 || self.per_run > 0
    }

    /// The inputs a run of `batches` validator batches brings, at least one.
    pub fn expected(&self, batches: u64) -> u64 {
        (self.per_batch.saturating_mul(batches))
            .saturating_add(self.per_run)
            .max(1)
    }
}

/// Marks `input` as come, then says whether every input of its run has: the run's
/// manifest (or `None` when no input is per batch and the manifest is not needed) once
/// they all have, `Err`-free `None` before. Each delivery marks before it counts, so the
/// last input to arrive finds them all, whatever the order or concurrency; a redelivery
/// marks the same object again. The markers are [`input_marker_prefix`]`<key>`.
///
/// Each marker holds the input's envelope as JSON, so that `cargo xtask replay
/// --from-step` can send a step the inputs of a run again when the steps that sent them
/// are not run again (a re-export of a run whose responses are imported already). A
/// replay from such a step clears everything under `runs/<date>/<run>/<step>/`: its
/// markers, claim and stored result, so the run is done again once its inputs have all
/// come back.
pub async fn all_inputs_come<T: Serialize>(
    input: &Envelope<T>,
    inputs: RunInputs,
    cx: &StepContext,
) -> Result<Option<Option<RunManifest>>, StepError> {
    let prefix = input_marker_prefix(input.logical_date, &input.run_id, cx.step_name());
    let objects = &cx.services().objects;
    let marker = format!("{prefix}{}", input.idempotency_key);
    let body = serde_json::to_vec(input)?;
    objects.put(cx.data_bucket(), &marker, body.into()).await?;
    let manifest =
        read_state::<RunManifest>(cx, &manifest_key(input.logical_date, &input.run_id)).await?;
    if manifest.is_none() && inputs.per_batch > 0 {
        tracing::info!("the run's manifest is not written yet; a later input completes it");
        return Ok(None);
    }
    let expected = inputs.expected(manifest.as_ref().map_or(0, |m| m.batches));
    let come = objects.list(cx.data_bucket(), &prefix).await?.len() as u64;
    tracing::info!(come, expected, "once-per-run fan-in check");
    Ok((come >= expected).then_some(manifest))
}

/// The outcome of [`claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This delivery owns the work, and nobody held it before.
    Won,
    /// This delivery owns the work, which a delivery may have started before (this one, or
    /// one that crashed and whose lease expired): look for what it left before doing it.
    Resumed,
    /// Another delivery owns it and its lease has not expired.
    HeldByOther,
}

#[derive(Serialize, Deserialize)]
struct ClaimRecord {
    owner: String,
    claimed_at_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Who holds a claim: this delivery, by its message id and attempt.
fn claim_owner(cx: &StepContext, attempt: u32) -> String {
    format!("{}#{attempt}", cx.message_id())
}

/// Claims once-per-run work (creating the run's list, scheduling its distribution) for this
/// delivery, identified by its message id and attempt.
///
/// The claim is created only if absent, so of two concurrent deliveries (two batches, or an
/// SQS duplicate) exactly one wins. A claim older than `runtime.claim_lease_seconds`
/// belongs to a delivery that crashed, and one given back by [`release`] to a delivery whose
/// request was answered with a failure; a redelivery takes either over by creating the
/// claim's next generation (`<key>.<n>`), again only if absent, so of the deliveries taking
/// it over at once exactly one wins. Overwriting the claim instead let two redeliveries that
/// came back together (after the same visibility timeout) both take it, and both create
/// the run's distribution.
pub async fn claim(cx: &StepContext, key: &str, attempt: u32) -> Result<Claim, StepError> {
    let owner = claim_owner(cx, attempt);
    let record = ClaimRecord {
        owner: owner.clone(),
        claimed_at_ms: now_ms(),
    };
    let body = Bytes::from(serde_json::to_vec(&record)?);
    let objects = &cx.services().objects;
    if (objects.put_if_absent(cx.data_bucket(), key, body.clone())).await? {
        return Ok(Claim::Won);
    }
    let (held, generation) = current_claim(cx, key).await?;
    let Some(existing) = read_state::<ClaimRecord>(cx, &held).await? else {
        return Err(StepError::retryable(format!("claim {held} vanished")));
    };
    if existing.owner == owner {
        return Ok(Claim::Resumed);
    }
    let lease_ms = cx.config().runtime.claim_lease_seconds.saturating_mul(1000);
    if now_ms().saturating_sub(existing.claimed_at_ms) > lease_ms {
        let next = generation_key(key, generation + 1);
        if objects.put_if_absent(cx.data_bucket(), &next, body).await? {
            tracing::warn!(claim = next, previous = %existing.owner, "took over an expired or released claim");
            return Ok(Claim::Resumed);
        }
    }
    Ok(Claim::HeldByOther)
}

/// The key of a claim's generation `n`: the claim itself, then `<key>.<n>` for each takeover.
fn generation_key(key: &str, generation: u64) -> String {
    if generation == 0 {
        key.to_owned()
    } else {
        format!("{key}.{generation}")
    }
}

/// The claim's latest generation: its key and number.
async fn current_claim(cx: &StepContext, key: &str) -> Result<(String, u64), StepError> {
    let prefix = format!("{key}.");
    let keys = (cx.services().objects)
        .list(cx.data_bucket(), &prefix)
        .await?;
    let generation = (keys.iter())
        .filter_map(|k| k.strip_prefix(&prefix)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    Ok((generation_key(key, generation), generation))
}

/// Gives back this delivery's claim `key` after its work failed on an answer (`error` has
/// a status: a 5xx, a 429), so the redelivery takes the work over at once, as
/// [`Claim::Resumed`], looking first for what the attempt left, instead of waiting out the
/// lease. The server has finished with an answered request, so nothing of it is still in
/// flight. After a timeout or a dropped connection the claim is kept for its lease: the
/// request may still be running on the server, and a takeover could create a second list
/// or distribution before it lands.
///
/// Without it, a 500 on creating a distribution held the run's claim for the whole lease
/// (`runtime.claim_lease_seconds`), and each redelivery in between was refused.
pub async fn release(
    cx: &StepContext,
    key: &str,
    attempt: u32,
    error: &StepError,
) -> Result<(), StepError> {
    if !error.is_retryable() || error.status().is_none() {
        return Ok(());
    }
    tracing::info!(claim = key, %error, "releasing the claim after an answered failure");
    give_back(cx, key, attempt).await
}

/// Gives back this delivery's claim `key` whatever became of its work, so the redelivery
/// takes it over at once, as [`Claim::Resumed`]. Only for work whose repetition costs
/// less than its loss: a notification that may have gone out is sent again rather than
/// held for the lease, which a few quick redeliveries would outlast into the DLQ.
pub async fn give_back(cx: &StepContext, key: &str, attempt: u32) -> Result<(), StepError> {
    let owner = claim_owner(cx, attempt);
    let (held, _) = current_claim(cx, key).await?;
    // Only the holder's own generation is given back; a later one is another delivery's.
    if read_state::<ClaimRecord>(cx, &held)
        .await?
        .is_none_or(|existing| existing.owner != owner)
    {
        return Ok(());
    }
    let record = ClaimRecord {
        owner,
        claimed_at_ms: 0,
    };
    let body = serde_json::to_vec(&record)?;
    (cx.services().objects)
        .put(cx.data_bucket(), &held, body.into())
        .await
}

/// Polls until `done` says the job finished, at most `max_polls` times, `interval` apart.
/// Running out of polls is retryable: the job is still running on the server.
pub async fn poll<T, F, Fut>(
    what: &str,
    interval: std::time::Duration,
    max_polls: u32,
    mut check: F,
) -> Result<T, StepError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, StepError>>,
{
    for attempt in 0..max_polls.max(1) {
        if attempt > 0 {
            tokio::time::sleep(interval).await;
        }
        if let Some(done) = check().await? {
            return Ok(done);
        }
    }
    Err(StepError::retryable(format!(
        "{what} still running after {max_polls} polls"
    )))
}
