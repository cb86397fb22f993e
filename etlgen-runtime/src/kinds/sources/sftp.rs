//! The `sftp-poller` step: copies new files from a client's SFTP server to the landing prefix.
//!
//! An EventBridge schedule puts a message on the poller's queue; each tick lists the remote
//! directory, copies every selected file not copied before into
//! `<landing_prefix><logical_date>/<copy id>/<file name>` in the data bucket, and
//! remembers it (`state/<pipeline>/<step>/copied/<copy id>`). The copy id is derived from
//! the file's path, size and modification time, so a file replaced on the server is copied
//! again. The data bucket's notification of [`LANDING`] then starts the validator, so every
//! landing key must be under it: a file landed anywhere else would start nothing.
//!
//! Each copy must start one run, however often a tick is retried:
//! - **The copy id is in the landing key.** The validator names a run after the object's
//!   ETag, which under SSE-KMS differs for every upload of the same bytes. A tick killed
//!   between the upload and its marker finds the object already at its key and writes the
//!   marker without uploading again, where a second upload would have started a second run.
//! - **A file still being written is left for a later tick.** One modified within
//!   `settle_seconds` of the tick may be half uploaded; copying it would start a run on the
//!   part, then another on the whole file once its size and time change.
//! - **One file that cannot be copied does not hold the others back.** The tick copies the
//!   rest, then fails with the first error, so the tick is retried and, if the file stays
//!   unreadable (its permissions, say), reaches the dead-letter queue and its alarm. What
//!   was copied is remembered, so a redrive copies only what is left.

use bytes::Bytes;
use serde::Deserialize;

use crate::envelope::{Envelope, RunId};
use crate::error::StepError;
use crate::kinds::sources::http::date_of_timestamp;
use crate::ports::{RemoteFile, read_small};
use crate::step::{InitContext, Message, Step, StepContext};
use crate::zones;

/// The catalog id.
pub const KIND: &str = "sftp-poller";

/// The prefix of the data bucket whose new objects the validator is notified of (the
/// generated Terraform's `filter_prefix`), and the poller's role may write.
pub const LANDING: &str = "landing/";

/// The overridable hook methods of [`Hooks`].
pub const HOOKS: &[&str] = &["select", "landing_key"];

/// `[steps.<name>]` of an SFTP poller.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// The remote directory to poll.
    pub remote_dir: String,
    /// The landing prefix: [`LANDING`] or a prefix under it.
    #[serde(default = "default_landing_prefix")]
    pub landing_prefix: String,
    /// Only names ending with one of these are copied; all files when empty.
    #[serde(default)]
    pub suffixes: Vec<String>,
    /// A file modified less than this many seconds before the tick may still be being
    /// written, and waits for a later tick.
    #[serde(default = "default_settle_seconds")]
    pub settle_seconds: u64,
}

fn default_settle_seconds() -> u64 {
    60
}

fn default_landing_prefix() -> String {
    LANDING.to_owned()
}

/// Settings an earlier framework read and this one refuses, so they are not ignored
/// silently.
#[derive(Deserialize)]
struct Refused {
    landing_bucket: Option<serde::de::IgnoredAny>,
}

/// Why a landing key cannot start a run, if it cannot: it is outside [`LANDING`].
pub fn check_landing_key(key: &str) -> Result<(), String> {
    if key.starts_with(LANDING) && key.len() > LANDING.len() {
        Ok(())
    } else {
        Err(format!(
            "landing key {key:?} is not under {LANDING:?}: only new objects there start the \
             validator, and only there may the poller write"
        ))
    }
}

/// The client's hooks of an SFTP poller.
pub trait Hooks: Send + Sync + 'static {
    /// Whether a remote file should be copied.
    ///
    /// By default, files whose name ends with one of `suffixes`; see [`select`].
    fn select(&self, file: &RemoteFile, settings: &Settings) -> bool {
        select(file, settings)
    }

    /// Where a copied file lands.
    ///
    /// A key that holds the file's [`copy_id`] and exists already counts as this version
    /// copied (by an attempt that died before its marker); a key without it is uploaded to
    /// every time the file is copied.
    ///
    /// By default `<landing_prefix><logical_date>/<copy id>/<file name>`; see
    /// [`landing_key`].
    fn landing_key(
        &self,
        file: &RemoteFile,
        tick: &Envelope<serde_json::Value>,
        settings: &Settings,
    ) -> String {
        landing_key(file, tick, settings)
    }
}

