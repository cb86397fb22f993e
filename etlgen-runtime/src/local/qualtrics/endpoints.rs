//! The directory and distribution endpoints: each validates its call, applies its effect to
//! the state and answers. The survey endpoints are in [`super::surveys`].

use std::collections::BTreeMap;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::Inner;
use super::api::{Call, Outcome, Reply, bad, not_found};
use super::fields::{
    json_object, new_id, now_ms, optional_str, page, progress, required_object, required_str,
};
use super::files::{parse_time, qualtrics_time};
use super::state::{Contact, ContactImport, Distribution, MailingList};

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
