//! What the mock records: every effect ([`MockState`]) and every call ([`Stats`]).
//!
//! Both are plain data, serde round-trippable, so a test reads them in process
//! ([`super::RunningMock::state`]) or over HTTP (`GET /__mock/state`, `GET /__mock/stats`)
//! and deserializes them.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::FaultKind;

/// Every effect the API calls had, in the order they happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MockState {
    /// Created mailing lists (`POST directories/{dir}/mailinglists`), with their contacts.
    pub mailing_lists: Vec<MailingList>,
    /// Transaction-contacts imports (`POST …/transactioncontacts`).
    pub contact_imports: Vec<ContactImport>,
    /// Created distributions (`POST distributions`).
    pub distributions: Vec<Distribution>,
    /// Imported responses by survey id (`POST surveys/{id}/import-responses`).
    pub responses: BTreeMap<String, Vec<SurveyResponse>>,
    /// Response imports.
    pub response_imports: Vec<ResponseImport>,
    /// Response exports (`POST surveys/{id}/export-responses`).
    pub exports: Vec<ResponseExport>,
    /// Every `Idempotency-Key` that produced a successful answer, with that answer.
    pub idempotency_keys: Vec<IdempotencyRecord>,
}

impl MockState {
    /// The mailing list with this id.
    pub fn mailing_list(&self, id: &str) -> Option<&MailingList> {
        self.mailing_lists.iter().find(|l| l.id == id)
    }

    /// The responses recorded for a survey (empty when none).
    pub fn responses_of(&self, survey_id: &str) -> &[SurveyResponse] {
        self.responses.get(survey_id).map_or(&[], Vec::as_slice)
    }

    /// The distributions created for a survey.
    pub fn distributions_of(&self, survey_id: &str) -> Vec<&Distribution> {
        self.distributions
            .iter()
            .filter(|d| d.survey_id.as_deref() == Some(survey_id))
            .collect()
    }
}

/// A mailing list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailingList {
    /// `CG_…`.
    pub id: String,
    /// The directory (`POOL_…`) it was created in.
    pub directory_id: String,
    /// Its name.
    pub name: String,
    /// `ownerId`, when given.
    pub owner_id: Option<String>,
    /// When it was created, in milliseconds since the epoch (as the API reports it).
    pub creation_date: i64,
    /// When it or its contacts last changed, in milliseconds since the epoch.
    pub last_modified_date: i64,
    /// The contacts, by upsert key (`extRef`, or the e-mail of a contact without one).
    pub contacts: BTreeMap<String, Contact>,
}

/// A contact of a mailing list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// `CID_…`, assigned on the first write.
    pub id: String,
    /// The contact's fields as last written (later writes overwrite the fields they carry).
    pub fields: serde_json::Map<String, Value>,
    /// How many imports wrote this contact.
    pub writes: u32,
    /// The import that wrote it last.
    pub last_import_id: String,
}

/// A transaction-contacts import and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactImport {
    /// The import id (`CTR_…`).
    pub id: String,
    /// The directory.
    pub directory_id: String,
    /// The mailing list.
    pub mailing_list_id: String,
    /// Contacts that were new to the list.
    pub added: u64,
    /// Contacts that were already in the list.
    pub updated: u64,
    /// Contacts without `extRef` and without `email`.
    pub failed: u64,
    /// Status requests so far.
    pub polls: u32,
}

/// A distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// `EMD_…`.
    pub id: String,
    /// `surveyLink.surveyId`.
    pub survey_id: Option<String>,
    /// `recipients.mailingListId`.
    pub mailing_list_id: Option<String>,
    /// `sendDate`.
    pub send_date: Option<String>,
    /// `message`.
    pub message: Value,
    /// `header`.
    pub header: Value,
    /// The whole request body.
    pub request: Value,
    /// When it was created (`2024-05-01T09:00:00Z`).
    pub created_date: String,
}