/// The default of [`Hooks::select`].
pub fn select(file: &RemoteFile, settings: &Settings) -> bool {
    settings.suffixes.is_empty()
        || settings
            .suffixes
            .iter()
            .any(|s| file.path.ends_with(s.as_str()))
}

/// The default of [`Hooks::landing_key`].
pub fn landing_key(
    file: &RemoteFile,
    tick: &Envelope<serde_json::Value>,
    settings: &Settings,
) -> String {
    format!(
        "{}{}/{}/{}",
        settings.landing_prefix,
        tick.logical_date,
        copy_id(&tick.pipeline, file),
        zones::file_name(&file.path)
    )
}

/// The id of one version of a remote file (its path, size and modification time): a
/// UUID, the same for every tick that sees that version. It names the version's marker and,
/// by default, its landing folder.
pub fn copy_id(pipeline: &str, file: &RemoteFile) -> String {
    let version = format!("{}@{}@{}", file.path, file.size, file.modified);
    // A run id's derivation, as the markers of files copied before have always been named.
    RunId::derive(pipeline, &version).as_str().to_owned()
}

/// Whether `file` was modified less than `settle_seconds` before `now` (seconds since the
/// epoch), or after it: it may still be being written. A server that gives no time (0)
/// cannot tell, and its files are copied.
pub fn settling(file: &RemoteFile, now: u64, settle_seconds: u64) -> bool {
    file.modified != 0 && file.modified.saturating_add(settle_seconds) > now
}

/// The SFTP poller step.
#[derive(Debug, Clone)]
pub struct SftpPoller<H> {
    /// The client's hooks.
    pub hooks: H,
    /// The settings.
    pub settings: Settings,
}

/// The date of a tick's `scheduled_time` (RFC 3339, as EventBridge Scheduler fills in
/// `<aws.scheduler.scheduled-time>`).
pub fn scheduled_date(tick: &serde_json::Value) -> Option<crate::envelope::LogicalDate> {
    tick.get("scheduled_time")?
        .as_str()?
        .get(..10)?
        .parse()
        .ok()
}

impl<H: Hooks + Default> Step for SftpPoller<H> {
    type Input = serde_json::Value;
    const KIND: &'static str = KIND;
    const USES_QUALTRICS: bool = false;
    const USES_SFTP: bool = true;

    /// Refuses a `landing_bucket` (files land in the data bucket, the only one the validator
    /// is notified of and the poller's role may write) and a `landing_prefix` outside
    /// [`LANDING`].
    fn init(cx: &InitContext<'_>) -> Result<Self, crate::Error> {
        let step = cx.step_name;
        if cx.settings::<Refused>()?.landing_bucket.is_some() {
            return Err(format!(
                "steps.{step}.landing_bucket is not supported: the poller lands files in the \
                 data bucket, under {LANDING:?}, the only place the validator is notified of \
                 and the poller may write. Remove it"
            )
            .into());
        }
        let settings: Settings = cx.settings()?;
        if !settings.landing_prefix.starts_with(LANDING) {
            return Err(format!(
                "steps.{step}.landing_prefix = {:?} must start with {LANDING:?}: only new \
                 objects there start the validator",
                settings.landing_prefix
            )
            .into());
        }
        Ok(Self {
            hooks: H::default(),
            settings,
        })
    }

