//! The embedded templates and the vendored framework, and the Tera engine.
//!
//! Templates and the framework crate are compiled into the binary with
//! `include_dir`, as cargo-dist does: the etlgen version is the template
//! version, and generation works offline with nothing to fetch. Only files
//! ending in `.tera` are templates; everything else is copied byte for byte,
//! so a binary file or a stray `{{` in a copied file can never break a render.

use std::sync::OnceLock;

use globset::{Glob, GlobSet, GlobSetBuilder};
use include_dir::{Dir, DirEntry, include_dir};
use serde::Deserialize;

/// The template tree (`templates/` in the etlgen source).
pub static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");

/// The framework crate (`etlgen-runtime/` in the etlgen source).
pub static FRAMEWORK: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/etlgen-runtime");

/// Where the framework is vendored in a generated repository.
pub const FRAMEWORK_DIR: &str = "vendor/etlgen-runtime";

/// The suffix that marks a file as a Tera template.
pub const TEMPLATE_SUFFIX: &str = ".tera";

const MANIFEST: &str = "templates.toml";

/// `templates/templates.toml`: which template sets exist and who owns what.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Template sets, rendered in this order.
    #[serde(rename = "set")]
    pub sets: Vec<TemplateSet>,
    /// Ownership globs.
    pub owners: Owners,
}

/// A folder of templates rendered once per repository, environment or step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSet {
    /// Folder under `templates/`; may contain `{kind}`.
    pub dir: String,
    /// What the set is rendered for.
    #[serde(rename = "for")]
    pub each: Each,
    /// Output folder; may contain `{env}`, `{step}`, `{kind}`.
    pub into: String,
}

/// What a template set is rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Each {
    /// Once.
    Repository,
    /// Once per deployment environment.
    Environment,
    /// Once per pipeline step.
    Step,
}

/// Ownership globs from the manifest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owners {
    /// Always regenerated.
    pub owned: Vec<String>,
    /// Written once, then the client's.
    pub seeded: Vec<String>,
}

/// Who owns a generated file, and so what `update` may do to it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    /// etlgen's: always regenerated, and an edit is drift.
    Owned,
    /// Shared: 3-way merged on update.
    Merged,
    /// The client's after the first render.
    Seeded,
}

impl Owner {
    /// The class's name, as the lock file and `--dry-run` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Owner::Owned => "owned",
            Owner::Merged => "merged",
            Owner::Seeded => "seeded",
        }
    }
}

/// The parsed manifest, the compiled ownership globs and the Tera engine.
pub struct Templates {
    /// The manifest.
    pub manifest: Manifest,
    owned: GlobSet,
    seeded: GlobSet,
    /// Every `.tera` file, registered under its path in `templates/`.
    pub tera: tera::Tera,
}

/// A problem with the embedded templates themselves: a bug in etlgen.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// `templates.toml` is malformed.
    #[error("templates/{MANIFEST} is invalid: {0}")]
    Manifest(String),
    /// A template does not parse.
    #[error("a template does not parse: {0:#}")]
    Parse(#[from] tera::Error),
}

impl Templates {
    /// The templates embedded in this binary, checked once.
    pub fn builtin() -> &'static Templates {
        static BUILTIN: OnceLock<Templates> = OnceLock::new();
        BUILTIN.get_or_init(|| {
            Templates::load(&TEMPLATES).expect("the embedded templates are checked by tests")
        })
    }

    /// Parses the manifest and every template of `dir`.
    pub fn load(dir: &Dir<'static>) -> Result<Templates, TemplateError> {
        let manifest_text = dir
            .get_file(MANIFEST)
            .and_then(|f| f.contents_utf8())
            .ok_or_else(|| TemplateError::Manifest("missing or not UTF-8".into()))?;
        let manifest: Manifest =
            toml::from_str(manifest_text).map_err(|e| TemplateError::Manifest(e.to_string()))?;
        let globs = |patterns: &[String]| -> Result<GlobSet, TemplateError> {
            let mut b = GlobSetBuilder::new();
            for p in patterns {
                b.add(Glob::new(p).map_err(|e| TemplateError::Manifest(e.to_string()))?);
            }
            b.build()
                .map_err(|e| TemplateError::Manifest(e.to_string()))
        };
        let owned = globs(&manifest.owners.owned)?;
        let seeded = globs(&manifest.owners.seeded)?;

        let mut sources = Vec::new();
        for file in files(dir) {
            let path = file.path().to_string_lossy().replace('\\', "/");
            if path.ends_with(TEMPLATE_SUFFIX) {
                let text = file.contents_utf8().ok_or_else(|| {
                    TemplateError::Manifest(format!("template {path} is not UTF-8"))
                })?;
                sources.push((path, text));
            }
        }
        let tera = engine(sources)?;
        Ok(Templates {
            manifest,
            owned,
            seeded,
            tera,
        })
    }

    /// The ownership class of a generated file at `path`.
    pub fn owner(&self, path: &str) -> Owner {
        if self.owned.is_match(path) {
            Owner::Owned
        } else if self.seeded.is_match(path) {
            Owner::Seeded
        } else {
            Owner::Merged
        }
    }
}

