//! The `contact-importer` step: a batch of records into an XM Directory mailing list.
//!
//! It uses the run's mailing list (created once per run, idempotently: a claim object makes
//! sure two batches or two deliveries never create two lists) or a configured one, imports
//! the batch with the bulk transaction-contacts import, which upserts on `extRef`, waits
//! for the import to finish, and marks the batch done in the run state for the fan-in.
//! The single-contact endpoint is never used: it creates duplicates in the directory.
//!
//! A batch that fails permanently (a record without its `extRef`, an import Qualtrics
//! reports `failed`) is rejected, as the runner rejects any message, and still marked done
//! with its contacts counted as failed, and passed on: otherwise the run's fan-in would wait
//! for it forever, and the other batches' contacts would never get their distribution.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::envelope::Envelope;
use crate::error::StepError;
use crate::kinds::{Claim, claim, release};
use crate::kinds::{
    Output, Record, RecordBatch, batch_marker_prefix, emit_all, poll, read_state, write_state,
};
use crate::qualtrics::{ApiRequest, endpoint, find_in_pages};
use crate::step::{InitContext, Step, StepContext};
use crate::zones;

/// The catalog id.
pub const KIND: &str = "contact-importer";

/// The overridable hook methods of [`Hooks`].
pub const HOOKS: &[&str] = &["map", "build_request", "handle_response", "choose_output"];

/// Which record columns feed the contact fields; the other columns become embedded data.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Columns {
    /// `firstName`.
    pub first_name: String,
    /// `lastName`.
    pub last_name: String,
    /// `email`.
    pub email: String,
    /// `phone`.
    pub phone: String,
    /// `extRef`, the upsert key.
    pub ext_ref: String,
    /// `language`.
    pub language: String,
}

impl Default for Columns {
    fn default() -> Self {
        let s = |v: &str| v.to_owned();
        Self {
            first_name: s("first_name"),
            last_name: s("last_name"),
            email: s("email"),
            phone: s("phone"),
            ext_ref: s("id"),
            language: s("language"),
        }
    }
}

/// `[steps.<name>]` of a contact importer.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// The XM Directory (`POOL_…`).
    pub directory_id: String,
    /// A fixed mailing list (`CG_…`); else one list per run is created.
    #[serde(default)]
    pub mailing_list_id: Option<String>,
    /// The owner of created lists (`UR_…`).
    #[serde(default)]
    pub owner_id: Option<String>,
    /// The column mapping.
    #[serde(default)]
    pub columns: Columns,
    /// Milliseconds between import status polls.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// Status polls before giving up (retryable).
    #[serde(default = "default_max_polls")]
    pub max_polls: u32,
}

fn default_poll_ms() -> u64 {
    1000
}

fn default_max_polls() -> u32 {
    30
}

/// One contact of a transaction-contacts import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    /// First name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// E-mail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// The external reference: the upsert key.
    pub ext_ref: String,
    /// Language code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Everything else.
    pub embedded_data: serde_json::Map<String, Value>,
}

/// What the step emits per batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactsImported {
    /// The mailing list the batch went into.
    pub mailing_list_id: String,
    /// The import job.
    pub import_id: String,
    /// Contacts added, updated and failed.
    pub added: u64,
    /// Contacts updated.
    pub updated: u64,
    /// Contacts that failed.
    pub failed: u64,
}

/// The status of a finished import, as `GET …/transactioncontacts/{id}` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ImportStatus {
    /// The import job.
    #[serde(default)]
    pub id: String,
    /// The status text.
    #[serde(default)]
    pub status: String,
    /// Counts.
    #[serde(default)]
    pub added: u64,
    /// Counts.
    #[serde(default)]
    pub updated: u64,
    /// Counts.
    #[serde(default)]
    pub failed: u64,
}

/// The client's hooks of a contact importer.
pub trait Hooks: Send + Sync + 'static {
    /// Turns a record into a contact.
    ///
    /// By default the configured columns fill the contact fields and the rest become
    /// embedded data; see [`map`].
    fn map(&self, record: &Record, settings: &Settings) -> Result<Contact, StepError> {
        map(record, settings)
    }

    /// Builds the import request for a list.
    ///
    /// By default a `POST …/mailinglists/{id}/transactioncontacts`; see [`build_request`].
    fn build_request(
        &self,
        contacts: &[Contact],
        mailing_list_id: &str,
        settings: &Settings,
    ) -> ApiRequest {
        build_request(contacts, mailing_list_id, settings)
    }

    /// Judges the finished import.
    ///
    /// By default a failed import is a permanent error and the counts are passed on; see
    /// [`handle_response`].
    fn handle_response(
        &self,
        status: ImportStatus,
        mailing_list_id: &str,
    ) -> Result<ContactsImported, StepError> {
        handle_response(status, mailing_list_id)
    }

    /// Decides what goes to the next step.
    ///
    /// By default the result, keyed by the input's record key; see [`choose_output`].
    fn choose_output(
        &self,
        input: &Envelope<RecordBatch>,
        imported: ContactsImported,
    ) -> Vec<Output<ContactsImported>> {
        choose_output(input, imported)
    }
}

