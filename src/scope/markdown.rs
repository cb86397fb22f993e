//! The scoping document as Markdown.
//!
//! Written with plain `write!` rather than a Tera template: the input is one
//! typed [`Scope`], so the compiler checks every field this page uses, and
//! the tables need number formatting and joins that would be awkward filters
//! in Tera. The diagram is the one piece shared with a template, and it comes
//! from that template already ([`Scope::mermaid`]).

use std::fmt::Write as _;

use super::{Module, Scope, ScopeStep};

/// Renders `scope` as a Markdown page.
pub fn render(scope: &Scope) -> String {
    let mut md = String::new();
    header(&mut md, scope);
    steps(&mut md, scope);
    scoping_list(&mut md, scope);
    resources(&mut md, scope);
    qualtrics(&mut md, scope);
    md
}

fn code_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn header(md: &mut String, s: &Scope) {
    let _ = writeln!(md, "# Plan: the {} pipeline\n", s.client);
    let _ = writeln!(
        md,
        "Made by etlgen {} from the answers; `etlgen new` with the same answers generates \
         this pipeline.\n",
        s.etlgen_version
    );
    let _ = writeln!(
        md,
        "- Source: **{}**: {}",
        s.source.id, s.source.description
    );
    let runs = match &s.source.schedule {
        Some(schedule) => format!("on the schedule `{schedule}` (UTC)"),
        None => "when input arrives".to_string(),
    };
    let _ = writeln!(md, "- Runs: {runs}");
    let _ = writeln!(md, "- AWS region: `{}`", s.region);
    let _ = writeln!(md, "- Qualtrics: `{}`", s.qualtrics_base_url);
    let _ = writeln!(
        md,
        "- Environments: {} (and `local`, the emulator)\n",
        code_list(&s.environments)
    );
    let _ = writeln!(md, "```mermaid\n{}\n```\n", s.mermaid);
}

fn steps(md: &mut String, s: &Scope) {
    let _ = writeln!(md, "## Steps\n");
    let _ = writeln!(
        md,
        "Each step is an SQS queue, a Lambda triggered by it (`ReportBatchItemFailures`) and a \
         dead-letter queue; `<env>` stands for the environment (in `dev`, which is personal, \
         `dev-<workspace>`).\n"
    );
    let _ = writeln!(
        md,
        "| # | step | kind | reads from | queue | batch | window | max concurrency | timeout | memory | /tmp | max receives |"
    );
    let _ = writeln!(
        md,
        "|---|------|------|------------|-------|-------|--------|-----------------|---------|--------|------|--------------|"
    );
    for (i, step) in s.steps.iter().enumerate() {
        let from = match &step.entry {
            Some(entry) => entry.replace('-', " "),
            None => code_list(&step.reads_from),
        };
        let st = &step.settings;
        let queue = if st.fifo { "FIFO" } else { "standard" };
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {from} | `{}` ({queue}) | {} | {}s | {} | {}s | {} MB | {} MB | {} |",
            i + 1,
            step.name,
            step.kind,
            step.queue.name,
            st.batch_size,
            st.batching_window_seconds,
            st.max_concurrency,
            st.timeout_seconds,
            st.memory_mb,
            st.ephemeral_storage_mb,
            st.max_receive_count
        );
    }
    let _ = writeln!(md);
}

fn scoping_list(md: &mut String, s: &Scope) {
    let _ = writeln!(md, "## Scoping: framework defaults and client work\n");
    let _ = writeln!(
        md,
        "The framework runs every step as described with no client code. Client work is \
         overriding hook points in `lambdas/<step>/src/hooks.rs` where the default does not \
         fit, and filling in the values marked `REPLACE_ME`.\n"
    );
    for step in &s.steps {
        step_scope(md, step);
    }
    if !s.client_values.is_empty() || !s.secrets.is_empty() {
        let _ = writeln!(md, "### Pipeline-wide\n");
        for value in &s.client_values {
            let _ = writeln!(md, "- [ ] fill in `{value}` in `config/default.toml`");
        }
        for secret in &s.secrets {
            let _ = writeln!(
                md,
                "- [ ] set the secret `{secret}` in each environment (out of band)"
            );
        }
        let _ = writeln!(md);
    }
}

fn step_scope(md: &mut String, step: &ScopeStep) {
    let _ = writeln!(md, "### `{}` ({})\n", step.name, step.kind);
    let _ = writeln!(md, "Framework default: {}\n", step.description);
    let _ = writeln!(md, "| hook point | decides | by default |");
    let _ = writeln!(md, "|------------|---------|------------|");
    for hook in &step.hooks {
        let default = hook
            .default
            .trim_start_matches("By default")
            .trim_start_matches(',');
        let _ = writeln!(
            md,
            "| `{}` | {} | {} |",
            hook.name,
            hook.purpose,
            default.trim()
        );
    }
    let _ = writeln!(md);
    for value in &step.client_values {
        let _ = writeln!(md, "- [ ] fill in `{value}` in `config/default.toml`");
    }
    if !step.client_values.is_empty() {
        let _ = writeln!(md);
    }
}

