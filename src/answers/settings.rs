//! A step's settings: catalog defaults with the answers' overrides applied.
//!
//! The limits here are AWS's own (SQS event source mappings, Lambda), so a
//! value that would fail at `terraform apply` fails at `etlgen new` instead,
//! with the key and the allowed range in the message.

use std::collections::BTreeMap;

use serde::Serialize;

use super::AnswerError;
use crate::catalog::{StepKind, StepSettings};

/// A resolved kind-specific parameter value.
pub type SettingValue = toml::Value;

/// The numeric settings plus the kind's parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedSettings {
    /// Queue, trigger and function settings.
    #[serde(flatten)]
    pub step: StepSettings,
    /// Kind-specific parameters that have a value.
    pub params: BTreeMap<String, SettingValue>,
}

/// `(key, min, max)` for each numeric setting, standard queues.
const LIMITS: &[(&str, u32, u32)] = &[
    ("batch_size", 1, 10_000),
    ("batching_window_seconds", 0, 300),
    ("max_concurrency", 2, 1000),
    ("timeout_seconds", 1, 900),
    ("memory_mb", 128, 10_240),
    ("ephemeral_storage_mb", 512, 10_240),
    ("max_receive_count", 1, 1000),
];

impl ResolvedSettings {
    /// Applies `overrides` (an answers-file `settings` table) to the kind's
    /// defaults. `at` locates the table in errors, e.g. `steps[2]`.
    pub fn resolve(
        kind: &StepKind,
        overrides: &toml::Table,
        at: &str,
    ) -> Result<ResolvedSettings, AnswerError> {
        let mut step = kind.settings;
        let mut params: BTreeMap<String, SettingValue> = kind
            .params
            .iter()
            .filter_map(|p| p.default.clone().map(|d| (p.name.clone(), d)))
            .collect();
        for (key, value) in overrides {
            let field = format!("{at}.settings.{key}");
            let shown = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            let invalid = |reason: String| AnswerError::Invalid {
                field: field.clone(),
                value: shown.clone(),
                reason,
            };
            if key == "fifo" {
                step.fifo = value
                    .as_bool()
                    .ok_or_else(|| invalid("expected true or false".into()))?;
            } else if let Some((_, min, max)) = LIMITS.iter().find(|(k, ..)| k == key) {
                let n = value
                    .as_integer()
                    .filter(|n| (i64::from(*min)..=i64::from(*max)).contains(n))
                    .ok_or_else(|| {
                        invalid(format!("expected a whole number from {min} to {max}"))
                    })?;
                let n = u32::try_from(n).expect("range-checked");
                *numeric_mut(&mut step, key) = n;
            } else if let Some(param) = kind.param(key) {
                let expected = param
                    .default
                    .as_ref()
                    .map_or("string", toml::Value::type_str);
                if value.type_str() != expected {
                    return Err(invalid(format!("expected a value of type {expected}")));
                }
                if let Some(s) = value.as_str() {
                    if !param.choices.is_empty() && !param.choices.iter().any(|c| c == s) {
                        return Err(invalid(format!(
                            "expected one of: {}",
                            param.choices.join(", ")
                        )));
                    }
                    let may_be_empty = param.default.as_ref().and_then(|d| d.as_str()) == Some("");
                    if (s.is_empty() && !may_be_empty) || s.chars().any(char::is_control) {
                        return Err(invalid("expected a non-empty single-line value".into()));
                    }
                }
                if let (Some(n), Some((min, max))) = (value.as_integer(), param.range)
                    && !(min..=max).contains(&n)
                {
                    return Err(invalid(format!(
                        "expected a whole number from {min} to {max}"
                    )));
                }
                params.insert(key.clone(), value.clone());
            } else {
                let mut allowed: Vec<&str> = LIMITS.iter().map(|(k, ..)| *k).collect();
                allowed.push("fifo");
                allowed.extend(kind.params.iter().map(|p| p.name.as_str()));
                return Err(AnswerError::Invalid {
                    field: format!("{at}.settings"),
                    value: key.clone(),
                    reason: format!(
                        "unknown setting for {}; expected one of: {}",
                        kind.id,
                        allowed.join(", ")
                    ),
                });
            }
        }
        // A standard queue delivers more than 10 messages only with a batching
        // window of at least a second; the default gives way to a larger batch.
        if !step.fifo && step.batch_size > 10 && step.batching_window_seconds == 0 {
            if overrides.contains_key("batching_window_seconds") {
                return Err(AnswerError::Conflict(format!(
                    "{at}.settings: a batch_size over 10 needs a batching window of at least 1 \
                     second (AWS's rule); raise batching_window_seconds"
                )));
            }
            step.batching_window_seconds = 1;
        }
        // A FIFO queue takes at most 10 messages and no batching window: the
        // kind's standard-queue defaults give way unless the user set them.
        if step.fifo {
            if !overrides.contains_key("batching_window_seconds") {
                step.batching_window_seconds = 0;
            }
            if !overrides.contains_key("batch_size") {
                step.batch_size = step.batch_size.min(10);
            }
        }
        check_fifo(&step, at)?;
        check_names(kind, &params, at)?;
        Ok(ResolvedSettings { step, params })
    }