/// The Tera engine etlgen renders with: no autoescaping (nothing here is
/// HTML), every template parsed up front.
fn engine(sources: Vec<(String, &str)>) -> Result<tera::Tera, TemplateError> {
    let mut tera = tera::Tera::default();
    tera.autoescape_on(vec![]);
    tera.add_raw_templates(sources)?;
    Ok(tera)
}

/// Every file under `dir`, depth first, in include_dir's (sorted) order.
pub fn files<'a>(dir: &'a Dir<'a>) -> Vec<&'a include_dir::File<'a>> {
    let mut out = Vec::new();
    for entry in dir.entries() {
        match entry {
            DirEntry::Dir(d) => out.extend(files(d)),
            DirEntry::File(f) => out.push(f),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_the_manifest_loads() {
        let t = Templates::load(&TEMPLATES).unwrap();
        assert!(t.tera.get_template_names().count() > 5);
        for set in &t.manifest.sets {
            let dir = set.dir.split("/{").next().unwrap();
            assert!(
                TEMPLATES.get_dir(dir).is_some(),
                "template set {dir} is missing"
            );
        }
    }

    /// Line numbers (1-based) of GitHub Actions expressions `${{` that sit
    /// outside `{% raw %}` … `{% endraw %}` and so would be eaten by Tera.
    fn unescaped_github_expressions(text: &str) -> Vec<usize> {
        const OPEN: &str = "{% raw %}";
        const CLOSE: &str = "{% endraw %}";
        let mut found = Vec::new();
        let mut raw = false;
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            loop {
                if raw {
                    match rest.find(CLOSE) {
                        Some(c) => {
                            raw = false;
                            rest = &rest[c + CLOSE.len()..];
                        }
                        None => break,
                    }
                } else {
                    let open = rest.find(OPEN);
                    if rest.find("${{").is_some_and(|e| open.is_none_or(|o| e < o)) {
                        found.push(n + 1);
                        break;
                    }
                    match open {
                        Some(o) => {
                            raw = true;
                            rest = &rest[o + OPEN.len()..];
                        }
                        None => break,
                    }
                }
            }
        }
        found
    }

    #[test]
    fn the_github_expression_lint_works() {
        assert_eq!(
            unescaped_github_expressions("a\nrun: ${{ github.sha }}"),
            [2]
        );
        assert_eq!(
            unescaped_github_expressions("{% raw %}${{ x }}{% endraw %} ${{ y }}"),
            [1]
        );
        assert!(unescaped_github_expressions("{% raw %}\n${{ x }}\n{% endraw %}").is_empty());
        assert!(unescaped_github_expressions("{{ client }} $HOME").is_empty());
    }

    /// GitHub Actions expressions collide with Tera's delimiters; in a
    /// template they must sit inside `{% raw %}` … `{% endraw %}`.
    #[test]
    fn no_unescaped_github_expressions_in_templates() {
        for file in files(&TEMPLATES) {
            let path = file.path().display().to_string();
            if path.ends_with(TEMPLATE_SUFFIX) {
                let lines = unescaped_github_expressions(file.contents_utf8().unwrap());
                assert!(
                    lines.is_empty(),
                    "{path}: unescaped ${{{{ on lines {lines:?}"
                );
            }
        }
    }

    #[test]
    fn undefined_variables_are_errors_not_empty_strings() {
        let tera = engine(vec![
            ("t.tera".into(), "name = {{ missing }}"),
            ("field.tera".into(), "name = {{ step.missing }}"),
            ("html.html.tera".into(), "<b>{{ x }}</b>"),
        ])
        .unwrap();
        for name in ["t.tera", "field.tera"] {
            let mut ctx = tera::Context::new();
            ctx.insert("step", &serde_json::json!({"name": "a"}));
            let err = tera.render(name, &ctx).unwrap_err();
            assert!(format!("{err:?}").contains("missing"), "{name}: {err:?}");
        }
        let mut ctx = tera::Context::new();
        ctx.insert("x", "<&>");
        assert_eq!(
            tera.render("html.html.tera", &ctx).unwrap(),
            "<b><&></b>",
            "no escaping"
        );
    }

    #[test]
    fn ownership_classes() {
        let t = Templates::builtin();
        assert_eq!(t.owner("vendor/etlgen-runtime/src/lib.rs"), Owner::Owned);
        assert_eq!(t.owner("Cargo.lock"), Owner::Owned);
        assert_eq!(t.owner("lambdas/invite/src/hooks.rs"), Owner::Seeded);
        assert_eq!(t.owner("lambdas/invite/src/main.rs"), Owner::Owned);
        assert_eq!(t.owner("Cargo.toml"), Owner::Merged);
        assert_eq!(t.owner("README.md"), Owner::Merged);
        assert_eq!(t.owner("xtask/src/main.rs"), Owner::Owned);
        assert_eq!(t.owner(".github/workflows/ci.yml"), Owner::Merged);
        assert_eq!(t.owner("RUNBOOK.md"), Owner::Merged);
        assert_eq!(t.owner("docs/pipeline.md"), Owner::Merged);
    }
}
