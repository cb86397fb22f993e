//! The message every step reads and writes.
//!
//! Redelivery is normal on SQS, so every message carries what a step needs to be safe to
//! retry: the run it belongs to, the logical date it is for (never the wall clock), and a
//! deterministic idempotency key derived from the pipeline, run, step and the record's declared
//! key. The envelope format itself is versioned: a step refuses an envelope written by a newer
//! runtime instead of guessing at its meaning.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::macros::format_description;
use uuid::Uuid;

/// The envelope format this runtime writes and the newest one it reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// The UUIDv5 namespace of every etlgen idempotency key and run id.
///
/// Changing it would change every key, so it is fixed forever.
pub const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x6574_6c67_656e_4000_8000_6b65_7973_7631);

/// Why an envelope could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The message was written by a newer runtime than this one.
    #[error(
        "envelope schema_version {found} is newer than the newest this runtime reads ({supported}); \
         update the vendored etlgen-runtime (`etlgen update`) before replaying these messages"
    )]
    UnsupportedVersion {
        /// The version found in the message.
        found: u32,
        /// The newest version this runtime understands.
        supported: u32,
    },
    /// The message is not an envelope at all, or a field has the wrong type.
    #[error("message is not a valid envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A logical date was not a real `YYYY-MM-DD` date.
    #[error("invalid logical date {input:?}: expected YYYY-MM-DD")]
    InvalidDate {
        /// The rejected text.
        input: String,
    },
}

/// The date a run is *for*, serialized as `YYYY-MM-DD`.
///
/// A retry or a backfill on another day still processes this date; nothing in the runtime
/// reads the wall-clock date to decide what a run is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogicalDate(time::Date);

impl LogicalDate {
    /// Wraps a calendar date.
    pub fn new(date: time::Date) -> Self {
        Self(date)
    }

    /// Builds a date from its parts, failing on impossible dates such as February 30.
    pub fn from_ymd(year: i32, month: u8, day: u8) -> Result<Self, EnvelopeError> {
        let invalid = || EnvelopeError::InvalidDate {
            input: format!("{year:04}-{month:02}-{day:02}"),
        };
        let month = time::Month::try_from(month).map_err(|_| invalid())?;
        time::Date::from_calendar_date(year, month, day)
            .map(Self)
            .map_err(|_| invalid())
    }

    /// The calendar date.
    pub fn date(self) -> time::Date {
        self.0
    }

    /// Midnight UTC at the start of this date.
    pub fn start_utc(self) -> time::OffsetDateTime {
        self.0.midnight().assume_utc()
    }
}

impl fmt::Display for LogicalDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = (self.0.year(), u8::from(self.0.month()), self.0.day());
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl FromStr for LogicalDate {
    type Err = EnvelopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        time::Date::parse(s, format_description!("[year]-[month]-[day]"))
            .map(Self)
            .map_err(|_| EnvelopeError::InvalidDate { input: s.into() })
    }
}

