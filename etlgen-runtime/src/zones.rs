//! Where things live in the pipeline's data bucket.
//!
//! Every step agrees on these keys, so a replay or an on-call engineer finds the raw input,
//! the reports and the run state of any run from its logical date and run id alone.

use crate::envelope::{IdempotencyKey, LogicalDate, RunId};

/// `raw/<logical_date>/<run_id>/<name>`: the immutable copy of external input, written
/// before any transform.
pub fn raw(date: LogicalDate, run: &RunId, name: &str) -> String {
    format!("raw/{date}/{run}/{}", file_name(name))
}

/// `reports/<logical_date>/<run_id>/<step>/<name>`: what a client or on-call reads.
pub fn report(date: LogicalDate, run: &RunId, step: &str, name: &str) -> String {
    format!("reports/{date}/{run}/{step}/{name}")
}

/// `reports/<logical_date>/<run_id>/`: every step's reports of a run.
pub fn run_reports(date: LogicalDate, run: &RunId) -> String {
    format!("reports/{date}/{run}/")
}

/// `reports/unparsed/<step>/<message_id>.json`: messages that were not envelopes at all.
pub fn unparsed(step: &str, message_id: &str) -> String {
    format!("reports/unparsed/{step}/{message_id}.json")
}

/// `runs/<logical_date>/<run_id>/<name>`: run state shared by steps (manifest, claims).
pub fn run_state(date: LogicalDate, run: &RunId, name: &str) -> String {
    format!("runs/{date}/{run}/{name}")
}

/// `state/<pipeline>/<step>/done/<key>`: the ledger of completed envelopes.
pub fn ledger(pipeline: &str, step: &str, key: &IdempotencyKey) -> String {
    format!("state/{pipeline}/{step}/done/{key}")
}

/// The last path segment, with anything that could climb out of a prefix removed.
pub fn file_name(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_control() || c == '\\' { '_' } else { c })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => "input".to_owned(),
        _ => cleaned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let date: LogicalDate = "2024-05-01".parse().unwrap();
        let run = RunId::new("r1");
        assert_eq!(
            raw(date, &run, "landing/x/file.csv"),
            "raw/2024-05-01/r1/file.csv"
        );
        assert_eq!(
            report(date, &run, "validate", "a.csv"),
            "reports/2024-05-01/r1/validate/a.csv"
        );
        assert_eq!(
            run_state(date, &run, "manifest.json"),
            "runs/2024-05-01/r1/manifest.json"
        );
        let key = IdempotencyKey::derive("p", &run, "s", "k");
        assert_eq!(ledger("p", "s", &key), format!("state/p/s/done/{key}"));
    }

    #[test]
    fn file_names_cannot_escape() {
        assert_eq!(file_name("../.."), "input");
        assert_eq!(file_name("a/"), "input");
        assert_eq!(file_name("a\\b\n"), "a_b_");
    }
}
