//! `.etlgen/lock.toml`: what etlgen last rendered into a repository, file by
//! file, with each file's ownership class and the SHA-256 of its rendered
//! bytes.
//!
//! It is the record `check` compares the working tree with, the proof that a
//! re-rendered merge base is the one really rendered (when the pristine ref
//! did not survive a clone), and the list of which files belong to etlgen.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::plan::Plan;
use crate::render::Tree;
use crate::templates::Owner;

/// Where the lock lives in every generated repository.
pub const LOCK_PATH: &str = ".etlgen/lock.toml";

/// The parsed lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// The etlgen version that rendered the files.
    pub etlgen_version: String,
    /// The client the repository was rendered for.
    pub client: String,
    /// Every rendered file but the lock itself, by path.
    pub files: BTreeMap<String, LockedFile>,
}

/// One rendered file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedFile {
    /// Who owns it: owned, merged or seeded.
    pub owner: Owner,
    /// The SHA-256 of its rendered bytes, in hex.
    pub sha256: String,
}

/// The lock file is unreadable.
#[derive(Debug, thiserror::Error)]
#[error(
    "{LOCK_PATH} is not a valid etlgen lock file: {0}; restore it with `git checkout -- {LOCK_PATH}`"
)]
pub struct LockError(String);

impl LockFile {
    /// The lock of a render: every file of `tree` but the lock itself, with
    /// the owner the plan gave it.
    pub fn of_render(plan: &Plan, tree: &Tree) -> LockFile {
        let files = plan
            .files
            .iter()
            .filter(|f| f.path != LOCK_PATH)
            .filter_map(|f| {
                let bytes = tree.get(&f.path)?;
                Some((
                    f.path.clone(),
                    LockedFile {
                        owner: f.owner,
                        sha256: sha256(bytes),
                    },
                ))
            })
            .collect();
        LockFile {
            etlgen_version: crate::plan::ETLGEN_VERSION.to_string(),
            client: plan.answers.client.as_str().to_string(),
            files,
        }
    }

    /// The file's text: a comment saying what it is, then the TOML, one
    /// line per file so a diff of it reads as a list of changed files.
    pub fn to_text(&self) -> String {
        let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut out = format!(
            "# What etlgen last rendered here: each file's owner and SHA-256.\n\
             # Written by etlgen; `etlgen check` compares the working tree with it.\n\n\
             etlgen_version = {}\nclient = {}\n\n[files]\n",
            quote(&self.etlgen_version),
            quote(&self.client)
        );
        for (path, file) in &self.files {
            out.push_str(&format!(
                "{} = {{ owner = \"{}\", sha256 = \"{}\" }}\n",
                quote(path),
                file.owner.as_str(),
                file.sha256
            ));
        }
        out
    }

    /// Parses a lock file's text.
    pub fn parse(text: &str) -> Result<LockFile, LockError> {
        toml::from_str(text).map_err(|e| LockError(e.message().trim().to_string()))
    }

    /// Whether `tree` holds exactly the files this lock records, byte for
    /// byte (the lock itself aside).
    pub fn describes(&self, tree: &Tree) -> bool {
        let rendered = tree.keys().filter(|p| *p != LOCK_PATH).count();
        rendered == self.files.len()
            && self
                .files
                .iter()
                .all(|(path, f)| tree.get(path).is_some_and(|b| sha256(b) == f.sha256))
    }
}

/// The SHA-256 of `bytes`, in lower-case hex.
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answers::{Answers, AnswersFile};
    use crate::catalog::Catalog;

    fn render_default() -> (Plan, Tree) {
        let raw = AnswersFile {
            client: Some("acme".into()),
            ..AnswersFile::default()
        };
        let answers = Answers::resolve(&raw, Catalog::builtin()).unwrap();
        let plan = Plan::new(answers).unwrap();
        let tree = crate::render::render(&plan).unwrap();
        (plan, tree)
    }

    #[test]
    fn the_rendered_lock_records_every_other_file_and_parses_back() {
        let (plan, tree) = render_default();
        let lock = LockFile::parse(std::str::from_utf8(&tree[LOCK_PATH]).unwrap()).unwrap();
        assert_eq!(lock, LockFile::of_render(&plan, &tree));
        assert_eq!(lock.files.len(), tree.len() - 1);
        assert!(!lock.files.contains_key(LOCK_PATH));
        assert_eq!(
            lock.files["vendor/etlgen-runtime/Cargo.toml"].owner,
            Owner::Owned
        );
        assert_eq!(
            lock.files["lambdas/validator/src/hooks.rs"].owner,
            Owner::Seeded
        );
        assert_eq!(lock.files["README.md"].owner, Owner::Merged);
        assert!(lock.describes(&tree));
    }

    #[test]
    fn a_changed_missing_or_extra_file_is_not_what_the_lock_describes() {
        let (_, tree) = render_default();
        let lock = LockFile::parse(std::str::from_utf8(&tree[LOCK_PATH]).unwrap()).unwrap();
        let mut changed = tree.clone();
        changed.insert("README.md".into(), b"edited".to_vec());
        assert!(!lock.describes(&changed));
        let mut missing = tree.clone();
        missing.remove("README.md");
        assert!(!lock.describes(&missing));
        let mut extra = tree;
        extra.insert("NOTES.md".into(), b"mine".to_vec());
        assert!(!lock.describes(&extra));
    }

    #[test]
    fn a_hand_edited_lock_is_refused_with_the_fix() {
        let err = LockFile::parse("etlgen_version = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(LOCK_PATH), "{err}");
        assert!(err.contains("git checkout"), "{err}");
    }
}
