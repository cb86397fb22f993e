//! HTTP submissions: a POST to API Gateway, forwarded as the SQS message body.
//!
//! Accepted bodies: `{"logical_date": "YYYY-MM-DD", "records": [{…}, …]}`, a bare JSON
//! array of objects, JSON lines, or CSV with a header row. Records are validated by the
//! validator exactly like a file, one by one: an element of the array that is not an object
//! is one rejected row, not the whole submission.

use serde::Deserialize;

use crate::envelope::LogicalDate;
use crate::error::StepError;
use crate::kinds::validator::Format;

/// A parsed submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The date the submission says it is for.
    pub logical_date: Option<LogicalDate>,
    /// The format of `body`.
    pub format: Format,
    /// The records, as JSON lines or CSV.
    pub body: String,
}

#[derive(Deserialize)]
struct Wrapped {
    #[serde(default)]
    logical_date: Option<LogicalDate>,
    records: Vec<serde_json::Value>,
}

/// Parses a submission body.
pub fn parse_submission(body: &str) -> Result<Submission, StepError> {
    let trimmed = body.trim_start();
    if trimmed.is_empty() {
        return Err(StepError::permanent("empty submission"));
    }
    let (logical_date, records) = if trimmed.starts_with('[') {
        (
            None,
            serde_json::from_str::<Vec<serde_json::Value>>(trimmed)?,
        )
    } else if trimmed.starts_with('{') {
        match serde_json::from_str::<serde_json::Value>(trimmed) {
            // One object of an array `records` and at most a `logical_date` is the wrapped
            // form, and its errors are its own: read as a JSON line instead, the whole
            // envelope would become one bogus row. Any other object is a record.
            Ok(serde_json::Value::Object(wrapped))
                if wrapped
                    .get("records")
                    .is_some_and(serde_json::Value::is_array)
                    && wrapped
                        .keys()
                        .all(|k| k == "records" || k == "logical_date") =>
            {
                let w: Wrapped = serde_json::from_value(serde_json::Value::Object(wrapped))
                    .map_err(|e| {
                        StepError::permanent(format!(
                            "submission {{\"logical_date\": …, \"records\": […]}} is invalid: \
                             {e}; logical_date is YYYY-MM-DD and records an array"
                        ))
                    })?;
                (w.logical_date, w.records)
            }
            _ => {
                return Ok(Submission {
                    logical_date: None,
                    format: Format::Jsonl,
                    body: body.to_owned(),
                });
            }
        }
    } else {
        return Ok(Submission {
            logical_date: None,
            format: Format::Csv,
            body: body.to_owned(),
        });
    };
    let mut lines = String::new();
    for record in records {
        lines.push_str(&record.to_string());
        lines.push('\n');
    }
    Ok(Submission {
        logical_date,
        format: Format::Jsonl,
        body: lines,
    })
}

/// The UTC date of a timestamp in milliseconds since the epoch.
pub fn date_of_timestamp(ms: u64) -> Option<LogicalDate> {
    let at = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64).ok()?;
    Some(LogicalDate::new(at.date()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_records_carry_their_date() {
        let s = parse_submission(r#"{"logical_date":"2024-05-01","records":[{"id":1},{"id":2}]}"#)
            .unwrap();
        assert_eq!(s.logical_date, Some("2024-05-01".parse().unwrap()));
        assert_eq!(s.format, Format::Jsonl);
        assert_eq!(s.body, "{\"id\":1}\n{\"id\":2}\n");
    }

    #[test]
    fn arrays_lines_and_csv() {
        assert_eq!(
            parse_submission(r#"[{"id":1}]"#).unwrap().body,
            "{\"id\":1}\n"
        );
        let lines = parse_submission("{\"id\":1}\n{\"id\":2}\n").unwrap();
        assert_eq!(
            (lines.format, lines.body.lines().count()),
            (Format::Jsonl, 2)
        );
        assert_eq!(
            parse_submission("id,email\n1,a@b.co\n").unwrap().format,
            Format::Csv
        );
        assert!(parse_submission("  ").is_err());
        assert!(parse_submission("[1,2").is_err(), "not JSON at all");
    }

    /// Each element is a row: the validator rejects the one that is no object and goes on.
    #[test]
    fn an_element_that_is_no_object_is_one_row() {
        let s = parse_submission(r#"[{"id":1},5,{"id":2}]"#).unwrap();
        assert_eq!(s.body, "{\"id\":1}\n5\n{\"id\":2}\n");
        let wrapped = parse_submission(r#"{"records":[{"id":1},"x"]}"#).unwrap();
        assert_eq!(wrapped.body, "{\"id\":1}\n\"x\"\n");
    }

    #[test]
    fn a_wrapped_submission_with_a_bad_date_says_so() {
        let err =
            parse_submission(r#"{"logical_date":"2024-02-30","records":[{"id":1}]}"#).unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.message().contains("YYYY-MM-DD"), "{err}");
        // Any other object is one record, as a JSON line: one without `records`, or whose
        // `records` is a field of its own.
        for record in [
            r#"{"id":1,"logical_date":"x"}"#,
            r#"{"id":1,"records":5}"#,
            r#"{"id":1,"records":[1,2]}"#,
        ] {
            let single = parse_submission(record).unwrap();
            assert_eq!(
                (single.format, single.logical_date, single.body.as_str()),
                (Format::Jsonl, None, record),
                "{record}"
            );
        }
    }

    #[test]
    fn timestamps_become_dates() {
        assert_eq!(
            date_of_timestamp(1_545_082_649_183),
            Some("2018-12-17".parse().unwrap())
        );
    }
}
