//! `replay --from-step S`: which steps run again, and what brings them their inputs.
//!
//! A step runs again only if its ledger entries for the run are gone *and* its inputs come
//! again: a step whose ledger says done skips its input and sends nothing on. So a replay
//! from `S` runs again `S` and every step that reads it, directly or not (`next_steps` in
//! config/default.toml), and of the steps before it only the input step, when one of them
//! reads it:
//!
//! - the ledger entries of those steps for the run are cleared: the run's batches, and the
//!   inputs a once-per-run step (an exporter, a notifier) keeps under its markers, whose run
//!   state (markers, claim, stored result) is cleared too, so it does its work again once
//!   its inputs have all come back. A distribution scheduler keeps its run state: it sends
//!   on the distribution it scheduled and never schedules a second;
//! - the raw copy goes to the input step only if one of those steps reads it, so a
//!   re-export does not validate the file again;
//! - a step that reads a step not run again gets the inputs it kept sent to it again. A
//!   step that keeps none (it is not once-per-run, or has had nothing of the run yet) is
//!   refused before anything is cleared, naming the nearest step upstream from which a
//!   replay would be accepted.
//!
//! The inputs to send again are written to `runs/<date>/<run>/replay.json` before anything
//! is cleared, and removed once sent; the same replay run again counts them as kept, so a
//! replay cut short finishes.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};
use etlgen_runtime::envelope::Envelope;
use etlgen_runtime::kinds::{RunManifest, input_marker_prefix, manifest_key};
use etlgen_runtime::zones::run_state;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Env, RawRun};

/// The configuration the Lambdas are built with: who reads whose output.
const CONFIG: &str = include_str!("../../../config/default.toml");

/// Who reads whose output, from `next_steps` in config/default.toml.
#[derive(Debug, Default)]
pub(super) struct Wiring {
    readers: BTreeMap<String, Vec<String>>,
}

impl Wiring {
    pub(super) fn parse(text: &str) -> Result<Wiring> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            steps: BTreeMap<String, StepFile>,
        }
        #[derive(Deserialize)]
        struct StepFile {
            #[serde(default)]
            next_steps: Vec<String>,
            next_step: Option<String>,
        }
        let file: File = toml::from_str(text).context("reading config/default.toml")?;
        let readers = (file.steps.into_iter())
            .map(|(step, s)| {
                let mut next = s.next_steps;
                next.extend(s.next_step.filter(|n| !next.contains(n)));
                (step, next)
            })
            .collect();
        Ok(Wiring { readers })
    }

    /// The steps whose output `step` reads.
    fn producers(&self, step: &str) -> Vec<&str> {
        (self.readers.iter())
            .filter(|(_, next)| next.iter().any(|n| n == step))
            .map(|(producer, _)| producer.as_str())
            .collect()
    }

    /// `from` and every step that reads it, directly or not.
    fn downstream(&self, from: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::from([from.to_owned()]);
        let mut todo = vec![from.to_owned()];
        while let Some(step) = todo.pop() {
            for next in self.readers.get(&step).into_iter().flatten() {
                if found.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        found
    }

    /// Which step sent `input` to `step`: the one named by its record key's
    /// `<sender>/` (a step reading several gets each one's output so), or its one producer.
    fn sender<'a>(&'a self, step: &str, input: &Envelope<Value>) -> Option<&'a str> {
        let producers = self.producers(step);
        match producers.as_slice() {
            [one] => Some(one),
            _ => {
                let named = input.record_key.split('/').next()?;
                producers.into_iter().find(|p| *p == named)
            }
        }
    }
}

/// An input a once-per-run step kept (`None`: marked by a runtime that kept no copy).
#[derive(Debug, Clone)]
pub(super) struct Kept {
    marker: String,
    envelope: Option<Envelope<Value>>,
}

/// An input to send a step again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Resend {
    step: String,
    envelope: Envelope<Value>,
}

/// What a replay from a step does, worked out before anything is written.
#[derive(Debug)]
pub(super) struct Plan {
    /// The steps that run again, in pipeline order.
    pub(super) steps: Vec<String>,
    /// Whether the raw copy goes to the input step.
    pub(super) raw: bool,
    /// Inputs kept by steps run again from steps that are not.
    resend: Vec<Resend>,
    /// The run's batches, whose ledger entries are cleared.
    batches: u64,
}

