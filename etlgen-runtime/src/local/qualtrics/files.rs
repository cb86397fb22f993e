//! Export files (CSV, TSV, JSON, NDJSON; zipped or not) and the small encodings the mock
//! needs without extra dependencies: a stored (uncompressed) zip with CRC-32, Base64 for
//! HTTP Basic, FNV-1a body fingerprints and Qualtrics-style times.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use super::SurveyResponse;

/// The export formats the mock serves.
pub(super) const FORMATS: &[&str] = &["csv", "tsv", "json", "ndjson"];

/// A time as Qualtrics writes it: `2024-05-01T09:00:00Z`.
pub(super) fn qualtrics_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    at.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// Parses RFC 3339 (`2024-05-01T09:00:00Z`) or Qualtrics' export style
/// (`2024-05-01 09:00:00`, UTC).
pub(super) fn parse_time(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim();
    OffsetDateTime::parse(text, &Rfc3339).ok().or_else(|| {
        time::PrimitiveDateTime::parse(
            text,
            format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        )
        .ok()
        .map(|t| t.assume_utc())
    })
}

/// The content type and bytes of an export file.
pub(super) fn export_file(
    survey_id: &str,
    format: &str,
    compress: bool,
    responses: &[&SurveyResponse],
) -> (&'static str, Vec<u8>) {
    let (content_type, body) = match format {
        "json" => ("application/json", json_export(responses)),
        "ndjson" => ("application/x-ndjson", ndjson_export(responses)),
        "tsv" => ("text/tab-separated-values", table_export(responses, b'\t')),
        _ => ("text/csv; charset=UTF-8", table_export(responses, b',')),
    };
    if compress {
        let name = format!("{survey_id}.{format}");
        ("application/zip", zip_one(&name, &body))
    } else {
        (content_type, body)
    }
}

fn response_json(response: &SurveyResponse) -> Value {
    json!({
        "responseId": response.id,
        "values": response.values,
        "recordedDate": response.recorded_date,
    })
}

fn json_export(responses: &[&SurveyResponse]) -> Vec<u8> {
    let all: Vec<Value> = responses.iter().map(|r| response_json(r)).collect();
    serde_json::to_vec(&json!({ "responses": all })).unwrap_or_default()
}

fn ndjson_export(responses: &[&SurveyResponse]) -> Vec<u8> {
    let mut out = Vec::new();
    for response in responses {
        out.extend(serde_json::to_vec(&response_json(response)).unwrap_or_default());
        out.push(b'\n');
    }
    out
}

/// `ResponseId`, `RecordedDate`, then every other column in name order.
fn table_export(responses: &[&SurveyResponse], delimiter: u8) -> Vec<u8> {
    const FIXED: [&str; 2] = ["ResponseId", "RecordedDate"];
    let mut columns: Vec<&str> = responses
        .iter()
        .flat_map(|r| r.values.keys().map(String::as_str))
        .filter(|c| !FIXED.contains(c))
        .collect();
    columns.sort_unstable();
    columns.dedup();
    let mut writer = csv::WriterBuilder::new()
        .delimiter(delimiter)
        .from_writer(Vec::new());
    let header = FIXED.iter().chain(columns.iter());
    // Writing into a Vec cannot fail.
    let _ = writer.write_record(header);
    for response in responses {
        let mut row = vec![response.id.as_str(), response.recorded_date.as_str()];
        row.extend(
            columns
                .iter()
                .map(|c| response.values.get(*c).map_or("", String::as_str)),
        );
        let _ = writer.write_record(row);
    }
    writer.into_inner().unwrap_or_default()
}

/// A zip archive holding one stored (uncompressed) entry.
pub(super) fn zip_one(name: &str, data: &[u8]) -> Vec<u8> {
    // 1980-01-01 00:00:00, the earliest MS-DOS date.
    const DOS_TIME: u16 = 0;
    const DOS_DATE: u16 = (1 << 5) | 1;
    const UTF8_NAME: u16 = 1 << 11;
    let crc = crc32(data);
    let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let name_len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    let name = &name.as_bytes()[..usize::from(name_len)];
    let mut out = Vec::with_capacity(data.len() + 2 * name.len() + 100);
    let common = |out: &mut Vec<u8>| {
        for v in [20u16, UTF8_NAME, 0, DOS_TIME, DOS_DATE] {
            out.extend(v.to_le_bytes());
        }
        for v in [crc, size, size] {
            out.extend(v.to_le_bytes());
        }
        out.extend(name_len.to_le_bytes());
        out.extend(0u16.to_le_bytes()); // extra field length
    };
    // Local file header, then the data.
    out.extend(0x0403_4b50u32.to_le_bytes());
    common(&mut out);
    out.extend(name);
    out.extend(data);
    // Central directory.
    let central_start = out.len();
    out.extend(0x0201_4b50u32.to_le_bytes());
    out.extend(20u16.to_le_bytes()); // version made by
    common(&mut out);
    for v in [0u16, 0, 0] {
        out.extend(v.to_le_bytes()); // comment length, disk number, internal attributes
    }
    out.extend(0u32.to_le_bytes()); // external attributes
    out.extend(0u32.to_le_bytes()); // offset of the local header
    out.extend(name);
    let central_size = u32::try_from(out.len() - central_start).unwrap_or(u32::MAX);
    let central_offset = u32::try_from(central_start).unwrap_or(u32::MAX);
    // End of central directory.
    out.extend(0x0605_4b50u32.to_le_bytes());
    for v in [0u16, 0, 1, 1] {
        out.extend(v.to_le_bytes());
    }
    out.extend(central_size.to_le_bytes());
    out.extend(central_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes()); // comment length
    out
}

/// CRC-32 (IEEE 802.3), as zip uses it.
pub(super) fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Standard Base64 with padding.
pub(super) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A fingerprint of a body: FNV-1a 64 and the length.
pub(super) fn fingerprint(body: &[u8]) -> String {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in body {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}-{}", body.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_their_reference_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            base64(b"local-client:local-secret"),
            "bG9jYWwtY2xpZW50OmxvY2FsLXNlY3JldA=="
        );
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
    }

    #[test]
    fn times_parse_in_both_styles() {
        let at = parse_time("2024-05-01T09:00:00Z").unwrap();
        assert_eq!(qualtrics_time(at), "2024-05-01T09:00:00Z");
        assert_eq!(parse_time("2024-05-01 09:00:00"), Some(at));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn a_zip_holds_the_stored_file() {
        let zip = zip_one("SV_1.csv", b"a,b\n1,2\n");
        assert_eq!(&zip[..4], b"PK\x03\x04");
        assert_eq!(&zip[30..38], b"SV_1.csv");
        assert_eq!(&zip[38..46], b"a,b\n1,2\n");
        let end = &zip[zip.len() - 22..];
        assert_eq!(&end[..4], b"PK\x05\x06");
    }
}
