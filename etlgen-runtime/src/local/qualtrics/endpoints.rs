//! The endpoints: each validates its call, applies its effect to the state and answers.

use std::collections::{BTreeMap, HashMap};

use axum::http::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::Inner;
use super::api::{Call, Outcome, Reply, bad, not_found};
use super::fields::{
    json_object, new_id, new_request_id, now_ms, optional_str, page, progress, required_object,
    required_str,
};
use super::files::{self, FORMATS, parse_time, qualtrics_time};
use super::header;
use super::state::{
    Contact, ContactImport, Distribution, MailingList, ResponseExport, ResponseImport,
    SurveyResponse,
};

type Handled = Result<Outcome, Reply>;

pub(super) fn create_list(inner: &mut Inner, dir: String, call: &Call<'_>) -> Handled {
    let body = json_object(call.body)?;
    let name = required_str(&body, "name", "name")?.to_owned();
    let owner_id = optional_str(&body, "ownerId")?.map(str::to_owned);
    let id = new_id(&mut inner.ids, "CG");
    let now = now_ms();
    inner.state.mailing_lists.push(MailingList {
        id: id.clone(),
        directory_id: dir,
        name,
        owner_id,
        creation_date: now,
        last_modified_date: now,
        contacts: BTreeMap::new(),
    });
    Ok(Outcome::effect(json!({ "id": id })))
}

pub(super) fn list_lists(inner: &mut Inner, dir: &str, call: &Call<'_>, origin: &str) -> Handled {
    let lists = inner
        .state
        .mailing_lists
        .iter()
        .filter(|l| l.directory_id == dir)
        .map(|l| {
            json!({
                "mailingListId": l.id,
                "name": l.name,
                "ownerId": l.owner_id,
                "lastModifiedDate": l.last_modified_date,
                "creationDate": l.creation_date,
                "contactCount": l.contacts.len(),
            })
        })
        .collect();
    let (elements, next_page) = page(lists, call, origin)?;
    Ok(Outcome::read(Reply::Ok(
        json!({ "elements": elements, "nextPage": next_page }),
    )))
}

pub(super) fn import_contacts(
    inner: &mut Inner,
    dir: &str,
    list: &str,
    call: &Call<'_>,
    origin: &str,
) -> Handled {
    let index = inner
        .state
        .mailing_lists
        .iter()
        .position(|l| l.id == list && l.directory_id == dir)
        .ok_or_else(|| not_found(format!("mailing list {list} not found in directory {dir}")))?;
    let body = json_object(call.body)?;
    if let Some(meta) = body.get("transactionMeta") {
        let fields = meta
            .as_object()
            .ok_or_else(|| bad("transactionMeta must be an object"))?
            .get("fields");
        let strings = |v: &Vec<Value>| v.iter().all(Value::is_string);
        if fields.is_some_and(|f| !f.as_array().is_some_and(strings)) {
            return Err(bad("transactionMeta.fields must be an array of strings"));
        }
    }
    let contacts = body
        .get("contacts")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("contacts is required and must be an array"))?;
    let mut checked = Vec::with_capacity(contacts.len());
    for (i, contact) in contacts.iter().enumerate() {
        let contact = contact
            .as_object()
            .ok_or_else(|| bad(format!("contacts[{i}] must be an object")))?;
        let ext_ref = optional_str(contact, "extRef")?;
        let email = optional_str(contact, "email")?;
        for field in ["embeddedData", "transactionData"] {
            if contact.get(field).is_some_and(|v| !v.is_object()) {
                return Err(bad(format!("contacts[{i}].{field} must be an object")));
            }
        }
        let key = ext_ref
            .or(email)
            .filter(|k| !k.is_empty())
            .map(str::to_owned);
        checked.push((key, contact));
    }
    let import_id = new_id(&mut inner.ids, "CTR");
    let (mut added, mut updated, mut failed) = (0, 0, 0);
    for (key, contact) in checked {
        let Some(key) = key else {
            failed += 1;
            continue;
        };
        let contact_id = new_id(&mut inner.ids, "CID");
        let list = &mut inner.state.mailing_lists[index];
        match list.contacts.get_mut(&key) {
            Some(existing) => {
                for (field, value) in contact {
                    existing.fields.insert(field.clone(), value.clone());
                }
                existing.writes += 1;
                existing.last_import_id = import_id.clone();
                updated += 1;
            }
            None => {
                let new = Contact {
                    id: contact_id,
                    fields: contact.clone(),
                    writes: 1,
                    last_import_id: import_id.clone(),
                };
                list.contacts.insert(key, new);
                added += 1;
            }
        }
    }
    inner.state.mailing_lists[index].last_modified_date = now_ms();
    inner.state.contact_imports.push(ContactImport {
        id: import_id.clone(),
        directory_id: dir.to_owned(),
        mailing_list_id: list.to_owned(),
        added,
        updated,
        failed,
        polls: 0,
    });
    let tracking = format!("{origin}/API/v3/{}/{import_id}", call.path);
    Ok(Outcome::effect(json!({
        "id": import_id,
        "tracking": { "url": tracking },
        "status": "in progress",
    })))
}

