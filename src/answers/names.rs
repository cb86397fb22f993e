//! Checked names: the client, its steps and its environments.
//!
//! Every name ends up in paths, crate names, Terraform identifiers and AWS
//! resource names, so each is validated as a plain identifier before any path
//! is built. That is what keeps `../x`, `a/b` or `{{x}}` from escaping the
//! target directory or injecting template code.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::AnswerError;

/// Rust keywords (strict, reserved and edition-dependent) and Terraform's
/// reserved identifiers. A name equal to one of these would break a crate
/// name, a module path or an HCL block.
const RESERVED: &[&str] = &[
    // Rust
    "abstract",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
    // Terraform
    "count",
    "data",
    "depends-on",
    "each",
    "for-each",
    "lifecycle",
    "local",
    "locals",
    "module",
    "null",
    "output",
    "path",
    "provider",
    "providers",
    "resource",
    "source",
    "terraform",
    "var",
    "variable",
    "version",
    // Names of crates every generated workspace already has.
    "etlgen-runtime",
    "xtask",
    "std",
    "core",
    "alloc",
    "test",
];

/// Checks `value` as an identifier: lowercase ASCII letters, digits and single
/// hyphens, starting with a letter, at most `max` characters, not reserved.
fn check_identifier(field: &'static str, value: &str, max: usize) -> Result<(), AnswerError> {
    let invalid = |reason: String| AnswerError::Invalid {
        field: field.to_string(),
        value: value.to_string(),
        reason,
    };
    let rule = "use lowercase ASCII letters, digits and single hyphens, starting with a letter";
    if value.is_empty() {
        return Err(invalid(format!("it is empty; {rule}")));
    }
    if value.chars().count() > max {
        return Err(invalid(format!(
            "it is {} characters; at most {max} are allowed",
            value.chars().count()
        )));
    }
    if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(invalid(format!("it must start with a letter a-z; {rule}")));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(invalid(format!("it contains {bad:?}; {rule}")));
    }
    if value.ends_with('-') || value.contains("--") {
        return Err(invalid(format!(
            "hyphens must separate letters or digits; {rule}"
        )));
    }
    if RESERVED.contains(&value) {
        return Err(invalid(
            "it is a reserved word in Rust, Terraform or the generated workspace; choose another name"
                .to_string(),
        ));
    }
    Ok(())
}

/// The words that mark a production resource. The framework refuses, outside
/// production, any resource name containing one as a word (`acme-prod-data`),
/// so a name that contains one would break every other environment.
const PRODUCTION_WORDS: &[&str] = &["prod", "production"];

/// Refuses `value` if it has a production word as a hyphen-separated word,
/// unless it is exactly one and `exact_ok` (an environment called `prod`).
fn check_production_word(
    field: &'static str,
    value: &str,
    exact_ok: bool,
) -> Result<(), AnswerError> {
    if exact_ok && PRODUCTION_WORDS.contains(&value) {
        return Ok(());
    }
    match value.split('-').find(|w| PRODUCTION_WORDS.contains(w)) {
        None => Ok(()),
        Some(word) => Err(AnswerError::Invalid {
            field: field.to_string(),
            value: value.to_string(),
            reason: format!(
                "it contains the word {word:?}, which marks production resources: every \
                 non-production environment would refuse the names derived from it; choose \
                 another name"
            ),
        }),
    }
}

/// The names the generated infrastructure gives resources of its own beside the steps'
/// (`<client>-<env>-<name>`): the on-call topic, and the scheduler's and the submission
/// API's IAM roles. A step with one of these names would share that name: SNS would
/// silently make the notifier's topic the on-call one, and IAM would refuse the role. (An
/// HTTP source's `submit` role is checked with the source, in `Answers::resolve`.)
const INFRASTRUCTURE_NAMES: &[&str] = &["oncall", "sched", "api"];

/// A step's name beyond the identifier rules: not a name of the infrastructure's own, and
/// not ending in `-dlq`, which would be the name of another step's dead-letter queue.
fn check_step_name(field: &'static str, value: &str) -> Result<(), AnswerError> {
    let reason = if INFRASTRUCTURE_NAMES.contains(&value) {
        "the generated infrastructure already names a resource of its own this way \
         (`<client>-<env>-oncall`, `-sched` and `-api` are taken); choose another name"
    } else if value.ends_with("-dlq") {
        "a name ending in -dlq is another step's dead-letter queue; choose another name"
    } else {
        return Ok(());
    };
    Err(AnswerError::Invalid {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    })
}

/// Any other identifier has only the identifier rules.
fn no_more_checks(_: &'static str, _: &str) -> Result<(), AnswerError> {
    Ok(())
}

