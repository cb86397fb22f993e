//! The survey endpoints: response imports and exports, and their progress and files.

use std::collections::{BTreeMap, HashMap};

use axum::http::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::Inner;
use super::api::{Call, Outcome, Reply, bad, not_found};
use super::fields::{json_object, new_id, new_request_id, optional_str, progress, required_str};
use super::files::{self, FORMATS, parse_time, qualtrics_time};
use super::header;
use super::state::{ResponseExport, ResponseImport, SurveyResponse};

type Handled = Result<Outcome, Reply>;

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