pub(super) fn contacts_status(
    inner: &mut Inner,
    polls: u32,
    dir: &str,
    list: &str,
    import: &str,
) -> Handled {
    let job = inner
        .state
        .contact_imports
        .iter_mut()
        .find(|j| j.id == import && j.mailing_list_id == list && j.directory_id == dir)
        .ok_or_else(|| not_found(format!("contact import {import} not found")))?;
    job.polls += 1;
    let (percent, done) = progress(job.polls, polls);
    let (status, counts) = if done {
        ("complete", (job.added, job.updated, job.failed))
    } else {
        ("in progress", (0, 0, 0))
    };
    Ok(Outcome::read(Reply::Ok(json!({
        "id": job.id,
        "percentComplete": percent,
        "status": status,
        "contacts": { "count": { "added": counts.0, "updated": counts.1, "failed": counts.2 } },
    }))))
}

pub(super) fn create_distribution(inner: &mut Inner, call: &Call<'_>) -> Handled {
    let body = json_object(call.body)?;
    let recipients = required_object(&body, "recipients")?;
    let mailing_list_id = optional_str(recipients, "mailingListId")?;
    let any_recipient = ["mailingListId", "contactId", "transactionBatchId"]
        .iter()
        .any(|f| recipients.get(*f).is_some_and(Value::is_string));
    if !any_recipient {
        return Err(bad(
            "recipients needs a mailingListId, contactId or transactionBatchId",
        ));
    }
    let survey_link = required_object(&body, "surveyLink")?;
    let survey_id = required_str(survey_link, "surveyId", "surveyLink.surveyId")?;
    let send_date = required_str(&body, "sendDate", "sendDate")?;
    let dates = [
        ("sendDate", Some(send_date)),
        (
            "surveyLink.expirationDate",
            optional_str(survey_link, "expirationDate")?,
        ),
    ];
    for (field, date) in dates {
        if let Some(date) = date
            && parse_time(date).is_none()
        {
            return Err(bad(format!(
                "{field} {date:?} is not a date-time such as 2024-05-01T09:00:00Z"
            )));
        }
    }
    let message = required_object(&body, "message")?;
    let has_text = message.get("messageText").is_some_and(Value::is_string);
    let has_library = ["libraryId", "messageId"]
        .iter()
        .all(|f| message.get(*f).is_some_and(Value::is_string));
    if !has_text && !has_library {
        return Err(bad("message needs libraryId and messageId, or messageText"));
    }
    let header = required_object(&body, "header")?;
    for field in ["fromEmail", "fromName", "subject"] {
        required_str(header, field, &format!("header.{field}"))?;
    }
    let id = new_id(&mut inner.ids, "EMD");
    let distribution = Distribution {
        id: id.clone(),
        survey_id: Some(survey_id.to_owned()),
        mailing_list_id: mailing_list_id.map(str::to_owned),
        send_date: Some(send_date.to_owned()),
        message: Value::Object(message.clone()),
        header: Value::Object(header.clone()),
        request: Value::Object(body.clone()),
        created_date: qualtrics_time(OffsetDateTime::now_utc()),
    };
    inner.state.distributions.push(distribution);
    Ok(Outcome::effect(json!({ "id": id })))
}

