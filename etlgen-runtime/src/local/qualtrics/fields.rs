//! What the endpoints ([`super::endpoints`]) share: ids and clocks, query strings, pages of
//! a list, and the fields of a JSON body, each with the real API's error when it is wrong.

use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::api::{Call, Reply, bad};

/// The largest (and default) page of a list endpoint.
const MAX_PAGE: usize = 100;

pub(super) fn new_request_id(rng: &mut fastrand::Rng) -> String {
    uuid::Builder::from_random_bytes(rng.u128(..).to_le_bytes())
        .into_uuid()
        .to_string()
}

/// A Qualtrics-style id: the prefix, `_`, and 15 letters and digits.
pub(super) fn new_id(rng: &mut fastrand::Rng, prefix: &str) -> String {
    let tail: String = (0..15).map(|_| rng.alphanumeric()).collect();
    format!("{prefix}_{tail}")
}

pub(super) fn now_ms() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

pub(super) fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn encode_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// One page of a list and the full URL of the next (`pageSize`, opaque `skipToken`).
pub(super) fn page(
    items: Vec<Value>,
    call: &Call<'_>,
    origin: &str,
) -> Result<(Vec<Value>, Option<String>), Reply> {
    let size = match call.query("pageSize") {
        None => MAX_PAGE,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(format!("pageSize must be a positive integer, got {v:?}")))?
            .min(MAX_PAGE),
    };
    let offset = match call.query("skipToken") {
        None | Some("") => 0,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= items.len())
            .ok_or_else(|| bad(format!("invalid skipToken {v:?}")))?,
    };
    let end = (offset + size).min(items.len());
    let next = (end < items.len()).then(|| {
        let mut query: Vec<(String, String)> = call
            .query
            .iter()
            .filter(|(k, _)| k != "pageSize" && k != "skipToken")
            .cloned()
            .collect();
        query.push(("pageSize".into(), size.to_string()));
        query.push(("skipToken".into(), end.to_string()));
        format!("{origin}/API/v3/{}?{}", call.path, encode_query(&query))
    });
    Ok((items[offset..end].to_vec(), next))
}

pub(super) fn json_object(body: &[u8]) -> Result<Map<String, Value>, Reply> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad("the body must be a JSON object")),
        Err(e) => Err(bad(format!("the body is not valid JSON: {e}"))),
    }
}

/// An optional string field: absent or null is `None`, another type is an error.
pub(super) fn optional_str<'a>(
    object: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, Reply> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("{field} must be a string"))),
    }
}

pub(super) fn required_str<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    path: &str,
) -> Result<&'a str, Reply> {
    optional_str(object, field)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad(format!("{path} is required")))
}

pub(super) fn required_object<'a>(
    object: &'a Map<String, Value>,
    field: &str,
) -> Result<&'a Map<String, Value>, Reply> {
    object
        .get(field)
        .and_then(Value::as_object)
        .ok_or_else(|| bad(format!("{field} is required and must be an object")))
}

/// The percentage and completion of a job after `polls` progress requests.
pub(super) fn progress(polls: u32, polls_to_complete: u32) -> (f64, bool) {
    if polls >= polls_to_complete {
        (100.0, true)
    } else {
        (
            (100 * u64::from(polls) / u64::from(polls_to_complete)) as f64,
            false,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reaches_100_on_the_configured_poll() {
        assert_eq!(progress(1, 1), (100.0, true));
        assert_eq!(progress(1, 3), (33.0, false));
        assert_eq!(progress(3, 3), (100.0, true));
    }

    #[test]
    fn queries_round_trip() {
        let parsed = parse_query(Some("surveyId=SV_1&name=a+b%26c&flag"));
        assert_eq!(
            parsed,
            [
                ("surveyId".to_owned(), "SV_1".to_owned()),
                ("name".to_owned(), "a b&c".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
        assert_eq!(parse_query(Some(&encode_query(&parsed))), parsed);
    }
}