impl Serialize for LogicalDate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LogicalDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The identity of one run of a pipeline (one input file, one submission, one schedule tick).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// Uses a run id chosen elsewhere (an operator's backfill, a test).
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// Derives a run id from what identifies the input, so the same input redelivered gets
    /// the same run: for an S3 object, its bucket, key and ETag.
    pub fn derive(pipeline: &str, source_identity: &str) -> Self {
        Self(
            Uuid::new_v5(
                &KEY_NAMESPACE,
                joined(&["run", pipeline, source_identity]).as_bytes(),
            )
            .to_string(),
        )
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A deterministic key naming one effect: UUIDv5 over pipeline, run, step and record key.
///
/// Redelivering a message reproduces the same key, which is what lets every effect (an API
/// call with `Idempotency-Key`, a ledger entry, a FIFO deduplication id) happen once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdempotencyKey(Uuid);

impl IdempotencyKey {
    /// Derives the key. The parts are joined with a separator that cannot occur in them, so
    /// `("a-b", "c")` and `("a", "b-c")` give different keys.
    pub fn derive(pipeline: &str, run_id: &RunId, step: &str, record_key: &str) -> Self {
        let name = joined(&["effect", pipeline, run_id.as_str(), step, record_key]);
        Self(Uuid::new_v5(&KEY_NAMESPACE, name.as_bytes()))
    }

    /// The key as a UUID.
    pub fn uuid(self) -> Uuid {
        self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn joined(parts: &[&str]) -> String {
    parts.join("\u{1f}")
}

/// One message between two steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The envelope format version ([`ENVELOPE_VERSION`] when written by this runtime).
    pub schema_version: u32,
    /// The run this message belongs to.
    pub run_id: RunId,
    /// The date the run is for.
    pub logical_date: LogicalDate,
    /// The pipeline (client automation) name.
    pub pipeline: String,
    /// The step this message is addressed to.
    pub step: String,
    /// The delivery attempt, starting at 1. On receipt the adapter sets it from SQS's
    /// `ApproximateReceiveCount`; it never takes part in the idempotency key.
    pub attempt: u32,
    /// The record's declared key (a primary key, a batch number): unique within the run.
    pub record_key: String,
    /// Derived from `pipeline`, `run_id`, `step` and `record_key`; see [`IdempotencyKey`].
    pub idempotency_key: IdempotencyKey,
    /// The version of the payload's record schema, so a replay of old data maps correctly.
    pub record_schema: u32,
    /// The step's input.
    pub payload: T,
}

#[derive(Deserialize)]
struct VersionProbe {
    schema_version: Option<u32>,
}

impl<T> Envelope<T> {
    /// Starts a run's first envelope for `step`.
    pub fn new(
        pipeline: impl Into<String>,
        run_id: RunId,
        logical_date: LogicalDate,
        step: impl Into<String>,
        record_key: impl Into<String>,
        payload: T,
    ) -> Self {
        let (pipeline, step, record_key) = (pipeline.into(), step.into(), record_key.into());
        let idempotency_key = IdempotencyKey::derive(&pipeline, &run_id, &step, &record_key);
        Self {
            schema_version: ENVELOPE_VERSION,
            run_id,
            logical_date,
            pipeline,
            step,
            attempt: 1,
            record_key,
            idempotency_key,
            record_schema: 1,
            payload,
        }
    }

    /// Sets the payload's record schema version.
    pub fn with_record_schema(mut self, version: u32) -> Self {
        self.record_schema = version;
        self
    }

    /// The envelope for the next step: same run, date and pipeline, a new step and record
    /// key, attempt reset to 1, and the key derived again for the new step.
    pub fn next<U>(&self, step: &str, record_key: impl Into<String>, payload: U) -> Envelope<U> {
        Envelope::new(
            self.pipeline.clone(),
            self.run_id.clone(),
            self.logical_date,
            step,
            record_key,
            payload,
        )
        .with_record_schema(self.record_schema)
    }

    /// Like [`Envelope::next`], keeping this envelope's record key.
    pub fn forward<U>(&self, step: &str, payload: U) -> Envelope<U> {
        self.next(step, self.record_key.clone(), payload)
    }

    /// True when the stored key matches the other fields (a hand-edited replay might not).
    pub fn key_is_consistent(&self) -> bool {
        self.idempotency_key
            == IdempotencyKey::derive(&self.pipeline, &self.run_id, &self.step, &self.record_key)
    }
}

impl<T: Serialize> Envelope<T> {
    /// Serializes the envelope as a message body.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

impl Envelope<()> {
    /// Serializes the envelope with `payload_json`, the payload already serialized, copied
    /// in as it is: the same text `to_json` gives for an envelope holding that payload.
    ///
    /// This lets a payload be serialized once for every reader of a fan-out, and lets the
    /// validator write its batches without serde's call per value. `payload_json` must be
    /// one JSON value; every caller in this crate makes it with serde_json or with a writer
    /// tested against serde_json's output.
    pub(crate) fn to_json_with_payload(
        &self,
        payload_json: &str,
    ) -> Result<String, serde_json::Error> {
        // `payload` is the last field, and `()` serializes as `null`.
        const TAIL: &str = "null}";
        let mut body = serde_json::to_string(self)?;
        debug_assert!(body.ends_with(TAIL), "{body}");
        body.truncate(body.len() - TAIL.len());
        body.reserve(payload_json.len() + 1);
        body.push_str(payload_json);
        body.push('}');
        Ok(body)
    }
}

impl<T: serde::de::DeserializeOwned> Envelope<T> {
    /// Reads a message body, refusing envelopes newer than [`ENVELOPE_VERSION`] before
    /// looking at anything else in them.
    pub fn from_json(body: &str) -> Result<Self, EnvelopeError> {
        let probe: VersionProbe = serde_json::from_str(body)?;
        if let Some(found) = probe.schema_version
            && found > ENVELOPE_VERSION
        {
            return Err(EnvelopeError::UnsupportedVersion {
                found,
                supported: ENVELOPE_VERSION,
            });
        }
        Ok(serde_json::from_str(body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date() -> LogicalDate {
        "2024-05-01".parse().unwrap()
    }

    #[test]
    fn logical_date_round_trips_as_iso_text() {
        let d = date();
        assert_eq!(d.to_string(), "2024-05-01");
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"2024-05-01\"");
        let back: LogicalDate = serde_json::from_str("\"2024-05-01\"").unwrap();
        assert_eq!(back, d);
        assert!("2024-02-30".parse::<LogicalDate>().is_err());
        assert!("01/05/2024".parse::<LogicalDate>().is_err());
        assert!(LogicalDate::from_ymd(2024, 13, 1).is_err());
        assert_eq!(LogicalDate::from_ymd(2024, 5, 1).unwrap(), d);
    }

    #[test]
    fn idempotency_key_is_deterministic_and_sensitive_to_every_part() {
        let run = RunId::new("r1");
        let k = IdempotencyKey::derive("p", &run, "s", "k");
        assert_eq!(k, IdempotencyKey::derive("p", &run, "s", "k"));
        assert_eq!(k.uuid().get_version_num(), 5);
        let others = [
            IdempotencyKey::derive("q", &run, "s", "k"),
            IdempotencyKey::derive("p", &RunId::new("r2"), "s", "k"),
            IdempotencyKey::derive("p", &run, "t", "k"),
            IdempotencyKey::derive("p", &run, "s", "l"),
            IdempotencyKey::derive("p", &run, "s-k", ""),
        ];
        for other in others {
            assert_ne!(k, other);
        }
    }

    #[test]
    fn run_id_derivation_is_stable_per_source() {
        assert_eq!(RunId::derive("p", "b/k@e1"), RunId::derive("p", "b/k@e1"));
        assert_ne!(RunId::derive("p", "b/k@e1"), RunId::derive("p", "b/k@e2"));
    }

    #[test]
    fn envelope_round_trips_and_next_derives_a_new_key() {
        let env = Envelope::new("acme", RunId::new("r1"), date(), "validate", "file", 7u32);
        let json = env.to_json().unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["logical_date"], "2024-05-01");
        assert_eq!(value["schema_version"], ENVELOPE_VERSION);
        let back: Envelope<u32> = Envelope::from_json(&json).unwrap();
        assert_eq!(back, env);
        assert!(back.key_is_consistent());

        let next = env.next("import", "batch-1", "x").with_record_schema(2);
        assert_eq!(next.run_id, env.run_id);
        assert_eq!(next.logical_date, env.logical_date);
        assert_eq!(next.step, "import");
        assert_eq!(next.attempt, 1);
        assert_eq!(next.record_schema, 2);
        assert_ne!(next.idempotency_key, env.idempotency_key);
        assert_eq!(
            next.idempotency_key,
            IdempotencyKey::derive("acme", &RunId::new("r1"), "import", "batch-1")
        );
    }

    #[test]
    fn a_payload_serialized_apart_gives_the_same_message() {
        let payload = serde_json::json!({"records": [{"a": "x\"y", "n": 1}], "z": null});
        let env = Envelope::new("acme", RunId::new("r1"), date(), "s", "k", payload.clone());
        let header = env.forward("s", ());
        let spliced = header
            .to_json_with_payload(&serde_json::to_string(&payload).unwrap())
            .unwrap();
        assert_eq!(spliced, env.to_json().unwrap());
        let back: Envelope<serde_json::Value> = Envelope::from_json(&spliced).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn newer_envelope_versions_are_refused_with_a_clear_error() {
        let env = Envelope::new("acme", RunId::new("r1"), date(), "s", "k", 1u8);
        let mut value = serde_json::to_value(&env).unwrap();
        value["schema_version"] = serde_json::json!(ENVELOPE_VERSION + 1);
        // A future version may change any other field too; the check must come first.
        value["payload"] = serde_json::json!({"shape": "unknown"});
        let err = Envelope::<u8>::from_json(&value.to_string()).unwrap_err();
        assert!(
            matches!(err, EnvelopeError::UnsupportedVersion { found, .. } if found == ENVELOPE_VERSION + 1)
        );
        assert!(err.to_string().contains("etlgen update"), "{err}");
        // A deploy under way, not bad data: retried into the DLQ, never acknowledged.
        assert!(crate::StepError::from(err).is_retryable());
        let malformed = Envelope::<u8>::from_json("{}").unwrap_err();
        assert!(!crate::StepError::from(malformed).is_retryable());
    }

    #[test]
    fn malformed_messages_are_reported_as_such() {
        let err = Envelope::<u8>::from_json("{\"schema_version\":1}").unwrap_err();
        assert!(matches!(err, EnvelopeError::Malformed(_)));
        assert!(Envelope::<u8>::from_json("not json").is_err());
    }
}