pub(super) fn list_distributions(inner: &mut Inner, call: &Call<'_>, origin: &str) -> Handled {
    let survey = call
        .query("surveyId")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("surveyId is required"))?;
    let list_filter = call.query("mailingListId");
    let elements = inner
        .state
        .distributions
        .iter()
        .filter(|d| d.survey_id.as_deref() == Some(survey))
        .filter(|d| list_filter.is_none() || d.mailing_list_id.as_deref() == list_filter)
        .map(|d| {
            let at = |pointer: &str| d.request.pointer(pointer).cloned().unwrap_or(Value::Null);
            json!({
                "id": d.id,
                "parentDistributionId": null,
                "ownerId": null,
                "requestType": "Invite",
                "requestStatus": "Pending",
                "sendDate": d.send_date,
                "createdDate": d.created_date,
                "modifiedDate": d.created_date,
                "headers": {
                    "fromEmail": at("/header/fromEmail"),
                    "fromName": at("/header/fromName"),
                    "replyToEmail": at("/header/replyToEmail"),
                    "subject": at("/header/subject"),
                },
                "recipients": {
                    "mailingListId": d.mailing_list_id,
                    "contactId": at("/recipients/contactId"),
                    "libraryId": null,
                    "sampleId": null,
                    "transactionBatchId": at("/recipients/transactionBatchId"),
                },
                "message": {
                    "libraryId": at("/message/libraryId"),
                    "messageId": at("/message/messageId"),
                    "messageText": at("/message/messageText"),
                },
                "surveyLink": {
                    "surveyId": d.survey_id,
                    "expirationDate": at("/surveyLink/expirationDate"),
                    "linkType": at("/surveyLink/type"),
                },
            })
        })
        .collect();
    let (elements, next_page) = page(elements, call, origin)?;
    Ok(Outcome::read(Reply::Ok(
        json!({ "elements": elements, "nextPage": next_page }),
    )))
}

pub(super) fn import_responses(inner: &mut Inner, survey: String, call: &Call<'_>) -> Handled {
    let content_type = header(call.headers, "content-type").unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let delimiter = match mime.as_str() {
        "text/csv" => b',',
        "text/tsv" | "text/tab-separated-values" => b'\t',
        "application/json" => {
            return Err(bad(
                "the mock imports only a file sent in the body (Content-Type: text/csv); \
                 fileUrl imports are not supported",
            ));
        }
        other => {
            return Err(Reply::Error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                format!("Content-Type {other:?} is not text/csv or text/tsv"),
            ));
        }
    };
    if let Some(charset) = header(call.headers, "charset")
        && !charset.eq_ignore_ascii_case("utf-8")
    {
        return Err(bad(format!(
            "charset {charset:?} is not supported; send UTF-8"
        )));
    }
    let text = std::str::from_utf8(call.body).map_err(|_| bad("the file is not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(bad("the file is empty"));
    }
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let columns = reader
        .headers()
        .map_err(|e| bad(format!("unreadable header row: {e}")))?
        .clone();
    let mut rows = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let row = row.map_err(|e| bad(format!("row {}: {e}", i + 2)))?;
        let values: BTreeMap<String, String> = columns
            .iter()
            .zip(row.iter())
            .map(|(c, v)| (c.to_owned(), v.to_owned()))
            .collect();
        rows.push(values);
    }
    let now = qualtrics_time(OffsetDateTime::now_utc());
    let import_id = new_id(&mut inner.ids, "PGR");
    let count = rows.len() as u64;
    let mut responses = Vec::with_capacity(rows.len());
    for values in rows {
        let recorded_date = ["RecordedDate", "recordedDate"]
            .iter()
            .find_map(|c| values.get(*c).and_then(|v| parse_time(v)))
            .map_or_else(|| now.clone(), qualtrics_time);
        responses.push(SurveyResponse {
            id: new_id(&mut inner.ids, "R"),
            import_id: import_id.clone(),
            recorded_date,
            values,
        });
    }
    inner
        .state
        .responses
        .entry(survey.clone())
        .or_default()
        .extend(responses);
    inner.state.response_imports.push(ResponseImport {
        id: import_id.clone(),
        survey_id: survey,
        responses: count,
        polls: 0,
    });
    Ok(Outcome::effect(json!({
        "progressId": import_id,
        "percentComplete": 0.0,
        "status": "inProgress",
    })))
}