/// Works out a replay from `from`, given the pipeline's order, its input step and the
/// inputs each once-per-run step of the run has kept. Refuses a step that reads a step not
/// run again and has kept none of the run's inputs, naming the nearest step before it from
/// which a replay would be accepted.
pub(super) fn choose(
    wiring: &Wiring,
    order: &[String],
    input: Option<&str>,
    from: &str,
    kept: &BTreeMap<String, Vec<Kept>>,
) -> Result<Plan> {
    if !order.iter().any(|s| s == from) {
        bail!("no step {from:?} in this pipeline; its steps are: {}", order.join(", "));
    }
    let refused = match try_choose(wiring, order, input, from, kept) {
        Ok(plan) => return Ok(plan),
        Err(why) => why,
    };
    // The nearest step upstream a replay from which needs nothing that was not kept.
    let mut seen = BTreeSet::from([from.to_owned()]);
    let mut frontier = vec![from.to_owned()];
    let mut instead = None;
    while instead.is_none() && !frontier.is_empty() {
        let mut next = Vec::new();
        for step in &frontier {
            for producer in wiring.producers(step) {
                if seen.insert(producer.to_owned()) {
                    next.push(producer.to_owned());
                }
            }
        }
        next.sort_by_key(|s| order.iter().position(|o| o == s));
        instead =
            (next.iter()).find(|s| try_choose(wiring, order, input, s, kept).is_ok()).cloned();
        frontier = next;
    }
    let instead = instead.or_else(|| input.map(str::to_owned)).unwrap_or_else(|| order[0].clone());
    bail!("{refused}: replay from {instead} instead (--from-step {instead})")
}

/// [`choose`] without the advice: why the replay cannot be done, if it cannot.
fn try_choose(
    wiring: &Wiring,
    order: &[String],
    input: Option<&str>,
    from: &str,
    kept: &BTreeMap<String, Vec<Kept>>,
) -> Result<Plan, String> {
    let again = wiring.downstream(from);
    let steps: Vec<String> = order.iter().filter(|s| again.contains(*s)).cloned().collect();
    let raw = input.is_some_and(|i| {
        again.contains(i) || steps.iter().any(|s| wiring.producers(s).contains(&i))
    });
    let sends_again = |step: &str| again.contains(step) || (raw && Some(step) == input);
    let mut resend = Vec::new();
    for step in &steps {
        let outside: Vec<&str> =
            wiring.producers(step).into_iter().filter(|p| !sends_again(p)).collect();
        if outside.is_empty() {
            continue;
        }
        let kept = kept.get(step).map_or(&[][..], Vec::as_slice);
        if kept.is_empty() {
            return Err(format!(
                "{step} reads {}, which a replay from {from} does not run again, and has kept \
                 none of this run's inputs (only an exporter or a notifier that counts its \
                 inputs keeps them, once they have come)",
                outside.join(" and ")
            ));
        }
        for k in kept {
            let Some(envelope) = &k.envelope else {
                // Marked by a runtime that kept no copy: a step with one producer can only
                // have had it from that one, which may run again.
                match wiring.producers(step).as_slice() {
                    [one] if sends_again(one) => continue,
                    _ => {
                        return Err(format!(
                            "{} was marked by a runtime that kept no copy of the input, so a \
                             replay from {from} cannot send it to {step} again",
                            k.marker
                        ));
                    }
                }
            };
            if wiring.sender(step, envelope).is_none_or(|s| !sends_again(s)) {
                resend.push(Resend { step: step.clone(), envelope: envelope.clone() });
            }
        }
    }
    Ok(Plan { steps, raw, resend, batches: 0 })
}

/// Counts what a replay cut short stashed as kept: it cleared the markers it came from.
fn add_stashed(kept: &mut BTreeMap<String, Vec<Kept>>, stashed: Vec<Resend>, stash: &str) {
    for r in stashed {
        let inputs = kept.entry(r.step).or_default();
        let key = r.envelope.idempotency_key;
        if !inputs.iter().any(|k| k.envelope.as_ref().is_some_and(|e| e.idempotency_key == key)) {
            inputs.push(Kept { marker: stash.to_owned(), envelope: Some(r.envelope) });
        }
    }
}

