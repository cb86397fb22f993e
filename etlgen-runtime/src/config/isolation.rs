//! The guard that keeps a non-production environment away from production resources.
//!
//! The design's rule is that a developer's `dev` run can never touch `prod`. Names carry
//! the environment, so the guard is mechanical: outside `prod`, no resource identifier in
//! the resolved configuration (a key ending in `bucket`, `_arn`, `_url` or `_id`) may name
//! production as a word of its own (`acme-prod-data`, `…/prod/qualtrics`). A copy-pasted
//! queue URL or secret id then fails the cold start instead of writing to production.

use figment::value::Value;

/// The environments allowed to name production resources.
pub const PRODUCTION: &[&str] = &["prod", "production"];

fn is_resource_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["bucket", "_arn", "_url", "_id"]
        .iter()
        .any(|suffix| key.ends_with(suffix))
}

fn names_production(value: &str) -> bool {
    value
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| PRODUCTION.contains(&word.to_ascii_lowercase().as_str()))
}

/// The dotted paths of resource identifiers that name production.
pub fn production_references(root: &Value) -> Vec<String> {
    let mut found = Vec::new();
    walk(root, "", &mut found);
    found
}

fn walk(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Dict(_, dict) => {
            for (key, child) in dict {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if let Value::String(_, text) = child {
                    if is_resource_key(key) && names_production(text) {
                        found.push(child_path);
                    }
                } else {
                    walk(child, &child_path, found);
                }
            }
        }
        Value::Array(_, items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_is_recognised_as_a_word_in_identifiers_only() {
        assert!(names_production("acme-prod-data"));
        assert!(names_production(
            "https://sqs.eu-west-1.amazonaws.com/1/acme-PROD-invite"
        ));
        assert!(names_production("acme/production/qualtrics"));
        assert!(!names_production("acme-products-dev"));
        assert!(!names_production("reproduce"));
        assert!(
            is_resource_key("data_bucket")
                && is_resource_key("topic_arn")
                && is_resource_key("secret_id")
        );
        assert!(!is_resource_key("subject"));
    }
}