fn text(record: &Record, column: &str) -> Option<String> {
    match record.get(column)? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The default of [`Hooks::map`].
pub fn map(record: &Record, settings: &Settings) -> Result<Contact, StepError> {
    let c = &settings.columns;
    let ext_ref = text(record, &c.ext_ref)
        .ok_or_else(|| StepError::permanent(format!("record has no {:?} for extRef", c.ext_ref)))?;
    let mapped = [
        &c.first_name,
        &c.last_name,
        &c.email,
        &c.phone,
        &c.ext_ref,
        &c.language,
    ];
    let embedded_data = record
        .iter()
        .filter(|(k, _)| !mapped.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Contact {
        first_name: text(record, &c.first_name),
        last_name: text(record, &c.last_name),
        email: text(record, &c.email),
        phone: text(record, &c.phone),
        ext_ref,
        language: text(record, &c.language),
        embedded_data,
    })
}

/// The default of [`Hooks::build_request`].
pub fn build_request(
    contacts: &[Contact],
    mailing_list_id: &str,
    settings: &Settings,
) -> ApiRequest {
    let mut fields: Vec<&String> = contacts
        .iter()
        .flat_map(|c| c.embedded_data.keys())
        .collect();
    fields.sort();
    fields.dedup();
    ApiRequest::post_json(
        endpoint::IMPORT_TRANSACTION_CONTACTS,
        format!(
            "directories/{}/mailinglists/{mailing_list_id}/transactioncontacts",
            settings.directory_id
        ),
        json!({ "transactionMeta": { "fields": fields }, "contacts": contacts }),
    )
}

/// The default of [`Hooks::handle_response`].
pub fn handle_response(
    status: ImportStatus,
    mailing_list_id: &str,
) -> Result<ContactsImported, StepError> {
    if status.status.eq_ignore_ascii_case("failed") {
        return Err(StepError::permanent(format!(
            "contact import {} failed",
            status.id
        )));
    }
    Ok(ContactsImported {
        mailing_list_id: mailing_list_id.to_owned(),
        import_id: status.id,
        added: status.added,
        updated: status.updated,
        failed: status.failed,
    })
}

/// The default of [`Hooks::choose_output`].
pub fn choose_output(
    input: &Envelope<RecordBatch>,
    imported: ContactsImported,
) -> Vec<Output<ContactsImported>> {
    vec![Output::new(input.record_key.clone(), imported)]
}

/// The contact importer step.
#[derive(Debug, Clone)]
pub struct ContactImporter<H> {
    /// The client's hooks.
    pub hooks: H,
    /// The settings.
    pub settings: Settings,
}

#[derive(Serialize, Deserialize)]
struct ListState {
    mailing_list_id: String,
}

impl<H: Hooks> ContactImporter<H> {
    /// The run's mailing list, created at most once per run.
    async fn mailing_list(
        &self,
        input: &Envelope<RecordBatch>,
        cx: &StepContext,
    ) -> Result<String, StepError> {
        if let Some(id) = &self.settings.mailing_list_id {
            return Ok(id.clone());
        }
        let state_key = zones::run_state(input.logical_date, &input.run_id, "mailing-list.json");
        if let Some(state) = read_state::<ListState>(cx, &state_key).await? {
            return Ok(state.mailing_list_id);
        }
        let claim_key = zones::run_state(input.logical_date, &input.run_id, "mailing-list.claim");
        let claimed = claim(cx, &claim_key, input.attempt).await?;
        if claimed == Claim::HeldByOther {
            return Err(StepError::retryable(
                "another batch is creating the run's mailing list",
            ));
        }
        let name = format!("{} {} {}", input.pipeline, input.logical_date, input.run_id);
        // A delivery that created the list and crashed before recording it left it behind:
        // the list's name is the run's, so find it instead of creating a second one.
        if claimed == Claim::Resumed
            && let Some(found) = self.find_list(&name, cx).await?
        {
            write_state(cx, &state_key, &found).await?;
            return Ok(found.mailing_list_id);
        }
        let mut body = json!({ "name": name, "prioritizeListMetadata": false });
        if let Some(owner) = &self.settings.owner_id {
            body["ownerId"] = json!(owner);
        }
        let path = format!("directories/{}/mailinglists", self.settings.directory_id);
        let created = cx
            .services()
            .qualtrics
            .send(ApiRequest::post_json(
                endpoint::CREATE_MAILING_LIST,
                path,
                body,
            ))
            .await;
        let response = match created {
            Err(e) => {
                release(cx, &claim_key, input.attempt, &e).await?;
                return Err(e);
            }
            Ok(response) => response,
        };
        let id: IdResult = response.result()?;
        write_state(
            cx,
            &state_key,
            &ListState {
                mailing_list_id: id.id.clone(),
            },
        )
        .await?;
        Ok(id.id)
    }
}

impl<H> ContactImporter<H> {
    /// The directory's list named `name`, if there is one.
    async fn find_list(
        &self,
        name: &str,
        cx: &StepContext,
    ) -> Result<Option<ListState>, StepError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Listed {
            mailing_list_id: String,
            #[serde(default)]
            name: String,
        }
        let request = ApiRequest::get(
            endpoint::LIST_MAILING_LISTS,
            format!("directories/{}/mailinglists", self.settings.directory_id),
        )
        .query("pageSize", "100");
        let found =
            find_in_pages::<Listed, _>(&*cx.services().qualtrics, request, 100, |l| l.name == name)
                .await?;
        Ok(found.map(|l| ListState {
            mailing_list_id: l.mailing_list_id,
        }))
    }
}

