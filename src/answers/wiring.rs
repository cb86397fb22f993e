//! Ordering and wiring: which step reads which step's output.
//!
//! Every kind declares the message type it consumes and the one it emits
//! (`catalog.toml`). From those alone this module orders the steps (by stage,
//! then producers before consumers, then as written) and connects each step
//! to every earlier step that emits what it reads. So one step may feed
//! several: a contact-importer feeds both an `invite` and a `reminder`
//! scheduler, and a validator feeds both a contact-importer and a
//! response-importer. A step nothing can feed is an error naming what to add.

use std::collections::BTreeMap;

use super::{AnswerError, Step};
use crate::catalog::{Catalog, Sends, Stage, StepKind};

/// The message type `step` reads: its kind's, unless a parameter it sets
/// changes it (a scheduler with a fixed mailing list reads records).
pub fn consumes<'c>(step: &Step, kind: &'c StepKind) -> &'c str {
    kind.params
        .iter()
        .find(|p| p.consumes_instead.is_some() && step.settings.param(&p.name).is_some())
        .and_then(|p| p.consumes_instead.as_deref())
        .unwrap_or(&kind.consumes)
}

/// Orders `steps` and fills in each step's `feeds`.
pub fn order_and_wire(mut pending: Vec<Step>, catalog: &Catalog) -> Result<Vec<Step>, AnswerError> {
    let kind_of = |s: &Step| catalog.kind(&s.kind).expect("resolved against the catalog");
    pending.sort_by_key(|s| kind_of(s).stage);
    let mut placed: Vec<Step> = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let stage = kind_of(&pending[0]).stage;
        // A step is ready when nothing still pending in its stage emits what
        // it reads; the user's order breaks ties.
        let ready = |step: &Step| {
            let wants = consumes(step, kind_of(step));
            !pending
                .iter()
                .filter(|p| p.name != step.name && kind_of(p).stage == stage)
                .any(|p| kind_of(p).emits.as_deref() == Some(wants))
        };
        let index = pending
            .iter()
            .take_while(|s| kind_of(s).stage == stage)
            .position(ready)
            .unwrap_or(0);
        placed.push(pending.remove(index));
    }
    wire(&mut placed, catalog)?;
    Ok(placed)
}

fn wire(steps: &mut [Step], catalog: &Catalog) -> Result<(), AnswerError> {
    let kinds: Vec<&StepKind> = steps
        .iter()
        .map(|s| catalog.kind(&s.kind).expect("resolved"))
        .collect();
    let readers: Vec<usize> = (0..steps.len())
        .filter(|&j| consumes(&steps[j], kinds[j]) == Catalog::INPUT)
        .collect();
    match readers.as_slice() {
        [_] => {}
        [] => {
            return Err(AnswerError::Conflict(format!(
                "nothing reads the client's input: add {}",
                catalog.consumers(Catalog::INPUT).join(" or ")
            )));
        }
        [first, second, ..] => {
            return Err(AnswerError::Conflict(format!(
                "steps {:?} and {:?} both read the client's input; keep one",
                steps[*first].name.as_str(),
                steps[*second].name.as_str()
            )));
        }
    }
    let mut leaves_before: BTreeMap<Stage, Vec<usize>> = BTreeMap::new();
    for j in 0..steps.len() {
        let wants = consumes(&steps[j], kinds[j]);
        let producers: Vec<usize> = match wants {
            Catalog::SCHEDULE => Vec::new(),
            Catalog::INPUT => (0..j)
                .filter(|&i| kinds[i].emits.as_deref() == Some(wants))
                .collect(),
            Catalog::ANY => {
                let stage = kinds[j].stage;
                let leaves = leaves_before.entry(stage).or_insert_with(|| {
                    (0..j)
                        .filter(|&i| kinds[i].stage < stage)
                        .filter(|&i| {
                            kinds[i]
                                .emits
                                .as_deref()
                                .is_some_and(|m| m != Catalog::INPUT)
                        })
                        .filter(|&i| steps[i].feeds.is_empty())
                        .collect()
                });
                if leaves.is_empty() {
                    return Err(AnswerError::Conflict(format!(
                        "step {:?} ({}) runs after the pipeline's processing, but no step comes \
                         before it; add a processing step such as contact-importer or \
                         response-importer",
                        steps[j].name.as_str(),
                        kinds[j].id
                    )));
                }
                leaves.clone()
            }
            message => {
                let found: Vec<usize> = (0..j)
                    .filter(|&i| kinds[i].emits.as_deref() == Some(message))
                    .collect();
                if found.is_empty() {
                    return Err(unfed(&steps[j], kinds[j], message, catalog));
                }
                found
            }
        };
        let name = steps[j].name.clone();
        for i in producers {
            steps[i].feeds.push(name.clone());
        }
    }
    Ok(())
}

fn unfed(step: &Step, kind: &StepKind, message: &str, catalog: &Catalog) -> AnswerError {
    let alternative = kind
        .params
        .iter()
        .find(|p| p.consumes_instead.is_some())
        .map(|p| {
            format!(
                ", or set {}.{} (--set {}.{}=...)",
                step.name, p.name, step.name, p.name
            )
        })
        .unwrap_or_default();
    AnswerError::Conflict(format!(
        "step {:?} ({}) reads {message} that no earlier step sends: add {}{alternative}",
        step.name.as_str(),
        kind.id,
        catalog.producers(message).join(" or "),
    ))
}

/// The messages of one run a step reads: so many per batch of valid records, so many
/// once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunInputs {
    /// Messages per batch the validator emits.
    pub per_batch: u64,
    /// Messages once per run.
    pub per_run: u64,
}

impl std::ops::AddAssign for RunInputs {
    fn add_assign(&mut self, other: Self) {
        self.per_batch += other.per_batch;
        self.per_run += other.per_run;
    }
}

/// The messages of one run each of `steps` (ordered and wired) reads, by step name,
/// from what each producer [`Sends`]: a step reading the landing zone or the schedule
/// reads one, and a reader of several producers reads what each sends. A notifier
/// counts its inputs with it to know when a run is done.
pub fn run_inputs<'s>(steps: &'s [Step], catalog: &Catalog) -> BTreeMap<&'s str, RunInputs> {
    let once = RunInputs {
        per_batch: 0,
        per_run: 1,
    };
    let mut inputs: BTreeMap<&str, RunInputs> = BTreeMap::new();
    for step in steps {
        let kind = catalog.kind(&step.kind).expect("resolved");
        if matches!(consumes(step, kind), Catalog::INPUT | Catalog::SCHEDULE) {
            inputs.insert(step.name.as_str(), once);
        }
        let sends = match kind.sends {
            Sends::PerInput => inputs.get(step.name.as_str()).copied().unwrap_or_default(),
            Sends::PerBatch => RunInputs {
                per_batch: 1,
                per_run: 0,
            },
            Sends::PerRun => once,
        };
        for reader in &step.feeds {
            let reader_step = steps.iter().find(|s| &s.name == reader).expect("wired");
            let reader_kind = catalog.kind(&reader_step.kind).expect("resolved");
            // The landing zone's reader reads the file, whatever the poller copied.
            if consumes(reader_step, reader_kind) != Catalog::INPUT {
                *inputs.entry(reader.as_str()).or_default() += sends;
            }
        }
    }
    inputs
}