    /// The value of parameter `name`, if set.
    pub fn param(&self, name: &str) -> Option<&SettingValue> {
        self.params.get(name)
    }

    /// The SQS visibility timeout: six times the function timeout, as AWS
    /// recommends for SQS-triggered functions.
    pub fn visibility_timeout_seconds(&self) -> u32 {
        self.step.timeout_seconds * 6
    }
}

fn numeric_mut<'a>(s: &'a mut StepSettings, key: &str) -> &'a mut u32 {
    match key {
        "batch_size" => &mut s.batch_size,
        "batching_window_seconds" => &mut s.batching_window_seconds,
        "max_concurrency" => &mut s.max_concurrency,
        "timeout_seconds" => &mut s.timeout_seconds,
        "memory_mb" => &mut s.memory_mb,
        "ephemeral_storage_mb" => &mut s.ephemeral_storage_mb,
        "max_receive_count" => &mut s.max_receive_count,
        other => unreachable!("{other} is not in LIMITS"),
    }
}

/// A parameter with `names_one_of` must name an entry of that other
/// parameter: the validator's primary key must be one of its columns.
fn check_names(
    kind: &StepKind,
    params: &BTreeMap<String, SettingValue>,
    at: &str,
) -> Result<(), AnswerError> {
    for param in &kind.params {
        let (Some(list), Some(value)) = (&param.names_one_of, params.get(&param.name)) else {
            continue;
        };
        let names: Vec<&str> = params
            .get(list)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.get("name").and_then(|n| n.as_str()))
            .collect();
        if !value.as_str().is_some_and(|v| names.contains(&v)) {
            return Err(AnswerError::Invalid {
                field: format!("{at}.settings.{}", param.name),
                value: value.to_string(),
                reason: format!("expected one of the {list}: {}", names.join(", ")),
            });
        }
    }
    Ok(())
}