/// One imported survey response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurveyResponse {
    /// `R_…`.
    pub id: String,
    /// The import that created it.
    pub import_id: String,
    /// The recorded date (`2024-05-01T09:00:00Z`): the file's `RecordedDate` column when it
    /// has one, else the time of the import. Exports filter on it.
    pub recorded_date: String,
    /// The row, by column.
    pub values: BTreeMap<String, String>,
}

/// A response import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseImport {
    /// `PGR_…`.
    pub id: String,
    /// The survey.
    pub survey_id: String,
    /// The rows imported.
    pub responses: u64,
    /// Progress requests so far.
    pub polls: u32,
}

/// A response export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseExport {
    /// `ES_…`.
    pub progress_id: String,
    /// The file id, revealed once the export is complete.
    pub file_id: String,
    /// The survey.
    pub survey_id: String,
    /// `csv`, `tsv`, `json` or `ndjson`.
    pub format: String,
    /// Whether the file is a zip.
    pub compress: bool,
    /// The responses in the file (those recorded in `[startDate, endDate)` at the start).
    pub response_ids: Vec<String>,
    /// Progress requests so far.
    pub polls: u32,
}

/// A successful call made with an `Idempotency-Key`, kept to replay its answer.
///
/// A key is scoped to the method and path it was first used with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The key.
    pub key: String,
    /// The method.
    pub method: String,
    /// The path below `/API/v3/`.
    pub path: String,
    /// A fingerprint of the body (FNV-1a 64 and length).
    pub fingerprint: String,
    /// The answer's `result`, replayed as is.
    pub result: Value,
    /// How many repeated requests got the stored answer.
    pub replays: u32,
}

/// How many calls came in, and what happened to them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Every call under `/API/v3/`.
    pub total_calls: u64,
    /// Calls by endpoint name: the framework's names ([`crate::qualtrics::endpoint`]) where
    /// they exist, else `unknown`.
    pub calls: BTreeMap<String, u64>,
    /// Injected faults by kind (`429`, `500`, `poison`, `slow`, `malformed`).
    pub faults: BTreeMap<FaultKind, u64>,
    /// Calls that changed [`MockState`] (created or wrote something).
    pub effects: u64,
    /// Calls answered from a stored `Idempotency-Key` answer.
    pub replays: u64,
    /// Calls rejected with 401.
    pub unauthorized: u64,
    /// OAuth tokens issued by `POST /oauth2/token` (not counted as calls).
    pub oauth_tokens: u64,
    /// The last [`Stats::RECENT`] calls, oldest first.
    pub recent: VecDeque<CallRecord>,
}

impl Stats {
    /// How many calls [`Stats::recent`] keeps.
    pub const RECENT: usize = 1000;

    /// The calls to one endpoint name.
    pub fn calls_to(&self, endpoint: &str) -> u64 {
        self.calls.get(endpoint).copied().unwrap_or(0)
    }

    /// The faults of one kind injected so far.
    pub fn faults_of(&self, kind: FaultKind) -> u64 {
        self.faults.get(&kind).copied().unwrap_or(0)
    }

    pub(super) fn record(&mut self, call: CallRecord) {
        if call.status == 401 {
            self.unauthorized += 1;
        }
        if call.effect {
            self.effects += 1;
        }
        if call.replay {
            self.replays += 1;
        }
        for fault in &call.faults {
            *self.faults.entry(*fault).or_default() += 1;
        }
        if self.recent.len() == Self::RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(call);
    }
}

/// One API call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The `meta.requestId` it was answered with.
    pub request_id: String,
    /// The method.
    pub method: String,
    /// The path below `/API/v3/`.
    pub path: String,
    /// The endpoint name.
    pub endpoint: String,
    /// The status it was answered with.
    pub status: u16,
    /// The faults injected into it.
    pub faults: Vec<FaultKind>,
    /// Whether it changed [`MockState`].
    pub effect: bool,
    /// Whether it was answered from a stored `Idempotency-Key` answer.
    pub replay: bool,
}