impl Plan {
    /// Prints what the replay would do.
    pub(super) fn describe(&self, raw: &RawRun, input: &str) {
        println!("Would run again, for run {}: {}.", raw.run, self.steps.join(", "));
        if self.raw {
            println!("Would send the raw copy {} to {input}.", raw.key);
        } else {
            println!("Would not send the raw copy: no step run again reads {input}.");
        }
        let mut by_step: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &self.resend {
            *by_step.entry(&r.step).or_default() += 1;
        }
        for (step, count) in by_step {
            println!("Would send {step} {count} inputs it kept.");
        }
    }
}

fn stash_key(raw: &RawRun) -> String {
    run_state(raw.date, &raw.id(), "replay.json")
}

/// Works out the replay of `raw` from `from` from what the run has left in the data bucket.
pub(super) async fn plan(env: &Env, raw: &RawRun, from: &str) -> Result<Plan> {
    let run = raw.id();
    let manifest_key = manifest_key(raw.date, &run);
    let manifest: RunManifest = match env.read(&manifest_key).await? {
        Some(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("reading {manifest_key}"))?
        }
        None => bail!("run {} has no manifest yet: replay it without --from-step", raw.run),
    };
    let wiring = Wiring::parse(CONFIG)?;
    let mut kept = BTreeMap::new();
    for step in &env.outputs.step_order {
        let mut inputs = Vec::new();
        for marker in env.list(&input_marker_prefix(raw.date, &run, step)).await? {
            let body = env.read(&marker).await?.unwrap_or_default();
            let envelope = if body.is_empty() {
                None
            } else {
                Some(serde_json::from_slice(&body).with_context(|| format!("reading {marker}"))?)
            };
            inputs.push(Kept { marker, envelope });
        }
        kept.insert(step.clone(), inputs);
    }
    if let Some(bytes) = env.read(&stash_key(raw)).await? {
        let stashed: Vec<Resend> = serde_json::from_slice(&bytes)
            .with_context(|| format!("reading {}", stash_key(raw)))?;
        add_stashed(&mut kept, stashed, &stash_key(raw));
    }
    let input = env.outputs.input.as_ref().map(|i| i.step.as_str());
    let mut plan = choose(&wiring, &env.outputs.step_order, input, from, &kept)?;
    plan.batches = manifest.batches;
    Ok(plan)
}

/// Clears the ledger entries and once-per-run state of the steps that run again, after
/// stashing what is to be sent again.
pub(super) async fn clear(env: &Env, raw: &RawRun, plan: &Plan) -> Result<()> {
    if !plan.resend.is_empty() {
        env.put(&stash_key(raw), serde_json::to_vec(&plan.resend)?).await?;
    }
    let wiring = Wiring::parse(CONFIG)?;
    let run = raw.id();
    let (mut entries, mut reset) = (0, Vec::new());
    for step in &plan.steps {
        let producers = wiring.producers(step);
        for batch in 1..=plan.batches {
            let key = format!("batch-{batch:06}");
            let mut found = clear_batch(env, &run, step, &key).await?;
            if found == 0 && producers.len() > 1 {
                // A step reading several steps keys each one's output `<sender>/<key>`.
                for sender in &producers {
                    found += clear_batch(env, &run, step, &format!("{sender}/{key}")).await?;
                }
            }
            entries += found;
        }
        let markers = env.list(&input_marker_prefix(raw.date, &run, step)).await?;
        for marker in &markers {
            let Some(name) = marker.rsplit('/').next() else { continue };
            let key: etlgen_runtime::IdempotencyKey = serde_json::from_value(name.into())
                .with_context(|| format!("{marker} is not named by an idempotency key"))?;
            let ledger = etlgen_runtime::zones::ledger(&env.outputs.pipeline, step, &key);
            if env.read(&ledger).await?.is_some() {
                env.delete(&ledger).await?;
                entries += 1;
            }
        }
        if !markers.is_empty() {
            // The markers go last: a replay cut short before then finds them again and
            // clears the rest (a stored result) on its next try.
            let state = env.list(&run_state(raw.date, &run, &format!("{step}/"))).await?;
            let (marks, rest): (Vec<_>, Vec<_>) = state.iter().partition(|k| markers.contains(k));
            for key in rest.into_iter().chain(marks) {
                env.delete(key).await?;
            }
            reset.push(step.as_str());
        }
    }
    println!(
        "Cleared {entries} ledger entries of {} for run {}{}.",
        plan.steps.join(", "),
        raw.run,
        if reset.is_empty() {
            String::new()
        } else {
            format!(", and the run state of {}", reset.join(", "))
        }
    );
    Ok(())
}

