//! The Qualtrics API calls of one run, against the documented rate limits.
//!
//! What each kind calls is fixed by the framework (`etlgen-runtime/src/kinds`):
//! a contact importer creates the run's mailing list once, then starts one
//! transaction-contacts import per record batch and polls it; a distribution
//! scheduler posts one distribution per run (the fan-in); a response
//! importer starts one import per batch and polls it; an exporter starts one
//! export per message it reads, polls it and downloads the file. How many
//! messages each step reads follows from the wiring and a stated input size,
//! so the counts here are arithmetic on explicit assumptions.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::answers::{Answers, Step};
use crate::catalog::Catalog;

/// Qualtrics' documented brand-wide limit, requests per minute
/// (api.qualtrics.com, "Limits").
pub const BRAND_LIMIT_PER_MINUTE: u32 = 3000;

/// Status checks assumed per import or export: the first check, made at
/// once, rarely finds it done; the second or third usually does.
pub const ASSUMED_POLLS: u64 = 3;

/// How a call's count grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallsPer {
    /// Once per run.
    Run,
    /// Once per message the step reads.
    Message,
    /// [`ASSUMED_POLLS`] times per message the step reads.
    Poll,
}

/// One endpoint: its `[qualtrics.rate_limits]` key (the runtime's endpoint
/// name), method and path, and documented per-minute limit.
struct Endpoint {
    budget: &'static str,
    call: &'static str,
    limit: u32,
}

/// The per-endpoint limits the framework's default budgets follow
/// (etlgen-runtime `qualtrics::default_budget`; a test keeps them equal).
const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        budget: "create_mailing_list",
        call: "POST /directories/{directoryId}/mailinglists",
        limit: 500,
    },
    Endpoint {
        budget: "import_transaction_contacts",
        call: "POST /directories/{directoryId}/mailinglists/{mailingListId}/transactioncontacts",
        limit: 100,
    },
    Endpoint {
        budget: "transaction_contacts_status",
        call: "GET …/transactioncontacts/{importId}",
        limit: 500,
    },
    Endpoint {
        budget: "create_distribution",
        call: "POST /distributions",
        limit: 3000,
    },
    Endpoint {
        budget: "import_responses",
        call: "POST /surveys/{surveyId}/import-responses",
        limit: 100,
    },
    Endpoint {
        budget: "import_responses_progress",
        call: "GET /surveys/{surveyId}/import-responses/{progressId}",
        limit: 100,
    },
    Endpoint {
        budget: "export_responses",
        call: "POST /surveys/{surveyId}/export-responses",
        limit: 100,
    },
    Endpoint {
        budget: "export_responses_progress",
        call: "GET /surveys/{surveyId}/export-responses/{progressId}",
        limit: 1000,
    },
    Endpoint {
        budget: "export_responses_file",
        call: "GET /surveys/{surveyId}/export-responses/{fileId}/file",
        limit: 100,
    },
];

/// The calls a kind makes, in order.
fn calls_of(kind: &str, step: &Step) -> Vec<(&'static str, CallsPer)> {
    use CallsPer::*;
    match kind {
        "contact-importer" => {
            let fixed_list = step.settings.param("mailing_list_id").is_some();
            let create = (!fixed_list).then_some(("create_mailing_list", Run));
            create
                .into_iter()
                .chain([
                    ("import_transaction_contacts", Message),
                    ("transaction_contacts_status", Poll),
                ])
                .collect()
        }
        "distribution-scheduler" => vec![("create_distribution", Run)],
        "response-importer" => vec![
            ("import_responses", Message),
            ("import_responses_progress", Poll),
        ],
        "exporter" => vec![
            ("export_responses", Message),
            ("export_responses_progress", Poll),
            ("export_responses_file", Message),
        ],
        _ => Vec::new(),
    }
}

/// What the counts assume.
#[derive(Debug, Clone, Serialize)]
pub struct Assumptions {
    /// Valid records per run (`--records`).
    pub records: u64,
    /// Input files, submissions or schedule ticks per run.
    pub inputs_per_run: u64,
    /// Records per message the validator sends (its `records_per_batch`).
    pub records_per_batch: u64,
    /// Messages the validator sends to each reader: records ÷ records per batch, rounded up.
    pub record_batches: u64,
    /// Status checks per import or export.
    pub polls_per_job: u64,
}

/// One call of one step.
#[derive(Debug, Clone, Serialize)]
pub struct ApiCall {
    /// The step that makes it.
    pub step: String,
    /// Method and path below the base URL.
    pub call: String,
    /// Its `[qualtrics.rate_limits]` key.
    pub budget: String,
    /// How its count grows.
    pub per: CallsPer,
    /// Messages the step reads per run.
    pub messages: u64,
    /// Calls per run.
    pub calls_per_run: u64,
}

