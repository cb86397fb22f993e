//! `runs`: recent runs and how far each step got, from the run state in the data bucket.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use etlgen_runtime::kinds::RunManifest;

use super::{Env, Runs, block_on};

/// How far one run got.
#[derive(Debug, serde::Serialize)]
struct RunState {
    logical_date: String,
    run_id: String,
    rows: Option<u64>,
    rejected: Option<u64>,
    batches: Option<u64>,
    batches_imported: u64,
    steps: BTreeMap<String, String>,
    /// A `replay --from-step` was cut short after clearing: run it again to finish it.
    replay_unfinished: bool,
}

pub fn runs(args: Runs) -> Result<()> {
    block_on(async {
        let env = Env::open(&args.target).await?;
        let keys = env.list("runs/").await?;
        let mut by_run: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for key in keys {
            let mut parts = key.splitn(4, '/');
            let (_, Some(date), Some(run), Some(rest)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            by_run.entry((date.to_owned(), run.to_owned())).or_default().push(rest.to_owned());
        }
        let mut states = Vec::new();
        for ((date, run), files) in by_run.into_iter().rev().take(args.limit) {
            let manifest_key = format!("runs/{date}/{run}/manifest.json");
            let manifest: Option<RunManifest> = match env.read(&manifest_key).await? {
                Some(bytes) => Some(
                    serde_json::from_slice(&bytes)
                        .with_context(|| format!("reading {manifest_key}"))?,
                ),
                None => None,
            };
            let imported = files.iter().filter(|f| f.starts_with("batches/")).count() as u64;
            let mut steps = BTreeMap::new();
            for step in &env.outputs.step_order {
                let state = if files.iter().any(|f| f == &format!("{step}/result.json")) {
                    "done".to_owned()
                } else if files.iter().any(|f| f.starts_with(&format!("{step}/"))) {
                    "started".to_owned()
                } else {
                    "-".to_owned()
                };
                steps.insert(step.clone(), state);
            }
            states.push(RunState {
                logical_date: date,
                run_id: run,
                rows: manifest.as_ref().map(|m| m.valid + m.rejected),
                rejected: manifest.as_ref().map(|m| m.rejected),
                batches: manifest.as_ref().map(|m| m.batches),
                batches_imported: imported,
                steps,
                replay_unfinished: files.iter().any(|f| f == "replay.json"),
            });
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&states)?);
            return Ok(());
        }
        println!(
            "{:<10}  {:<36}  {:>8}  {:>8}  {:>9}  steps",
            "date", "run", "rows", "rejected", "imported"
        );
        for s in &states {
            let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
            let mut steps: Vec<String> = s
                .steps
                .iter()
                .filter(|(_, v)| *v != "-")
                .map(|(k, v)| format!("{k}:{v}"))
                .collect();
            if s.replay_unfinished {
                steps.push("(replay cut short: run it again)".to_owned());
            }
            println!(
                "{:<10}  {:<36}  {:>8}  {:>8}  {:>9}  {}",
                s.logical_date,
                s.run_id,
                opt(s.rows),
                opt(s.rejected),
                format!("{}/{}", s.batches_imported, opt(s.batches)),
                steps.join(" ")
            );
        }
        Ok(())
    })
}