    /// A schedule tick is not an envelope: it becomes one for the day it was scheduled for
    /// (its `scheduled_time`), so a late or retried tick polls for its own date; a tick
    /// without one is for the day SQS received it.
    fn parse(
        &self,
        message: &Message<'_>,
        cx: &StepContext,
    ) -> Result<Envelope<serde_json::Value>, StepError> {
        if let Ok(envelope) = crate::step::parse(message) {
            return Ok(envelope);
        }
        let tick: serde_json::Value =
            serde_json::from_str(message.body).unwrap_or(serde_json::Value::Null);
        let date = scheduled_date(&tick)
            .or_else(|| message.sent_timestamp_ms.and_then(date_of_timestamp))
            .ok_or_else(|| StepError::permanent("schedule tick without SentTimestamp"))?;
        let pipeline = &cx.config().pipeline.name;
        Ok(Envelope::new(
            pipeline.clone(),
            RunId::derive(pipeline, &format!("tick:{}", message.id)),
            date,
            cx.step_name(),
            "tick",
            tick,
        ))
    }

    async fn process(
        &self,
        tick: &Envelope<serde_json::Value>,
        cx: &StepContext,
    ) -> Result<(), StepError> {
        let sftp = &cx.services().sftp;
        let bucket = cx.data_bucket().to_owned();
        let now = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH))
            .map_or(0, |since| since.as_secs());
        let (mut selected, mut failed) = (0usize, Vec::new());
        for file in sftp.list(&self.settings.remote_dir).await? {
            if !self.hooks.select(&file, &self.settings) {
                continue;
            }
            if settling(&file, now, self.settings.settle_seconds) {
                tracing::info!(remote = %file.path, "modified too recently; left for a later tick");
                continue;
            }
            selected += 1;
            if let Err(e) = self.copy(&file, tick, cx, &bucket).await {
                tracing::warn!(remote = %file.path, error = %e.chain(), "not copied; copying the others");
                failed.push((file.path, e));
            }
        }
        let count = failed.len();
        // Retried if any file may copy on a retry; named by that file, else the first.
        let retry = failed.iter().position(|(_, e)| e.is_retryable());
        let Some((path, first)) = failed.into_iter().nth(retry.unwrap_or(0)) else {
            return Ok(());
        };
        let message = format!(
            "{count} of {selected} selected files not copied ({path}: {}); \
             the copied ones are remembered, and a retry or redrive copies the rest",
            first.message()
        );
        Err(if retry.is_some() {
            StepError::retryable(message)
        } else {
            StepError::permanent(message)
        }
        .with_source(first))
    }
}

impl<H: Hooks> SftpPoller<H> {
    /// Copies one file unless its marker says it was; see the module's doc for the order.
    async fn copy(
        &self,
        file: &RemoteFile,
        tick: &Envelope<serde_json::Value>,
        cx: &StepContext,
        bucket: &str,
    ) -> Result<(), StepError> {
        let (sftp, objects) = (&cx.services().sftp, &cx.services().objects);
        let id = copy_id(&tick.pipeline, file);
        let marker = format!("state/{}/{}/copied/{id}", tick.pipeline, cx.step_name());
        if read_small(&**objects, cx.data_bucket(), &marker)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let key = self.hooks.landing_key(file, tick, &self.settings);
        check_landing_key(&key)
            .map_err(|why| StepError::permanent(format!("the landing_key hook: {why}")))?;
        // Only a key naming this version says the object is this version's: a hook's key
        // without the id may hold an older version of the file.
        let versioned = key.contains(&id);
        if versioned && objects.list(bucket, &key).await?.contains(&key) {
            tracing::info!(remote = %file.path, landing = %key, "landed by an earlier attempt");
        } else {
            // Streamed: a client file of any size is copied with one part in memory.
            let body = sftp.open(&file.path).await?;
            objects.put_stream(bucket, &key, body).await?;
            tracing::info!(remote = %file.path, landing = %key, "copied from SFTP");
        }
        objects
            .put(cx.data_bucket(), &marker, Bytes::from(key))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_is_for_the_date_it_was_scheduled_for() {
        let tick =
            serde_json::json!({"source": "schedule", "scheduled_time": "2024-05-01T06:00:00Z"});
        assert_eq!(scheduled_date(&tick), Some("2024-05-01".parse().unwrap()));
        assert_eq!(
            scheduled_date(&serde_json::json!({"source": "schedule"})),
            None
        );
        assert_eq!(
            scheduled_date(
                &serde_json::json!({"scheduled_time": "<aws.scheduler.scheduled-time>"})
            ),
            None
        );
    }
}