/// One endpoint's share of a run.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointLoad {
    /// Its `[qualtrics.rate_limits]` key.
    pub budget: String,
    /// Method and path below the base URL.
    pub call: String,
    /// The documented limit, requests per minute per brand.
    pub limit_per_minute: u32,
    /// Calls per run, over every step that makes it.
    pub calls_per_run: u64,
    /// Minutes of the endpoint's whole budget the run uses: calls ÷ limit.
    pub minutes_at_limit: f64,
    /// Lambda instances that may call it at once: the callers' `max_concurrency`, summed.
    pub max_instances: u32,
    /// A per-instance `[qualtrics.rate_limits]` value that keeps all of them
    /// within the limit (each instance has its own limiter).
    pub per_instance_budget: u32,
}

/// The Qualtrics load of one run.
#[derive(Debug, Clone, Serialize)]
pub struct QualtricsLoad {
    /// What the counts assume.
    pub assumptions: Assumptions,
    /// Every call, by step.
    pub calls: Vec<ApiCall>,
    /// The same, by endpoint.
    pub endpoints: Vec<EndpointLoad>,
    /// All calls of a run.
    pub total_calls_per_run: u64,
    /// The brand-wide limit, requests per minute.
    pub brand_limit_per_minute: u32,
    /// Minutes of the brand-wide budget the run uses: calls ÷ limit.
    pub minutes_at_brand_limit: f64,
}

/// The calls `answers` make in a run of `records` records.
pub fn load(answers: &Answers, catalog: &Catalog, records: u64) -> QualtricsLoad {
    let records_per_batch = answers
        .steps
        .iter()
        .find(|s| s.kind == "validator")
        .and_then(|s| s.settings.param("records_per_batch"))
        .and_then(toml::Value::as_integer)
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(1)
        .max(1);
    let assumptions = Assumptions {
        records,
        inputs_per_run: 1,
        records_per_batch,
        record_batches: records.div_ceil(records_per_batch),
        polls_per_job: ASSUMED_POLLS,
    };
    let messages = messages_read(answers, &assumptions);
    let mut calls = Vec::new();
    for (step, &read) in answers.steps.iter().zip(&messages) {
        let kind = catalog.kind(&step.kind).expect("resolved");
        for (budget, per) in calls_of(&kind.id, step) {
            let calls_per_run = match per {
                CallsPer::Run => 1,
                CallsPer::Message => read,
                CallsPer::Poll => read * assumptions.polls_per_job,
            };
            calls.push(ApiCall {
                step: step.name.to_string(),
                call: endpoint(budget).call.to_string(),
                budget: budget.to_string(),
                per,
                messages: read,
                calls_per_run,
            });
        }
    }
    let endpoints = by_endpoint(&calls, answers);
    let total_calls_per_run: u64 = calls.iter().map(|c| c.calls_per_run).sum();
    QualtricsLoad {
        assumptions,
        minutes_at_brand_limit: minutes(total_calls_per_run, BRAND_LIMIT_PER_MINUTE),
        brand_limit_per_minute: BRAND_LIMIT_PER_MINUTE,
        total_calls_per_run,
        endpoints,
        calls,
    }
}

/// `calls ÷ limit` minutes, to the hundredth (a count of calls is far below
/// 2^52, so the conversion is exact).
#[allow(clippy::cast_precision_loss)]
fn minutes(calls: u64, limit: u32) -> f64 {
    (calls as f64 / f64::from(limit) * 100.0).round() / 100.0
}

fn endpoint(budget: &str) -> &'static Endpoint {
    ENDPOINTS
        .iter()
        .find(|e| e.budget == budget)
        .expect("every call names a listed endpoint")
}

/// Messages each step reads per run, in step order. A step no other step
/// feeds reads the run's inputs; a step fed by others reads what each sends:
/// a validator one message per record batch, a distribution scheduler one
/// per run (the fan-in), a notifier nothing, every other kind one per
/// message it read.
fn messages_read(answers: &Answers, a: &Assumptions) -> Vec<u64> {
    let mut read: Vec<u64> = Vec::with_capacity(answers.steps.len());
    for step in &answers.steps {
        let feeders: Vec<usize> = (0..read.len())
            .filter(|&i| answers.steps[i].feeds.contains(&step.name))
            .collect();
        let count = if feeders.is_empty() {
            a.inputs_per_run
        } else {
            feeders
                .iter()
                .map(|&i| match answers.steps[i].kind.as_str() {
                    "validator" => a.record_batches,
                    "distribution-scheduler" => 1,
                    "notifier" => 0,
                    _ => read[i],
                })
                .sum()
        };
        read.push(count);
    }
    read
}