fn resources(md: &mut String, s: &Scope) {
    let r = &s.resources;
    let _ = writeln!(md, "## AWS resources per environment\n");
    // Resources that exist only for a variable's entries are named, not counted.
    let client_role = if s.source.id == "http" {
        ", and with `client_principals` the role they assume to submit and its policy attachment"
    } else {
        ""
    };
    let _ = writeln!(
        md,
        "`terraform apply` creates {} resources in each environment ({} in all for {}), plus one \
         e-mail subscription per `oncall_emails` entry{client_role}. Per step \
         (`infra/modules/step`, {} times):\n",
        r.total_per_environment,
        r.total_per_environment as usize * s.environments.len(),
        code_list(&s.environments),
        s.steps.len()
    );
    for module in [Module::Step, Module::Pipeline] {
        if module == Module::Pipeline {
            let _ = writeln!(md, "Shared by the steps (`infra/modules/pipeline`):\n");
        }
        let _ = writeln!(md, "| resource | count | names |");
        let _ = writeln!(md, "|----------|-------|-------|");
        let items = r.items.iter().filter(|i| i.module == module);
        for item in items.clone().filter(|i| i.primary) {
            let names = match &item.pattern {
                Some(pattern) => format!("`{pattern}`"),
                None => code_list(&item.names),
            };
            let _ = writeln!(md, "| {} | {} | {names} |", item.what, item.count);
        }
        let supporting: Vec<_> = items.filter(|i| !i.primary).collect();
        if !supporting.is_empty() {
            let count: u32 = supporting.iter().map(|i| i.count).sum();
            let mut what: Vec<&str> = Vec::new();
            for item in &supporting {
                if !what.contains(&item.what.as_str()) {
                    what.push(&item.what);
                }
            }
            let _ = writeln!(
                md,
                "| settings and policies: {} | {count} | |",
                what.join("; ")
            );
        }
        let _ = writeln!(md);
    }
}

fn qualtrics(md: &mut String, s: &Scope) {
    let q = &s.qualtrics;
    let a = &q.assumptions;
    let _ = writeln!(md, "## Qualtrics API calls per run\n");
    if q.calls.is_empty() {
        let _ = writeln!(md, "No step calls the Qualtrics API.");
        return;
    }
    let _ = writeln!(
        md,
        "Assuming **{} records** per run (`--records`) in {} input, {} records per message \
         (the validator's `records_per_batch`), so **{} record batches**, and {} status checks \
         per import or export.\n",
        a.records, a.inputs_per_run, a.records_per_batch, a.record_batches, a.polls_per_job
    );
    let _ = writeln!(md, "| step | call | per | messages read | calls per run |");
    let _ = writeln!(md, "|------|------|-----|---------------|---------------|");
    for c in &q.calls {
        let per = match c.per {
            super::CallsPer::Run => "run".to_string(),
            super::CallsPer::Message => "message".to_string(),
            super::CallsPer::Poll => format!("message × {} polls", a.polls_per_job),
        };
        let _ = writeln!(
            md,
            "| `{}` | `{}` | {per} | {} | {} |",
            c.step, c.call, c.messages, c.calls_per_run
        );
    }
    let _ = writeln!(
        md,
        "\nAgainst the documented limits (requests per minute per brand). Each Lambda instance \
         rate-limits itself, so the per-instance budget is the limit divided by the instances \
         that may call the endpoint at once (the callers' `max_concurrency`); set it under \
         `[qualtrics.rate_limits]` in `config/default.toml`.\n"
    );
    let _ = writeln!(
        md,
        "| endpoint (`[qualtrics.rate_limits]` key) | limit/min | calls per run | minutes of the limit | instances | per-instance budget |"
    );
    let _ = writeln!(
        md,
        "|------------------------------------------|-----------|---------------|----------------------|-----------|---------------------|"
    );
    for e in &q.endpoints {
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {:.2} | {} | {} |",
            e.budget,
            e.limit_per_minute,
            e.calls_per_run,
            e.minutes_at_limit,
            e.max_instances,
            e.per_instance_budget
        );
    }
    if let Some(slowest) = q
        .endpoints
        .iter()
        .max_by(|a, b| a.minutes_at_limit.total_cmp(&b.minutes_at_limit))
    {
        let _ = writeln!(
            md,
            "\nThe bottleneck is `{}`: at its limit, a run of this size takes at least {:.2} \
             minutes of Qualtrics time.",
            slowest.budget, slowest.minutes_at_limit
        );
    }
    let _ = writeln!(
        md,
        "\nIn all **{} calls per run**: {:.2} minutes of the brand-wide limit of {}/min, which \
         everything else the brand runs shares. Limits are from api.qualtrics.com \
         (brand-wide) and third-party summaries of it (per endpoint); see docs/plan.md in etlgen.",
        q.total_calls_per_run, q.minutes_at_brand_limit, q.brand_limit_per_minute
    );
}
