//! Checked values: AWS region, Qualtrics datacenter and the run schedule.
//!
//! These are checked by shape, not against a list that would go stale: a new
//! AWS region or Qualtrics datacenter must not need a new etlgen release.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::AnswerError;

fn invalid(field: &str, value: &str, reason: impl Into<String>) -> AnswerError {
    AnswerError::Invalid {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// An AWS region code such as `eu-west-1` or `us-gov-west-1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region(String);

const DIRECTIONS: &[&str] = &[
    "central",
    "north",
    "south",
    "east",
    "west",
    "northeast",
    "northwest",
    "southeast",
    "southwest",
];

impl TryFrom<String> for Region {
    type Error = AnswerError;
    fn try_from(value: String) -> Result<Self, AnswerError> {
        let expected = "expected an AWS region code such as us-east-1 or eu-west-1 (<area>[-gov]-<direction>-<digit>)";
        let parts: Vec<&str> = value.split('-').collect();
        let (area, rest) = match parts.as_slice() {
            [area, "gov", rest @ ..] => (*area, rest),
            [area, rest @ ..] => (*area, rest),
            [] => return Err(invalid("region", &value, expected)),
        };
        let ok = area.len() == 2
            && area.chars().all(|c| c.is_ascii_lowercase())
            && matches!(rest, [dir, n] if DIRECTIONS.contains(dir)
                && n.len() == 1
                && n.chars().all(|c| c.is_ascii_digit() && c != '0'));
        if ok {
            Ok(Region(value))
        } else {
            Err(invalid("region", &value, expected))
        }
    }
}

/// A Qualtrics datacenter id such as `iad1`, `fra1` or `co1`: the host of
/// `https://{datacenter}.qualtrics.com/API/v3/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Datacenter(String);

impl TryFrom<String> for Datacenter {
    type Error = AnswerError;
    fn try_from(value: String) -> Result<Self, AnswerError> {
        let letters = value.chars().take_while(|c| c.is_ascii_lowercase()).count();
        let digits = &value[letters..];
        let ok = (2..=4).contains(&letters)
            && (1..=2).contains(&digits.len())
            && digits.chars().all(|c| c.is_ascii_digit());
        if ok {
            Ok(Datacenter(value))
        } else {
            Err(invalid(
                "datacenter",
                &value,
                "expected a Qualtrics datacenter id: 2-4 lowercase letters then 1-2 digits, \
                 such as iad1, fra1 or co1 (Account Settings > Qualtrics IDs)",
            ))
        }
    }
}

/// When a scheduled pipeline runs: an EventBridge Scheduler expression,
/// `cron(minutes hours day-of-month month day-of-week year)` or
/// `rate(N minutes|hours|days)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Schedule(String);

const SCHEDULE_HELP: &str = "expected cron(minutes hours day-of-month month day-of-week year), \
     for example cron(0 6 * * ? *), or rate(N minutes|hours|days)";

impl Schedule {
    fn check_cron(value: &str, fields: &str) -> Result<(), AnswerError> {
        let parts: Vec<&str> = fields.split_whitespace().collect();
        if parts.len() != 6 {
            return Err(invalid(
                "schedule",
                value,
                format!(
                    "cron() needs 6 fields, found {}; {SCHEDULE_HELP}",
                    parts.len()
                ),
            ));
        }
        let (dom, dow) = (parts[2], parts[4]);
        if (dom == "?") == (dow == "?") {
            return Err(invalid(
                "schedule",
                value,
                "exactly one of day-of-month and day-of-week must be '?' (EventBridge rule), \
                 for example cron(0 6 * * ? *)",
            ));
        }
        // The `cron` crate parses the same field grammar with a leading
        // seconds field; it does not support the L, W and # extensions.
        let quartz = format!("0 {}", parts.join(" "));
        let schedule = cron::Schedule::from_str(&quartz).map_err(|e| {
            let detail = e.to_string();
            let detail = detail.lines().last().unwrap_or_default().trim().to_string();
            invalid(
                "schedule",
                value,
                format!("{detail} ({SCHEDULE_HELP}; L, W and # are not supported)"),
            )
        })?;
        if schedule.upcoming(chrono::Utc).next().is_none() {
            return Err(invalid("schedule", value, "it never fires again"));
        }
        Ok(())
    }

    fn check_rate(value: &str, body: &str) -> Result<(), AnswerError> {
        let mut it = body.split_whitespace();
        let (Some(n), Some(unit), None) = (it.next(), it.next(), it.next()) else {
            return Err(invalid("schedule", value, SCHEDULE_HELP));
        };
        let n: u32 =
            n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                invalid("schedule", value, "the rate must be a whole number >= 1")
            })?;
        let singular = matches!(unit, "minute" | "hour" | "day");
        let plural = matches!(unit, "minutes" | "hours" | "days");
        if (n == 1 && singular) || (n > 1 && plural) {
            Ok(())
        } else {
            Err(invalid(
                "schedule",
                value,
                "the unit must be minute|hour|day for 1 and minutes|hours|days otherwise",
            ))
        }
    }
}