fn by_endpoint(calls: &[ApiCall], answers: &Answers) -> Vec<EndpointLoad> {
    let mut grouped: BTreeMap<usize, (u64, Vec<&str>)> = BTreeMap::new();
    for c in calls {
        let index = ENDPOINTS
            .iter()
            .position(|e| e.budget == c.budget)
            .expect("listed");
        let entry = grouped.entry(index).or_default();
        entry.0 += c.calls_per_run;
        if !entry.1.contains(&c.step.as_str()) {
            entry.1.push(&c.step);
        }
    }
    grouped
        .into_iter()
        .map(|(index, (calls_per_run, steps))| {
            let e = &ENDPOINTS[index];
            let max_instances: u32 = steps
                .iter()
                .filter_map(|s| answers.step(s))
                .map(|s| s.settings.step.max_concurrency)
                .sum();
            EndpointLoad {
                budget: e.budget.to_string(),
                call: e.call.to_string(),
                limit_per_minute: e.limit,
                calls_per_run,
                minutes_at_limit: minutes(calls_per_run, e.limit),
                per_instance_budget: (e.limit / max_instances.max(1)).max(1),
                max_instances,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::tests::answers;

    fn calls(load: &QualtricsLoad, budget: &str) -> u64 {
        load.endpoints
            .iter()
            .find(|e| e.budget == budget)
            .map_or(0, |e| e.calls_per_run)
    }

    #[test]
    fn the_default_pipeline_imports_per_batch_and_distributes_once() {
        let a = answers("client = \"acme\"");
        let load = load(&a, Catalog::builtin(), 10_000);
        // 10 000 records in batches of 100: 100 imports, each polled 3 times.
        assert_eq!(load.assumptions.record_batches, 100);
        assert_eq!(calls(&load, "create_mailing_list"), 1);
        assert_eq!(calls(&load, "import_transaction_contacts"), 100);
        assert_eq!(calls(&load, "transaction_contacts_status"), 300);
        assert_eq!(calls(&load, "create_distribution"), 1);
        assert_eq!(load.total_calls_per_run, 402);
        // 100 imports at 100 a minute, 402 calls at 3000 a minute.
        let imports = load
            .endpoints
            .iter()
            .find(|e| e.budget == "import_transaction_contacts")
            .unwrap();
        assert_eq!(
            (
                imports.minutes_at_limit,
                imports.max_instances,
                imports.per_instance_budget
            ),
            (1.0, 2, 50)
        );
        assert_eq!(load.minutes_at_brand_limit, 0.13);
    }

    #[test]
    fn a_partial_batch_rounds_up_and_the_batch_size_comes_from_the_validator() {
        let a = answers(
            "client = \"acme\"\n[[steps]]\nkind = \"validator\"\nsettings = { records_per_batch = 250 }\n\
             [[steps]]\nkind = \"contact-importer\"\nsettings = { mailing_list_id = \"CG_1\" }",
        );
        let load = load(&a, Catalog::builtin(), 1001);
        assert_eq!(load.assumptions.record_batches, 5);
        assert_eq!(
            calls(&load, "create_mailing_list"),
            0,
            "a fixed list is never created"
        );
        assert_eq!(calls(&load, "import_transaction_contacts"), 5);
        assert_eq!(load.total_calls_per_run, 5 + 15);
    }

    #[test]
    fn an_exporter_exports_once_per_message_it_reads() {
        // The exporter reads what nothing else reads: both schedulers' single
        // results and the response importer's per-batch results.
        let a = answers(&format!(
            "{}{}",
            "client = \"acme\"\nsource = \"sftp\"\n",
            [
                ("validator", "validator"),
                ("contact-importer", "contacts"),
                ("distribution-scheduler", "invite"),
                ("distribution-scheduler", "reminder"),
                ("response-importer", "responses"),
                ("exporter", "export"),
                ("notifier", "notify"),
            ]
            .map(|(k, n)| format!("[[steps]]\nkind = \"{k}\"\nname = \"{n}\"\n"))
            .concat()
        ));
        let load = load(&a, Catalog::builtin(), 550);
        let b = 6; // 550 records in batches of 100
        assert_eq!(calls(&load, "create_distribution"), 2);
        assert_eq!(calls(&load, "import_responses"), b);
        assert_eq!(calls(&load, "export_responses"), b + 2);
        assert_eq!(calls(&load, "export_responses_progress"), (b + 2) * 3);
        assert_eq!(calls(&load, "export_responses_file"), b + 2);
        let distributions = load
            .endpoints
            .iter()
            .find(|e| e.budget == "create_distribution")
            .unwrap();
        assert_eq!(
            distributions.max_instances, 4,
            "invite and reminder, 2 instances each"
        );
        assert_eq!(distributions.per_instance_budget, 750);
        let total = 1 + b + 3 * b + 2 + b + 3 * b + (b + 2) * 5;
        assert_eq!(load.total_calls_per_run, total);
    }

    #[test]
    fn endpoint_limits_are_the_frameworks_default_budgets() {
        for e in ENDPOINTS {
            assert_eq!(
                etlgen_runtime::qualtrics::default_budget(e.budget),
                e.limit,
                "{}",
                e.budget
            );
        }
    }

    #[test]
    fn exactly_the_kinds_that_call_qualtrics_have_calls() {
        let a = answers("client = \"acme\"");
        for kind in &Catalog::builtin().kinds {
            let has_calls = !calls_of(&kind.id, &a.steps[0]).is_empty();
            assert_eq!(has_calls, kind.calls_qualtrics, "{}", kind.id);
        }
    }
}
