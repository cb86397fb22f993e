//! Rendering: a plan becomes a sorted in-memory tree of path to bytes.
//!
//! Nothing here touches the disk, so the same tree serves `new`, `--dry-run`,
//! snapshot tests and, later, `check` and `update`, as cargo-dist's renderer
//! does.

use std::collections::BTreeMap;

use crate::lifecycle::lock::LockFile;
use crate::lockfile;
use crate::plan::{Plan, Source};
use crate::templates::Templates;

/// A rendered repository: `/`-separated relative path to file contents.
pub type Tree = BTreeMap<String, Vec<u8>>;

/// A template failed to render: a bug in etlgen's templates.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Tera failed, for example on an undefined variable.
    #[error("rendering {path} from {template} failed: {message}")]
    Template {
        /// The output path.
        path: String,
        /// The template.
        template: String,
        /// Tera's whole error chain.
        message: String,
    },
    /// The lock file could not be composed.
    #[error(transparent)]
    Lockfile(#[from] lockfile::LockError),
}

/// Renders every planned file with the built-in templates.
pub fn render(plan: &Plan) -> Result<Tree, RenderError> {
    render_with(plan, Templates::builtin())
}

/// Renders every planned file with `templates`.
pub fn render_with(plan: &Plan, templates: &Templates) -> Result<Tree, RenderError> {
    let mut tree = Tree::new();
    let mut lockfiles = Vec::new();
    let mut render_lock = None;
    for file in &plan.files {
        let bytes = match &file.source {
            Source::Render { template, context } => templates
                .tera
                .render(template, context)
                .map_err(|e| RenderError::Template {
                    path: file.path.clone(),
                    template: template.clone(),
                    message: error_chain(&e),
                })?
                .into_bytes(),
            Source::Copy(bytes) => bytes.to_vec(),
            Source::Bytes(bytes) => bytes.clone(),
            Source::Lockfile => {
                lockfiles.push(file.path.clone());
                continue;
            }
            Source::RenderLock => {
                render_lock = Some(file.path.clone());
                continue;
            }
        };
        tree.insert(file.path.clone(), bytes);
    }
    for path in lockfiles {
        let lock = lockfile::compose(&tree)?;
        tree.insert(path, lock.into_bytes());
    }
    // Last, since it records the hash of every other file.
    if let Some(path) = render_lock {
        let record = LockFile::of_render(plan, &tree);
        tree.insert(path, record.to_text().into_bytes());
    }
    Ok(tree)
}

/// Tera puts the useful part ("Variable `x` not found") in the source chain.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
