//! The `sftp-poller` step: copies new files from a client's SFTP server to the landing prefix.
//!
//! An EventBridge schedule puts a message on the poller's queue; each tick lists the remote
//! directory, copies every selected file not copied before into
//! `<landing_prefix><logical_date>/<file name>` in the landing bucket, and remembers it
//! (`state/<pipeline>/<step>/copied/…`, keyed by path, size and modification time, so a
//! file replaced on the server is copied again). The S3 notification of the landing prefix
//! then starts the validator.

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

/// The overridable hook methods of [`Hooks`].
pub const HOOKS: &[&str] = &["select", "landing_key"];

/// `[steps.<name>]` of an SFTP poller.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// The remote directory to poll.
    pub remote_dir: String,
    /// The bucket of the landing prefix; the data bucket when absent.
    #[serde(default)]
    pub landing_bucket: Option<String>,
    /// The landing prefix.
    #[serde(default = "default_landing_prefix")]
    pub landing_prefix: String,
    /// Only names ending with one of these are copied; all files when empty.
    #[serde(default)]
    pub suffixes: Vec<String>,
}

fn default_landing_prefix() -> String {
    "landing/".to_owned()
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
    /// By default `<landing_prefix><logical_date>/<file name>`; see [`landing_key`].
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
        "{}{}/{}",
        settings.landing_prefix,
        tick.logical_date,
        zones::file_name(&file.path)
    )
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

    fn init(cx: &InitContext<'_>) -> Result<Self, crate::Error> {
        Ok(Self {
            hooks: H::default(),
            settings: cx.settings()?,
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
        let objects = &cx.services().objects;
        let bucket = self
            .settings
            .landing_bucket
            .clone()
            .unwrap_or_else(|| cx.data_bucket().to_owned());
        for file in sftp.list(&self.settings.remote_dir).await? {
            if !self.hooks.select(&file, &self.settings) {
                continue;
            }
            let marker = format!(
                "state/{}/{}/copied/{}",
                tick.pipeline,
                cx.step_name(),
                crate::envelope::RunId::derive(
                    &tick.pipeline,
                    &format!("{}@{}@{}", file.path, file.size, file.modified)
                )
            );
            if read_small(&**objects, cx.data_bucket(), &marker)
                .await?
                .is_some()
            {
                continue;
            }
            // Streamed: a client file of any size is copied with one part in memory.
            let body = sftp.open(&file.path).await?;
            let key = self.hooks.landing_key(&file, tick, &self.settings);
            objects.put_stream(&bucket, &key, body).await?;
            objects
                .put(cx.data_bucket(), &marker, Bytes::from(key.clone()))
                .await?;
            tracing::info!(remote = %file.path, landing = %key, "copied from SFTP");
        }
        Ok(())
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
