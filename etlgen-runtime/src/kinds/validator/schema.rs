//! The row schema declared in config, and the default row check.
//!
//! Kept apart from the step so the rules a client reads about ("required", "email", …) are
//! in one short file with their tests.

use serde::Deserialize;
use serde_json::Value;

use crate::envelope::LogicalDate;
use crate::kinds::Record;

/// A column's type; values are converted to it (CSV cells arrive as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// Any text.
    #[default]
    String,
    /// A signed 64-bit integer.
    Integer,
    /// A floating-point number.
    Number,
    /// `true`/`false`, `yes`/`no`, `1`/`0`.
    Boolean,
    /// An e-mail address.
    Email,
    /// A `YYYY-MM-DD` date.
    Date,
}

/// One declared column: `{ name = "email", type = "email", required = true }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Column {
    /// The column name, as in the file's header.
    pub name: String,
    /// The type.
    #[serde(rename = "type", default)]
    pub kind: ColumnType,
    /// Whether an empty or missing value rejects the row.
    #[serde(default)]
    pub required: bool,
}

/// Checks a row against the declared columns and converts the values to their types.
/// Undeclared columns pass through unchanged. The error is the rejection reason.
pub fn check_row(row: &mut Record, columns: &[Column]) -> Result<(), String> {
    // Check everything first, changing nothing, so a rejected row is reported exactly as it
    // was read; then convert in place. Parsing twice is cheaper than copying every row.
    for column in columns {
        check_value(row.get(&column.name).map(ValueRef::from), column)?;
    }
    for column in columns {
        if let Some(value) = row.get_mut(&column.name)
            && let Some(new) = converted(ValueRef::from(&*value), column.kind)
        {
            *value = new;
        }
    }
    Ok(())
}