/// Sends the kept inputs again, then drops the stash.
pub(super) async fn resend(env: &Env, raw: &RawRun, plan: &Plan, stamp: u128) -> Result<()> {
    for r in &plan.resend {
        let queue = &env.step(&r.step)?.queue_url;
        let dedup = format!("{}-replay-{stamp}", r.envelope.idempotency_key);
        env.send(queue, &serde_json::to_string(&r.envelope)?, &dedup).await?;
    }
    if !plan.resend.is_empty() {
        env.delete(&stash_key(raw)).await?;
        println!("Sent {} kept inputs again.", plan.resend.len());
    }
    Ok(())
}

/// Removes the ledger entries of `step` for the batch keyed `key` of `run`, or, if it went
/// as parts because it was over SQS's message limit, for its parts `<key>.1`, `<key>.2`, …;
/// how many there were.
async fn clear_batch(
    env: &Env,
    run: &etlgen_runtime::RunId,
    step: &str,
    key: &str,
) -> Result<usize> {
    if clear_entry(env, run, step, key).await? {
        return Ok(1);
    }
    let mut parts = 0;
    while clear_entry(env, run, step, &format!("{key}.{}", parts + 1)).await? {
        parts += 1;
    }
    Ok(parts)
}

/// Removes the ledger entry of `step` for the record key `key` of `run`; whether there
/// was one.
async fn clear_entry(
    env: &Env,
    run: &etlgen_runtime::RunId,
    step: &str,
    key: &str,
) -> Result<bool> {
    let key = etlgen_runtime::IdempotencyKey::derive(&env.outputs.pipeline, run, step, key);
    let ledger = etlgen_runtime::zones::ledger(&env.outputs.pipeline, step, &key);
    if env.read(&ledger).await?.is_none() {
        return Ok(false);
    }
    env.delete(&ledger).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use etlgen_runtime::envelope::{LogicalDate, RunId};

    use super::*;

    /// The widest pipeline etlgen makes.
    const WIRING: &str = r#"
[steps.validator]
next_steps = ["import-contacts", "import-responses"]
[steps.import-contacts]
next_steps = ["invite", "reminder"]
[steps.invite]
next_steps = ["export"]
[steps.reminder]
next_steps = ["export"]
[steps.import-responses]
next_steps = ["export"]
[steps.export]
next_steps = ["notify"]
[steps.notify]
"#;

    fn order() -> Vec<String> {
        [
            "validator",
            "import-contacts",
            "invite",
            "reminder",
            "import-responses",
            "export",
            "notify",
        ]
        .map(String::from)
        .into()
    }

    fn input(step: &str, key: &str) -> Kept {
        let run = RunId::new("r1");
        let date = LogicalDate::from_ymd(2024, 5, 1).unwrap();
        let envelope = Envelope::new("acme", run, date, step, key, Value::Null);
        Kept {
            marker: format!("runs/2024-05-01/r1/{step}/inputs/{}", envelope.idempotency_key),
            envelope: Some(envelope),
        }
    }

    /// What export and notify kept of a run of one batch.
    fn kept() -> BTreeMap<String, Vec<Kept>> {
        BTreeMap::from([
            (
                "export".to_owned(),
                vec![
                    input("export", "invite/distribution"),
                    input("export", "reminder/distribution"),
                    input("export", "import-responses/batch-000001"),
                ],
            ),
            ("notify".to_owned(), vec![input("notify", "export")]),
        ])
    }

    fn resent(plan: &Plan) -> Vec<(&str, &str)> {
        plan.resend.iter().map(|r| (r.step.as_str(), r.envelope.record_key.as_str())).collect()
    }

    #[test]
    fn a_replay_from_the_exporter_sends_it_what_it_kept_and_validates_nothing() {
        let wiring = Wiring::parse(WIRING).unwrap();
        let plan = choose(&wiring, &order(), Some("validator"), "export", &kept()).unwrap();
        assert_eq!(plan.steps, ["export", "notify"]);
        assert!(!plan.raw, "no step run again reads the validator");
        assert_eq!(
            resent(&plan),
            [
                ("export", "invite/distribution"),
                ("export", "reminder/distribution"),
                ("export", "import-responses/batch-000001"),
            ],
            "notify's input comes from export, which runs again"
        );
    }

    #[test]
    fn a_replay_from_an_importer_runs_what_reads_it_and_resends_the_rest() {
        let wiring = Wiring::parse(WIRING).unwrap();
        let plan =
            choose(&wiring, &order(), Some("validator"), "import-responses", &kept()).unwrap();
        assert_eq!(plan.steps, ["import-responses", "export", "notify"]);
        assert!(plan.raw, "import-responses reads the validator");
        assert_eq!(
            resent(&plan),
            [("export", "invite/distribution"), ("export", "reminder/distribution")],
            "the schedulers do not run again; import-responses sends its batches itself"
        );

        let plan = choose(&wiring, &order(), Some("validator"), "validator", &kept()).unwrap();
        assert_eq!(plan.steps, order());
        assert!(plan.raw && plan.resend.is_empty());
    }

    #[test]
    fn a_step_that_kept_nothing_of_a_step_not_run_again_is_refused() {
        let wiring = Wiring::parse(WIRING).unwrap();
        let err = choose(&wiring, &order(), Some("validator"), "invite", &kept())
            .unwrap_err()
            .to_string();
        assert!(err.contains("invite reads import-contacts"), "{err}");
        assert!(err.contains("--from-step import-contacts"), "{err}");

        // Markers of a runtime that kept no copy: the advice names a step that works.
        let mut old = kept();
        for k in old.values_mut().flatten() {
            k.envelope = None;
        }
        let err =
            choose(&wiring, &order(), Some("validator"), "export", &old).unwrap_err().to_string();
        assert!(err.contains("kept no copy"), "{err}");
        assert!(err.contains("--from-step validator"), "{err}");
        // Notify's one producer runs again, so its empty marker is not needed.
        let plan = choose(&wiring, &order(), Some("validator"), "validator", &old).unwrap();
        assert!(plan.resend.is_empty());

        let err =
            choose(&wiring, &order(), Some("validator"), "nope", &kept()).unwrap_err().to_string();
        assert!(err.contains("no step \"nope\"") && err.contains("export"), "{err}");
    }

    /// A replay cut short after clearing has only its stash left: run again, it sends what
    /// the stash holds.
    #[test]
    fn a_replay_cut_short_is_finished_from_its_stash() {
        let wiring = Wiring::parse(WIRING).unwrap();
        let first = choose(&wiring, &order(), Some("validator"), "export", &kept()).unwrap();
        let cleared = BTreeMap::new();
        assert!(choose(&wiring, &order(), Some("validator"), "export", &cleared).is_err());

        let mut left = cleared.clone();
        add_stashed(&mut left, first.resend.clone(), "runs/2024-05-01/r1/replay.json");
        let again = choose(&wiring, &order(), Some("validator"), "export", &left).unwrap();
        assert_eq!(again.resend, first.resend);

        // Markers the first attempt had not cleared yet are not sent twice.
        let mut both = kept();
        add_stashed(&mut both, first.resend.clone(), "runs/2024-05-01/r1/replay.json");
        let again = choose(&wiring, &order(), Some("validator"), "export", &both).unwrap();
        assert_eq!(again.resend, first.resend);
    }

    #[test]
    fn the_generated_configuration_parses() {
        let wiring = Wiring::parse(CONFIG).unwrap();
        assert!(!wiring.readers.is_empty());
    }
}