pub(super) fn import_progress(
    inner: &mut Inner,
    polls: u32,
    survey: &str,
    progress_id: &str,
) -> Handled {
    let job = inner
        .state
        .response_imports
        .iter_mut()
        .find(|j| j.id == progress_id && j.survey_id == survey)
        .ok_or_else(|| not_found(format!("response import {progress_id} not found")))?;
    job.polls += 1;
    let (percent, done) = progress(job.polls, polls);
    let status = if done { "complete" } else { "inProgress" };
    Ok(Outcome::read(Reply::Ok(
        json!({ "percentComplete": percent, "status": status }),
    )))
}

pub(super) fn start_export(inner: &mut Inner, survey: String, call: &Call<'_>) -> Handled {
    let body = json_object(call.body)?;
    let format = required_str(&body, "format", "format")?;
    if !FORMATS.contains(&format) {
        return Err(bad(format!(
            "format {format:?} is not served by the mock; use one of {}",
            FORMATS.join(", ")
        )));
    }
    let compress = match body.get("compress") {
        None => true,
        Some(Value::Bool(compress)) => *compress,
        Some(_) => return Err(bad("compress must be a boolean")),
    };
    let mut bounds = [None, None];
    for (bound, field) in bounds.iter_mut().zip(["startDate", "endDate"]) {
        if let Some(date) = optional_str(&body, field)? {
            *bound = Some(parse_time(date).ok_or_else(|| {
                bad(format!(
                    "{field} {date:?} is not a date-time such as 2024-05-01T00:00:00Z"
                ))
            })?);
        }
    }
    let [start, end] = bounds;
    if let (Some(start), Some(end)) = (start, end)
        && start > end
    {
        return Err(bad("startDate must not be after endDate"));
    }
    let limit = match body.get("limit") {
        None | Some(Value::Null) => usize::MAX,
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad("limit must be a positive integer"))?,
    };
    let response_ids = inner
        .state
        .responses_of(&survey)
        .iter()
        .filter(|r| {
            let at = parse_time(&r.recorded_date);
            start.is_none_or(|s| at.is_some_and(|at| at >= s))
                && end.is_none_or(|e| at.is_some_and(|at| at < e))
        })
        .take(limit)
        .map(|r| r.id.clone())
        .collect();
    let progress_id = new_id(&mut inner.ids, "ES");
    let file_id = format!("{}-def", new_request_id(&mut inner.ids));
    inner.state.exports.push(ResponseExport {
        progress_id: progress_id.clone(),
        file_id,
        survey_id: survey,
        format: format.to_owned(),
        compress,
        response_ids,
        polls: 0,
    });
    Ok(Outcome::effect(json!({
        "progressId": progress_id,
        "percentComplete": 0.0,
        "status": "inProgress",
    })))
}

pub(super) fn export_progress(
    inner: &mut Inner,
    polls: u32,
    survey: &str,
    progress_id: &str,
) -> Handled {
    let job = inner
        .state
        .exports
        .iter_mut()
        .find(|j| j.progress_id == progress_id && j.survey_id == survey)
        .ok_or_else(|| not_found(format!("response export {progress_id} not found")))?;
    job.polls += 1;
    let (percent, done) = progress(job.polls, polls);
    let result = if done {
        json!({ "percentComplete": percent, "status": "complete", "fileId": job.file_id })
    } else {
        json!({ "percentComplete": percent, "status": "inProgress" })
    };
    Ok(Outcome::read(Reply::Ok(result)))
}

pub(super) fn export_file(inner: &mut Inner, polls: u32, survey: &str, file_id: &str) -> Handled {
    let job = inner
        .state
        .exports
        .iter()
        .find(|j| j.file_id == file_id && j.survey_id == survey && j.polls >= polls)
        .ok_or_else(|| not_found(format!("export file {file_id} not found")))?;
    let by_id: HashMap<&str, &SurveyResponse> = inner
        .state
        .responses_of(survey)
        .iter()
        .map(|r| (r.id.as_str(), r))
        .collect();
    let responses: Vec<&SurveyResponse> = job
        .response_ids
        .iter()
        .filter_map(|id| by_id.get(id.as_str()).copied())
        .collect();
    let (content_type, bytes) = files::export_file(survey, &job.format, job.compress, &responses);
    Ok(Outcome::read(Reply::File(content_type, bytes)))
}
