//! S3 event notifications, as the validator receives them through SQS.

use serde::Deserialize;

use crate::envelope::LogicalDate;
use crate::error::StepError;

/// The object an S3 event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    /// The bucket.
    pub bucket: String,
    /// The key, URL-decoded.
    pub key: String,
    /// The ETag, which changes when the object is replaced.
    pub etag: Option<String>,
    /// The version the event is about, in a versioned bucket.
    pub version_id: Option<String>,
    /// The UTC date of the event.
    pub event_date: Option<LogicalDate>,
}

/// Whether `body` is the test event S3 sends to a queue when its notifications are
/// configured (`{"Event":"s3:TestEvent",…}`): not a file, and nothing to do.
pub fn is_test_event(body: &str) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "Event")]
        event: Option<String>,
    }
    body.contains("s3:TestEvent")
        && serde_json::from_str::<Probe>(body)
            .is_ok_and(|p| p.event.as_deref() == Some("s3:TestEvent"))
}

/// Parses an S3 event notification. `None` when the body is not one (so another parser can
/// try); an error when it is one but cannot be used (no records, several records).
pub fn parse_event(body: &str) -> Option<Result<ObjectEvent, StepError>> {
    if !body.contains("\"Records\"") || !body.contains("\"s3\"") {
        return None;
    }
    let event: Notification = match serde_json::from_str(body) {
        Ok(event) => event,
        Err(e) => return Some(Err(StepError::permanent(format!("invalid S3 event: {e}")))),
    };
    let [record] = event.records.as_slice() else {
        return Some(Err(StepError::permanent(format!(
            "expected one S3 record per message, found {}",
            event.records.len()
        ))));
    };
    let object = &record.s3.object;
    let key = match (&object.url_decoded_key, &object.key) {
        (Some(decoded), _) => decoded.clone(),
        (None, Some(key)) => decode_key(key),
        (None, None) => return Some(Err(StepError::permanent("S3 event without an object key"))),
    };
    let Some(bucket) = record.s3.bucket.name.clone() else {
        return Some(Err(StepError::permanent("S3 event without a bucket name")));
    };
    let event_date = record
        .event_time
        .as_deref()
        .and_then(|t| t.get(..10))
        .and_then(|day| day.parse().ok());
    Some(Ok(ObjectEvent {
        bucket,
        key,
        etag: object.e_tag.clone(),
        version_id: object.version_id.clone(),
        event_date,
    }))
}

/// The fields of an S3 notification the validator reads. Deliberately not
/// `aws_lambda_events::s3::S3Event`, which requires every field AWS documents: emulators
/// (moto) leave some out, and nothing here needs them.
#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Records")]
    records: Vec<NotificationRecord>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationRecord {
    #[serde(default)]
    event_time: Option<String>,
    s3: NotificationEntity,
}

#[derive(Deserialize)]
struct NotificationEntity {
    bucket: NotificationBucket,
    object: NotificationObject,
}

#[derive(Deserialize)]
struct NotificationBucket {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationObject {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    url_decoded_key: Option<String>,
    #[serde(default, rename = "eTag")]
    e_tag: Option<String>,
    #[serde(default)]
    version_id: Option<String>,
}

/// Decodes an event's object key: S3 encodes it like a form value (`+` for a space).
pub fn decode_key(key: &str) -> String {
    let spaced = key.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// The first `YYYY-MM-DD` in a key, such as `landing/2024-05-01/contacts.csv`.
pub fn date_in_key(key: &str) -> Option<LogicalDate> {
    let bytes = key.as_bytes();
    (0..bytes.len().saturating_sub(9)).find_map(|i| {
        let window = &bytes[i..i + 10];
        let shape = window.iter().enumerate().all(|(j, b)| match j {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        });
        if shape {
            std::str::from_utf8(window).ok()?.parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = include_str!("../../../tests/fixtures/s3-event.json");

    #[test]
    fn the_test_event_s3_sends_on_configuration_is_recognised() {
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2024-05-01T00:00:00.000Z","Bucket":"acme-landing","RequestId":"R","HostId":"H"}"#;
        assert!(is_test_event(test));
        assert!(!is_test_event(EVENT));
        assert!(!is_test_event(r#"{"records":[{"note":"s3:TestEvent"}]}"#));
    }

    #[test]
    fn an_emulators_event_without_user_identity_is_parsed() {
        let moto = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"eu-west-1","eventTime":"2026-11-23T16:12:41.062Z","eventName":"ObjectCreated:Put","s3":{"s3SchemaVersion":"1.0","configurationId":"c","bucket":{"name":"acme-drop","arn":"arn:aws:s3:::acme-drop"},"object":{"key":"landing/2026-11-20/contacts.csv","size":10,"eTag":"abc","versionId":"v"}}}]}"#;
        let event = parse_event(moto).unwrap().unwrap();
        assert_eq!(event.bucket, "acme-drop");
        assert_eq!(event.key, "landing/2026-11-20/contacts.csv");
        assert_eq!(event.etag.as_deref(), Some("abc"));
        assert_eq!(event.version_id.as_deref(), Some("v"));
        assert_eq!(event.event_date, Some("2026-11-23".parse().unwrap()));
    }

    #[test]
    fn aws_sample_event_is_parsed_and_the_key_decoded() {
        let event = parse_event(EVENT).unwrap().unwrap();
        assert_eq!(event.bucket, "acme-landing");
        assert_eq!(event.key, "landing/2024-05-01/contacts list.csv");
        assert_eq!(
            event.etag.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(event.event_date, Some("2024-05-02".parse().unwrap()));
        assert_eq!(date_in_key(&event.key), Some("2024-05-01".parse().unwrap()));
    }

    #[test]
    fn other_bodies_are_not_s3_events() {
        assert!(parse_event("{\"records\":[]}").is_none());
        assert!(parse_event("id,email").is_none());
        let two = EVENT.replace("\"Records\": [", "\"Records\": [{\"bad\":1},");
        assert!(parse_event(&two).unwrap().is_err());
    }

    #[test]
    fn dates_in_keys() {
        assert_eq!(
            date_in_key("a/2024-02-29/b"),
            Some("2024-02-29".parse().unwrap())
        );
        assert_eq!(date_in_key("a/2023-02-29/b"), None);
        assert_eq!(date_in_key("x"), None);
        assert_eq!(decode_key("a%2Fb+c"), "a/b c");
    }
}