impl TryFrom<String> for Schedule {
    type Error = AnswerError;
    fn try_from(value: String) -> Result<Self, AnswerError> {
        let trimmed = value.trim();
        if let Some(body) = trimmed
            .strip_prefix("cron(")
            .and_then(|r| r.strip_suffix(')'))
        {
            Self::check_cron(&value, body)?;
        } else if let Some(body) = trimmed
            .strip_prefix("rate(")
            .and_then(|r| r.strip_suffix(')'))
        {
            Self::check_rate(&value, body)?;
        } else {
            return Err(invalid("schedule", &value, SCHEDULE_HELP));
        }
        Ok(Schedule(trimmed.to_string()))
    }
}

macro_rules! string_newtype_impls {
    ($($name:ident),*) => {$(
        impl $name {
            /// The value as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<&str> for $name {
            type Error = AnswerError;
            fn try_from(value: &str) -> Result<Self, AnswerError> {
                Self::try_from(value.to_string())
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }
    )*};
}
string_newtype_impls!(Region, Datacenter, Schedule);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions() {
        for ok in [
            "us-east-1",
            "eu-west-1",
            "ap-southeast-2",
            "us-gov-west-1",
            "il-central-1",
        ] {
            Region::try_from(ok).unwrap();
        }
        for bad in [
            "",
            "us-east",
            "us-east-0",
            "eu-middle-1",
            "EU-west-1",
            "useast1",
            "us-east-12",
        ] {
            let err = Region::try_from(bad).unwrap_err().to_string();
            assert!(err.contains("region") && err.contains("us-east-1"), "{err}");
        }
    }

    #[test]
    fn datacenters() {
        for ok in ["iad1", "fra1", "co1", "ca1", "sjc1", "gov1", "au12"] {
            Datacenter::try_from(ok).unwrap();
        }
        for bad in [
            "",
            "iad",
            "1iad",
            "fra1.",
            "x1",
            "verylong1",
            "IAD1",
            "iad123",
            "fra1/x",
        ] {
            let err = Datacenter::try_from(bad).unwrap_err().to_string();
            assert!(err.contains("datacenter"), "{err}");
        }
    }

    #[test]
    fn schedules() {
        for ok in [
            "cron(0 6 * * ? *)",
            "cron(15 10 ? * MON-FRI *)",
            "cron(0/15 * * * ? *)",
            "rate(1 day)",
            "rate(5 minutes)",
        ] {
            Schedule::try_from(ok).unwrap();
        }
        for (bad, why) in [
            ("0 6 * * *", "expected cron("),
            ("cron(0 6 * * *)", "6 fields"),
            ("cron(0 6 * * * *)", "exactly one"),
            ("cron(0 6 ? * ? *)", "exactly one"),
            ("cron(0 25 * * ? *)", "Hours"),
            ("cron(0 6 L * ? *)", "not supported"),
            ("cron(0 6 * * ? 2001)", "never fires"),
            ("rate(0 days)", ">= 1"),
            ("rate(1 days)", "unit"),
            ("rate(2 weeks)", "unit"),
        ] {
            let err = Schedule::try_from(bad).unwrap_err().to_string();
            assert!(
                err.contains("schedule") && err.contains(why),
                "{bad}: {err}"
            );
        }
    }
}