/// A value as the checks see it: text (as read, or kept as text), an integer kept as its
/// text, or any other JSON value.
/// The validator's fast path checks cells it has not turned into [`Value`]s through this.
#[derive(Debug, Clone, Copy)]
pub(super) enum ValueRef<'a> {
    /// A string.
    Text(&'a str),
    /// Anything but a string.
    Other(&'a Value),
    /// An integer kept as the text it was read as, which is already its JSON (see
    /// [`integer_json`]); it stands for the number, as `Other` would hold it.
    Integer(&'a str),
}

impl ValueRef<'_> {
    /// The value as a `Record` holds it.
    pub(super) fn to_value(self) -> Value {
        match self {
            ValueRef::Text(s) => Value::String(s.to_owned()),
            ValueRef::Other(other) => other.clone(),
            ValueRef::Integer(s) => s
                .parse::<i64>()
                .map_or_else(|_| Value::String(s.to_owned()), Value::from),
        }
    }
}

/// Whether `text` is an integer column's value written exactly as serde_json writes the
/// number it converts to (no blanks, sign `+`, leading zeros or `-0`), so a batch can keep
/// the text and copy it into the JSON instead of converting it.
pub(super) fn integer_json(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = match digits.as_bytes() {
        [b'0'] => digits.len() == text.len(),
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    // Eighteen digits always fit an `i64`; only longer ones need parsing to tell.
    canonical && (digits.len() <= 18 || text.parse::<i64>().is_ok())
}

impl<'a> From<&'a Value> for ValueRef<'a> {
    fn from(value: &'a Value) -> Self {
        match value {
            Value::String(s) => ValueRef::Text(s),
            other => ValueRef::Other(other),
        }
    }
}

/// The first pass of [`check_row`] for one column: its value (`None` when the row lacks
/// the column) is present if required and converts to its type.
pub(super) fn check_value(value: Option<ValueRef<'_>>, column: &Column) -> Result<(), String> {
    check_converting(value, column).map(drop)
}

/// What a value becomes once its row passes: what the second pass of [`check_row`] makes
/// of the value the first pass checked.
#[derive(Debug)]
pub(super) enum Converted {
    /// Left as it is.
    Unchanged,
    /// Left as its text, which is already the JSON of the integer it stands for.
    IntegerText,
    /// Replaced.
    Value(Value),
}

/// [`check_value`] and then [`converted`] on the same value, in one go: the conversion
/// the check works out is the one the second pass would make. (A column declared twice
/// is converted twice, the second time from the first's result, so only the first
/// declaration's conversion can be taken from its check.)
pub(super) fn check_converting(
    value: Option<ValueRef<'_>>,
    column: &Column,
) -> Result<Converted, String> {
    let missing = || Err(format!("missing required column {:?}", column.name));
    let Some(value) = value else {
        return if column.required {
            missing()
        } else {
            Ok(Converted::Unchanged)
        };
    };
    if !present(value) {
        if column.required {
            return missing();
        }
        return Ok(converting(value, column.kind));
    }
    if integer_text(value, column.kind) {
        return Ok(Converted::IntegerText);
    }
    match convert(value, column.kind) {
        Ok(Some(new)) => Ok(Converted::Value(new)),
        Ok(None) => Ok(Converted::Unchanged),
        Err(why) => Err(format!("column {:?}: {why}", column.name)),
    }
}

/// [`converted`] as a [`Converted`]: an integer column's text that is already the JSON of
/// its number stays text.
pub(super) fn converting(value: ValueRef<'_>, kind: ColumnType) -> Converted {
    if integer_text(value, kind) {
        Converted::IntegerText
    } else {
        converted(value, kind).map_or(Converted::Unchanged, Converted::Value)
    }
}

/// Whether `value`, of a column of `kind`, is an integer's text that is already its JSON.
fn integer_text(value: ValueRef<'_>, kind: ColumnType) -> bool {
    matches!((kind, value), (ColumnType::Integer, ValueRef::Text(text)) if integer_json(text))
}

/// The second pass of [`check_row`] for one value: what replaces it, if anything.
pub(super) fn converted(value: ValueRef<'_>, kind: ColumnType) -> Option<Value> {
    if changes(value, kind) {
        convert(value, kind).ok().flatten()
    } else {
        None
    }
}

/// Whether [`convert`] would change a value that passed it: text types only when the text
/// has surrounding blanks, so the second pass never re-runs their (costlier) checks.
fn changes(value: ValueRef<'_>, kind: ColumnType) -> bool {
    match (kind, value) {
        (ColumnType::String | ColumnType::Email | ColumnType::Date, ValueRef::Text(s)) => {
            trim(s).len() != s.len()
        }
        _ => true,
    }
}

fn present(value: ValueRef<'_>) -> bool {
    match value {
        ValueRef::Other(Value::Null) => false,
        ValueRef::Text(s) => !trim(s).is_empty(),
        ValueRef::Other(_) | ValueRef::Integer(_) => true,
    }
}

/// `str::trim`, without its Unicode scan when both ends are visible ASCII (nearly every
/// cell of every file).
pub(super) fn trim(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(first), Some(last)) if first.is_ascii_graphic() && last.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

/// The value converted to its type; `None` when it is already right (no allocation for
/// the common case of clean text).
fn convert(value: ValueRef<'_>, kind: ColumnType) -> Result<Option<Value>, String> {
    let owned;
    let (text, clean) = match value {
        ValueRef::Text(s) => {
            let text = trim(s);
            (text, text.len() == s.len())
        }
        ValueRef::Other(other) => {
            owned = other.to_string();
            (owned.as_str(), false)
        }
        ValueRef::Integer(s) => (s, false),
    };
    let keep = |ok: bool, why: &dyn Fn() -> String| match (ok, clean) {
        (false, _) => Err(why()),
        (true, true) => Ok(None),
        (true, false) => Ok(Some(Value::String(text.to_owned()))),
    };
    match kind {
        ColumnType::String => keep(true, &String::new),
        ColumnType::Integer => text
            .parse::<i64>()
            .map(|n| Some(Value::from(n)))
            .map_err(|_| format!("{text:?} is not an integer")),
        ColumnType::Number => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(|n| Some(Value::Number(n)))
            .ok_or_else(|| format!("{text:?} is not a number")),
        ColumnType::Boolean => match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Some(Value::Bool(true))),
            "false" | "no" | "0" => Ok(Some(Value::Bool(false))),
            _ => Err(format!("{text:?} is not a boolean")),
        },
        ColumnType::Email => keep(is_email(text), &|| {
            format!("{text:?} is not an e-mail address")
        }),
        ColumnType::Date => keep(is_date(text), &|| {
            format!("{text:?} is not a YYYY-MM-DD date")
        }),
    }
}

