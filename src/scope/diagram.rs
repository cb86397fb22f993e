//! The pipeline's Mermaid flowchart, taken from the generated `docs/pipeline.md`.
//!
//! The generated repository's pipeline page already draws the pipeline
//! (`templates/docs/docs/pipeline.md.tera`). Rendering that one template with
//! the render plan's own context, and cutting its `mermaid` block out, keeps
//! a single drawing: the plan's diagram is exactly the one the repository
//! will carry.

use super::ScopeError;
use crate::answers::Answers;
use crate::plan::{Plan, Source};
use crate::templates::Templates;

/// The generated page that holds the diagram.
const PIPELINE_DOC: &str = "docs/pipeline.md";

const FENCE_OPEN: &str = "```mermaid\n";
const FENCE_CLOSE: &str = "\n```";

/// The body of the ```` ```mermaid ```` block of `docs/pipeline.md`.
pub fn mermaid(answers: &Answers) -> Result<String, ScopeError> {
    let internal = |e: String| ScopeError::Internal(format!("{PIPELINE_DOC}: {e}"));
    let plan = Plan::new(answers.clone()).map_err(|e| internal(e.to_string()))?;
    let file = plan
        .files
        .iter()
        .find(|f| f.path == PIPELINE_DOC)
        .ok_or_else(|| internal("the templates no longer render it".into()))?;
    let Source::Render { template, context } = &file.source else {
        return Err(internal("it is not a template".into()));
    };
    let page = Templates::builtin()
        .tera
        .render(template, context)
        .map_err(|e| internal(e.to_string()))?;
    extract(&page).ok_or_else(|| internal("it has no ```mermaid block".into()))
}

fn extract(page: &str) -> Option<String> {
    let start = page.find(FENCE_OPEN)? + FENCE_OPEN.len();
    let len = page[start..].find(FENCE_CLOSE)?;
    Some(page[start..start + len].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_cut_without_its_fences() {
        let page = "# x\n\n```mermaid\nflowchart LR\n    a --> b\n```\n\nafter\n";
        assert_eq!(extract(page).unwrap(), "flowchart LR\n    a --> b");
        assert_eq!(extract("no diagram"), None);
    }

    #[test]
    fn every_step_is_drawn() {
        let a = crate::scope::tests::answers("client = \"acme\"");
        let chart = mermaid(&a).unwrap();
        assert!(chart.starts_with("flowchart LR"), "{chart}");
        for step in &a.steps {
            let node = format!("q_{}", step.name.snake());
            assert!(chart.contains(&node), "{node} not in {chart}");
        }
    }
}