/// FIFO event source mappings take at most 10 messages and no batching window.
fn check_fifo(s: &StepSettings, at: &str) -> Result<(), AnswerError> {
    if s.fifo && s.batch_size > 10 {
        return Err(AnswerError::Conflict(format!(
            "{at}.settings: a FIFO step takes a batch_size of at most 10 (got {})",
            s.batch_size
        )));
    }
    if s.fifo && s.batching_window_seconds > 0 {
        return Err(AnswerError::Conflict(format!(
            "{at}.settings: a FIFO step cannot have a batching window (got {}s); set \
             batching_window_seconds = 0",
            s.batching_window_seconds
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn table(s: &str) -> toml::Table {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn catalog_defaults_are_within_limits() {
        for kind in &Catalog::builtin().kinds {
            let resolved = ResolvedSettings::resolve(kind, &toml::Table::new(), "x").unwrap();
            assert_eq!(resolved.step, kind.settings);
            for (key, min, max) in LIMITS {
                let mut copy = kind.settings;
                let v = *numeric_mut(&mut copy, key);
                assert!((*min..=*max).contains(&v), "{}.{key} = {v}", kind.id);
            }
        }
    }

    #[test]
    fn overrides_apply_and_params_default() {
        let kind = Catalog::builtin().kind("distribution-scheduler").unwrap();
        let r = ResolvedSettings::resolve(
            kind,
            &table("batch_size = 5\nmailing_list_id = \"CG_1\""),
            "steps[0]",
        )
        .unwrap();
        assert_eq!(r.step.batch_size, 5);
        assert_eq!(
            r.param("mailing_list_id").and_then(|v| v.as_str()),
            Some("CG_1")
        );
        assert_eq!(
            r.param("send_offset_hours").and_then(|v| v.as_integer()),
            Some(9)
        );
        assert_eq!(
            r.visibility_timeout_seconds(),
            kind.settings.timeout_seconds * 6
        );
    }

    #[test]
    fn a_large_standard_batch_gets_a_batching_window() {
        let kind = Catalog::builtin().kind("validator").unwrap();
        let r = ResolvedSettings::resolve(kind, &table("batch_size = 20"), "steps.v").unwrap();
        assert_eq!(r.step.batching_window_seconds, 1);
        let notifier = Catalog::builtin().kind("notifier").unwrap();
        let empty = ResolvedSettings::resolve(notifier, &table("subject_prefix = \"\""), "x");
        assert!(empty.is_ok(), "an empty default allows an empty value");
    }

    #[test]
    fn fifo_gives_the_standard_queue_defaults_way() {
        let kind = Catalog::builtin().kind("contact-importer").unwrap();
        assert!(kind.settings.batching_window_seconds > 0);
        let r = ResolvedSettings::resolve(kind, &table("fifo = true"), "steps[0]").unwrap();
        assert_eq!(r.step.batching_window_seconds, 0);
        assert!(r.step.batch_size <= 10);
    }

    #[test]
    fn bad_overrides_name_the_key_and_the_range() {
        let kind = Catalog::builtin().kind("validator").unwrap();
        for (doc, needle) in [
            ("batch_size = 0", "steps[1].settings.batch_size"),
            ("batch_size = 20000", "from 1 to 10000"),
            ("max_concurrency = 1", "from 2 to 1000"),
            ("memory_mb = \"big\"", "whole number"),
            ("ephemeral_storage_mb = 256", "from 512 to 10240"),
            (
                "ephemeral_storage_mb = 20000",
                "steps[1].settings.ephemeral_storage_mb",
            ),
            ("dedup_memory_kb = -1", "dedup_memory_kb"),
            ("fifo = 1", "true or false"),
            ("format = \"xml\"", "csv, jsonl"),
            (
                "records_per_batch = \"many\"",
                "expected a value of type integer",
            ),
            ("primary_key = \"\"", "non-empty"),
            ("records_per_batch = 0", "from 1 to 10000"),
            ("batch_size = 20\nbatching_window_seconds = 0", "at least 1"),
            (
                "primary_key = \"response_id\"",
                "expected one of the columns: external_id, email",
            ),
            (
                "columns = [{ name = \"id\" }]",
                "expected one of the columns: id",
            ),
            ("colour = \"red\"", "unknown setting for validator"),
            ("fifo = true\nbatch_size = 11", "at most 10"),
            (
                "fifo = true\nbatching_window_seconds = 1",
                "batching window",
            ),
            (
                "fifo = true\nbatching_window_seconds = 5",
                "batching window",
            ),
        ] {
            let err = ResolvedSettings::resolve(kind, &table(doc), "steps[1]")
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{doc}: {err}");
        }
    }
}
