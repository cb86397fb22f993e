//! Hook points and their defaults, quoted from the framework's own source.
//!
//! Each kind's `Hooks` trait in etlgen-runtime documents every method with a
//! summary and a "By default …" paragraph. The scoping document quotes those
//! doc comments from the framework embedded in this binary instead of keeping
//! a second copy of the text in the catalog, so it can never describe a
//! default the framework no longer has. A test reads every catalog hook.

use serde::Serialize;

use super::ScopeError;
use crate::catalog::StepKind;
use crate::templates::{self, FRAMEWORK};

/// A hook point: a method of the step's `Hooks` trait that client code may
/// override in `lambdas/<step>/src/hooks.rs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hook {
    /// The method name.
    pub name: String,
    /// What it decides (the doc comment's summary).
    pub purpose: String,
    /// What the framework does when it is not overridden ("By default …").
    pub default: String,
}

/// The hook points of `kind`, in catalog order.
pub fn hooks(kind: &StepKind) -> Result<Vec<Hook>, ScopeError> {
    let missing = |what: &str| {
        ScopeError::Internal(format!(
            "the framework documents no {what} of the {} kind",
            kind.id
        ))
    };
    let source = kind_source(&kind.id).ok_or_else(|| missing("Hooks trait"))?;
    let documented = trait_methods(source);
    kind.hooks
        .iter()
        .map(|name| {
            documented
                .iter()
                .find(|h| &h.name == name)
                .cloned()
                .ok_or_else(|| missing(&format!("hook `{name}` with a \"By default\" paragraph")))
        })
        .collect()
}

/// The framework source file that declares `pub const KIND: &str = "<id>"`.
fn kind_source(id: &str) -> Option<&'static str> {
    let declaration = format!("pub const KIND: &str = \"{id}\";");
    templates::files(&FRAMEWORK)
        .into_iter()
        .filter(|f| f.path().starts_with("src/kinds"))
        .filter_map(|f| f.contents_utf8())
        .find(|text| text.lines().any(|l| l.trim() == declaration))
}

/// The documented methods of the `pub trait Hooks` block in `source`.
fn trait_methods(source: &str) -> Vec<Hook> {
    let mut out = Vec::new();
    let mut docs: Vec<&str> = Vec::new();
    let body = source
        .lines()
        .skip_while(|l| !l.starts_with("pub trait Hooks"))
        .skip(1)
        .take_while(|l| *l != "}");
    for line in body {
        let line = line.trim();
        if let Some(doc) = line.strip_prefix("///") {
            docs.push(doc.trim());
        } else if let Some(rest) = line.strip_prefix("fn ") {
            let name = rest.split(['(', '<']).next().unwrap_or_default();
            if let Some(hook) = hook(name, &docs) {
                out.push(hook);
            }
            docs.clear();
        } else if !line.starts_with("#[") {
            docs.clear();
        }
    }
    out
}

/// A hook from its doc comment: the first paragraph is the purpose, the one
/// starting "By default" the default, without its "; see [`f`]" pointer.
fn hook(name: &str, docs: &[&str]) -> Option<Hook> {
    let paragraphs: Vec<String> = docs
        .split(|l| l.is_empty())
        .filter(|p| !p.is_empty())
        .map(|p| p.join(" "))
        .collect();
    let purpose = paragraphs.first()?.clone();
    let default = paragraphs.iter().find(|p| p.starts_with("By default"))?;
    let default = match default.split_once("; see [") {
        Some((text, _)) => format!("{text}."),
        None => default.clone(),
    };
    Some(Hook {
        name: name.to_string(),
        purpose,
        default: default.replace("[`", "`").replace("`]", "`"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    #[test]
    fn every_catalog_hook_has_a_purpose_and_a_default() {
        for kind in &Catalog::builtin().kinds {
            let hooks = hooks(kind).unwrap_or_else(|e| panic!("{e}"));
            let names: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
            assert_eq!(names, kind.hooks, "{}", kind.id);
            for h in &hooks {
                assert!(
                    h.default.starts_with("By default"),
                    "{}.{}",
                    kind.id,
                    h.name
                );
                assert!(
                    h.purpose.ends_with('.'),
                    "{}.{}: {}",
                    kind.id,
                    h.name,
                    h.purpose
                );
                assert!(!h.default.contains("; see"), "{}", h.default);
            }
        }
    }

    #[test]
    fn a_doc_comment_splits_into_purpose_and_default() {
        let source = "pub trait Hooks: Send {\n    /// Builds the request.\n    ///\n    \
                      /// By default a `POST /distributions` to the run's list; see\n    \
                      /// [`build_request`].\n    fn build_request(&self) -> u8 {\n        \
                      build_request()\n    }\n\n    /// Undocumented default.\n    fn other(&self);\n}\n";
        let hooks = trait_methods(source);
        assert_eq!(
            hooks,
            [Hook {
                name: "build_request".into(),
                purpose: "Builds the request.".into(),
                default: "By default a `POST /distributions` to the run's list.".into(),
            }]
        );
    }

    #[test]
    fn an_unknown_hook_is_an_error_naming_it() {
        let mut kind = Catalog::builtin().kind("notifier").unwrap().clone();
        kind.hooks.push("nope".into());
        let err = hooks(&kind).unwrap_err().to_string();
        assert!(err.contains("`nope`") && err.contains("notifier"), "{err}");
    }
}