#[derive(Deserialize)]
struct IdResult {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Progress {
    #[serde(default)]
    percent_complete: f64,
    #[serde(default)]
    status: String,
    #[serde(default)]
    contacts: Option<Counts>,
}

#[derive(Deserialize)]
struct Counts {
    count: ImportStatus,
}

impl<H: Hooks + Default> Step for ContactImporter<H> {
    type Input = RecordBatch;
    const KIND: &'static str = KIND;

    fn init(cx: &InitContext<'_>) -> Result<Self, crate::Error> {
        Ok(Self {
            hooks: H::default(),
            settings: cx.settings()?,
        })
    }

    async fn process(
        &self,
        input: &Envelope<RecordBatch>,
        cx: &StepContext,
    ) -> Result<(), StepError> {
        let list = self.mailing_list(input, cx).await?;
        match self.import(input, &list, cx).await {
            Err(rejected) if !rejected.is_retryable() => {
                tracing::warn!(error = %rejected.chain(), "batch rejected; it counts as done, all its contacts failed, so the run goes on");
                let counted = ContactsImported {
                    mailing_list_id: list,
                    import_id: String::new(),
                    added: 0,
                    updated: 0,
                    failed: input.payload.records.len() as u64,
                };
                self.mark_done(input, counted, cx).await?;
                // The runner sends a step's outputs only when it succeeds.
                cx.flush().await?;
                Err(rejected)
            }
            imported => self.mark_done(input, imported?, cx).await,
        }
    }
}

impl<H: Hooks> ContactImporter<H> {
    /// Imports the batch into `list` and waits for the import to finish.
    async fn import(
        &self,
        input: &Envelope<RecordBatch>,
        list: &str,
        cx: &StepContext,
    ) -> Result<ContactsImported, StepError> {
        let contacts = input
            .payload
            .records
            .iter()
            .map(|r| self.hooks.map(r, &self.settings))
            .collect::<Result<Vec<_>, _>>()?;
        let request = self.hooks.build_request(&contacts, list, &self.settings);
        let status_path = format!("{}/", request.path);
        let started: IdResult = cx.services().qualtrics.send(request).await?.result()?;
        let status = poll(
            "contact import",
            Duration::from_millis(self.settings.poll_interval_ms),
            self.settings.max_polls,
            || async {
                let get = ApiRequest::get(
                    endpoint::TRANSACTION_CONTACTS_STATUS,
                    format!("{status_path}{}", started.id),
                );
                let progress: Progress = cx.services().qualtrics.send(get).await?.result()?;
                let finished = progress.percent_complete >= 100.0
                    || progress.status.eq_ignore_ascii_case("failed");
                Ok(finished.then(|| {
                    let counts = progress.contacts.map(|c| c.count).unwrap_or_default();
                    ImportStatus {
                        id: started.id.clone(),
                        status: progress.status,
                        ..counts
                    }
                }))
            },
        )
        .await?;
        self.hooks.handle_response(status, list)
    }

    /// Marks the batch done for the run's fan-in and passes `imported` on.
    async fn mark_done(
        &self,
        input: &Envelope<RecordBatch>,
        imported: ContactsImported,
        cx: &StepContext,
    ) -> Result<(), StepError> {
        let marker = format!(
            "{}{}.json",
            batch_marker_prefix(input.logical_date, &input.run_id),
            zones::file_name(&input.record_key)
        );
        write_state(cx, &marker, &imported).await?;
        emit_all(input, self.hooks.choose_output(input, imported), cx).await
    }
}