macro_rules! identifier_newtype {
    ($(#[$doc:meta])* $name:ident, field = $field:literal, max = $max:literal, production_ok = $exact:literal, also = $also:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The longest name accepted.
            pub const MAX_LEN: usize = $max;

            /// The name as written (kebab-case).
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name in snake_case, for Rust and Terraform identifiers.
            pub fn snake(&self) -> String {
                self.0.replace('-', "_")
            }
        }

        impl TryFrom<String> for $name {
            type Error = AnswerError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                check_identifier($field, &value, $max)?;
                check_production_word($field, &value, $exact)?;
                $also($field, &value)?;
                Ok(Self(value))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = AnswerError;
            fn try_from(value: &str) -> Result<Self, Self::Error> {
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
    };
}

identifier_newtype!(
    /// The client's name: the repository, crate prefix and AWS name prefix.
    ClientName, field = "client", max = 63, production_ok = false, also = no_more_checks
);
identifier_newtype!(
    /// A step's name: its crate, queue and function suffix.
    StepName, field = "step name", max = 40, production_ok = false, also = check_step_name
);
identifier_newtype!(
    /// A deployment environment such as `dev` or `prod`.
    EnvName, field = "environment", max = 16, production_ok = true, also = no_more_checks
);

impl EnvName {
    /// The environment every generated repository has for the local emulator;
    /// it is not one of the answers' deploy targets.
    pub const LOCAL: &'static str = "local";

    /// The environment each developer deploys as their own stack, from their
    /// own Terraform workspace, whose name every resource name then carries.
    pub const PERSONAL: &'static str = "dev";

    /// The longest workspace name a personal environment accepts (the
    /// generated Terraform refuses longer ones).
    pub const WORKSPACE_MAX: usize = 12;

    /// Whether each developer deploys this environment as their own stack.
    pub fn is_personal(&self) -> bool {
        self.as_str() == Self::PERSONAL
    }

    /// The longest the environment's part of a resource name can be: the
    /// name, and in a personal environment `-` and the workspace.
    pub fn name_part_len(&self) -> usize {
        if self.is_personal() {
            self.as_str().len() + 1 + Self::WORKSPACE_MAX
        } else {
            self.as_str().len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(s: &str) -> Result<ClientName, String> {
        ClientName::try_from(s).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_plain_identifiers() {
        for ok in ["client-x", "acme", "a1", "big-bank-2", &"a".repeat(63)] {
            assert_eq!(client(ok).unwrap().as_str(), ok);
        }
        assert_eq!(client("client-x").unwrap().snake(), "client_x");
    }

    #[test]
    fn rejects_names_that_could_escape_or_inject() {
        for (bad, why) in [
            ("../x", "start with a letter"),
            ("x..y", "contains '.'"),
            ("a/b", "contains '/'"),
            ("{{x}}", "start with a letter"),
            ("", "empty"),
            ("Client", "start with a letter"),
            ("clïent", "contains 'ï'"),
            ("client_x", "contains '_'"),
            ("client-", "hyphens"),
            ("a--b", "hyphens"),
            ("1client", "start with a letter"),
            ("fn", "reserved"),
            ("module", "reserved"),
            ("xtask", "reserved"),
        ] {
            let err = client(bad).unwrap_err();
            assert!(err.contains("client"), "{bad}: {err}");
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn step_names_the_infrastructure_uses_are_refused() {
        for (bad, why) in [
            ("oncall", "already names a resource"),
            ("sched", "already names a resource"),
            ("api", "already names a resource"),
            ("import-dlq", "dead-letter queue"),
        ] {
            let err = StepName::try_from(bad).unwrap_err().to_string();
            assert!(
                err.contains("step name") && err.contains(why),
                "{bad}: {err}"
            );
        }
        for good in ["oncall-notify", "api-intake", "dlq-export", "import"] {
            assert!(StepName::try_from(good).is_ok(), "{good}");
        }
        assert!(
            ClientName::try_from("api").is_ok(),
            "only step names share these"
        );
    }

    #[test]
    fn production_words_only_name_the_production_environment() {
        assert!(client("prod-x").unwrap_err().contains("marks production"));
        assert!(client("big-production").is_err());
        assert!(client("products").is_ok() && client("reprod").is_ok());
        assert!(EnvName::try_from("prod").is_ok() && EnvName::try_from("production").is_ok());
        assert!(EnvName::try_from("pre-prod").is_err());
        assert!(StepName::try_from("prod-export").is_err());
    }

    #[test]
    fn rejects_names_over_the_limit() {
        let err = client(&"a".repeat(64)).unwrap_err();
        assert!(err.contains("64 characters; at most 63"), "{err}");
    }

    #[test]
    fn deserializing_validates() {
        #[derive(Debug, Deserialize)]
        struct Doc {
            #[allow(dead_code)]
            name: StepName,
        }
        let err = toml::from_str::<Doc>("name = \"../evil\"").unwrap_err();
        assert!(err.to_string().contains("step name"), "{err}");
    }
}