/// Whether `text` reads as a [`LogicalDate`]. The usual `YYYY-MM-DD` is checked by hand:
/// the general parser costs more than the rest of a row's checks.
fn is_date(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b[range].iter().try_fold(0u16, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u16::from(d - b'0'))
        })
    };
    if b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10))
    {
        return u8::try_from(month)
            .ok()
            .and_then(|m| time::Month::try_from(m).ok())
            .and_then(|m| time::Date::from_calendar_date(i32::from(year), m, day as u8).ok())
            .is_some();
    }
    text.parse::<LogicalDate>().is_ok()
}

/// The shape check of an e-mail address: one `@`, a non-empty local part, a dotted domain,
/// no spaces. A full RFC 5322 parser would accept addresses (quoted local parts, IP
/// literals) that Qualtrics rejects anyway, so a crate would add nothing here.
pub fn is_email(text: &str) -> bool {
    // One pass over the bytes, branching only on the few that matter: this runs on every
    // row of every file.
    let mut at = None;
    let mut dot = false;
    let mut previous = 0u8;
    for (i, &b) in text.as_bytes().iter().enumerate() {
        match b {
            b'@' if at.is_some() => return false,
            b'@' => at = Some(i),
            b'.' if at.is_some() => {
                if previous == b'.' || previous == b'@' {
                    return false;
                }
                dot = true;
            }
            b' ' | b'\t' | b'\n' | b'\x0c' | b'\r' => return false,
            _ => {}
        }
        previous = b;
    }
    matches!(at, Some(at) if at > 0 && at + 1 < text.len()) && dot && previous != b'.'
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn columns() -> Vec<Column> {
        toml::from_str::<Wrapper>(
            r#"columns = [
                { name = "id", type = "integer", required = true },
                { name = "email", type = "email", required = true },
                { name = "score", type = "number" },
                { name = "opt_in", type = "boolean" },
                { name = "visited", type = "date" },
            ]"#,
        )
        .unwrap()
        .columns
    }

    #[derive(Deserialize)]
    struct Wrapper {
        columns: Vec<Column>,
    }

    fn row(value: serde_json::Value) -> Record {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn valid_rows_are_converted_and_extra_columns_kept() {
        let mut out = row(
            json!({"id": " 42 ", "email": "a@b.co", "score": "1.5", "opt_in": "yes", "visited": "2024-05-01", "x": "y"}),
        );
        check_row(&mut out, &columns()).unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"id": 42, "email": "a@b.co", "score": 1.5, "opt_in": true, "visited": "2024-05-01", "x": "y"})
        );
    }

    #[test]
    fn optional_columns_may_be_empty_or_absent() {
        let mut r = row(json!({"id": "1", "email": "a@b.co", "score": ""}));
        assert!(check_row(&mut r, &columns()).is_ok());
    }

    #[test]
    fn each_rule_has_a_reason() {
        let cases = [
            (json!({"email": "a@b.co"}), "missing required column \"id\""),
            (json!({"id": "x", "email": "a@b.co"}), "not an integer"),
            (json!({"id": "1", "email": "nope"}), "not an e-mail"),
            (
                json!({"id": "1", "email": "a@b.co", "score": "high"}),
                "not a number",
            ),
            (
                json!({"id": "1", "email": "a@b.co", "opt_in": "maybe"}),
                "not a boolean",
            ),
            (
                json!({"id": "1", "email": "a@b.co", "visited": "2024-13-01"}),
                "not a YYYY-MM-DD",
            ),
        ];
        for (input, reason) in cases {
            let mut r = row(input.clone());
            let err = check_row(&mut r, &columns()).unwrap_err();
            assert_eq!(
                Value::Object(r),
                input,
                "a rejected row is reported as it was read"
            );
            assert!(err.contains(reason), "{input}: {err}");
        }
    }

    #[test]
    fn dates_are_checked_as_the_date_parser_checks_them() {
        let mut cases = vec![
            "2024-02-29",
            "2023-02-29",
            "2024-02-30",
            "0000-01-01",
            "9999-12-31",
            "2024-00-10",
            "2024-13-01",
            "2024-04-31",
            "2024-4-01",
            "2024-04-1",
            "2024/04/01",
            "+2024-04-01",
            "20240-04-01",
            "2024-04-01 ",
            "２０２４-04-01",
            "",
            "x",
        ];
        let generated: Vec<String> = (0..400)
            .map(|i| format!("{:04}-{:02}-{:02}", 1999 + i % 3, i % 14, i % 33))
            .collect();
        cases.extend(generated.iter().map(String::as_str));
        for text in cases {
            assert_eq!(
                is_date(text),
                text.parse::<LogicalDate>().is_ok(),
                "{text:?}"
            );
        }
    }

    /// `integer_json` holds exactly for text that is the JSON of the integer it parses to.
    #[test]
    fn integer_json_is_the_text_serde_json_writes() {
        for text in [
            "0",
            "7",
            "-7",
            "10",
            "-0",
            "+7",
            "07",
            "-07",
            " 7",
            "7 ",
            "",
            "-",
            "1e3",
            "7.0",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "999999999999999999",
            "-999999999999999999",
            "1000000000000000000",
            "99999999999999999999",
            "٣",
        ] {
            let json = text.parse::<i64>().ok().map(|n| Value::from(n).to_string());
            assert_eq!(
                integer_json(text),
                json.as_deref() == Some(text),
                "{text:?}"
            );
        }
        assert!(integer_json("-9223372036854775808"));
    }

    #[test]
    fn trim_matches_str_trim() {
        for s in [
            "",
            " ",
            "a",
            " a",
            "a ",
            "\u{a0}a",
            "a\u{3000}",
            "é",
            "\ta\n",
            "a b",
        ] {
            assert_eq!(trim(s), s.trim(), "{s:?}");
        }
    }

    #[test]
    fn blank_optional_text_is_emptied_and_a_column_declared_twice_converts_twice() {
        let twice: Vec<Column> = toml::from_str::<Wrapper>(
            r#"columns = [
                { name = "id", type = "integer" },
                { name = "id", type = "string" },
                { name = "note" },
            ]"#,
        )
        .unwrap()
        .columns;
        let mut r = row(json!({"id": " 7", "note": "  "}));
        check_row(&mut r, &twice).unwrap();
        assert_eq!(Value::Object(r), json!({"id": "7", "note": ""}));
    }

    /// The shape rules one by one, as `is_email` read before it took one pass.
    fn is_email_by_rule(text: &str) -> bool {
        let bytes = text.as_bytes();
        let Some(at) = bytes.iter().position(|&b| b == b'@') else {
            return false;
        };
        let domain = &bytes[at + 1..];
        at > 0
            && !domain.is_empty()
            && !bytes.iter().any(|b| b.is_ascii_whitespace())
            && !domain.contains(&b'@')
            && domain.contains(&b'.')
            && domain[0] != b'.'
            && domain[domain.len() - 1] != b'.'
            && !domain.windows(2).any(|w| w == b"..")
    }

    /// Every string of up to five characters from the ones the rules look at.
    #[test]
    fn email_in_one_pass_keeps_every_rule() {
        let alphabet = ['a', '@', '.', ' ', '\t', '\u{c}', '\u{a0}', 'é'];
        let mut words = vec![String::new()];
        let mut checked = 0;
        for _ in 0..5 {
            words = (words.iter())
                .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
                .collect();
            for word in &words {
                assert_eq!(is_email(word), is_email_by_rule(word), "{word:?}");
                checked += usize::from(is_email(word));
            }
        }
        assert!(checked > 0);
    }

    #[test]
    fn email_shapes() {
        for ok in ["a@b.co", "first.last+tag@sub.example.org"] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in [
            "", "a", "@b.co", "a@b", "a@@b.co", "a b@c.de", "a@b..co", "a@.co",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }
}
