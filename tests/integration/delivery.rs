//! Delivery in generated repositories: the CI and release workflows validate
//! against GitHub's schema and their scripts pass shellcheck, `cargo xtask
//! package` produces zips, checksums and a manifest that agree with each
//! other, and the pipeline diagram and runbook describe the pipeline the
//! answers wire.
//!
//! External tools (check-jsonschema, checkov, shellcheck) are installed by
//! `scripts/test` (see tools.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use crate::helpers::{Scratch, all_services_doc, projects, render_doc, write_project};
use crate::tools::{Workspace, assert_ok, git, tool};

fn text(path: &Path) -> String {
    fs_err::read_to_string(path).unwrap()
}

// ---------------------------------------------------------------- workflows

const WORKFLOWS: [&str; 2] = [".github/workflows/ci.yml", ".github/workflows/release.yml"];

#[test]
fn workflows_validate_against_githubs_workflow_schema() {
    let check = tool("check-jsonschema");
    for doc in projects() {
        let scratch = Scratch::new();
        let (_, root) = write_project(&doc, &scratch);
        let out = Command::new(&check)
            .args(["--builtin-schema", "vendor.github-workflows"])
            .args(WORKFLOWS.map(|w| root.join(w)))
            .output()
            .expect("check-jsonschema runs");
        assert_ok(
            &out,
            "check-jsonschema --builtin-schema vendor.github-workflows",
        );
    }
}

/// The schema check can fail: a workflow without `jobs` is refused.
#[test]
fn the_schema_check_refuses_a_broken_workflow() {
    let check = tool("check-jsonschema");
    let scratch = Scratch::new();
    let (_, root) = write_project("client = \"client-x\"", &scratch);
    let ci = root.join(WORKFLOWS[0]);
    let broken = text(&ci).replace("\njobs:\n", "\njobz:\n");
    fs_err::write(&ci, broken).unwrap();
    let out = Command::new(&check)
        .args(["--builtin-schema", "vendor.github-workflows"])
        .arg(&ci)
        .output()
        .expect("check-jsonschema runs");
    assert!(!out.status.success(), "a workflow without jobs validated");
}

/// checkov's GitHub Actions checks (the generated CI runs them on every
/// push) find nothing to fail.
#[test]
fn workflows_pass_checkov() {
    let checkov = tool("checkov");
    for doc in projects() {
        let scratch = Scratch::new();
        let (_, root) = write_project(&doc, &scratch);
        let out = Command::new(&checkov)
            .arg("--directory")
            .arg(&root)
            .args([
                "--framework",
                "github_actions",
                "--quiet",
                "--compact",
                "--skip-download",
            ])
            .args(["--output", "json"])
            .output()
            .expect("checkov runs");
        assert_ok(&out, "checkov --framework github_actions");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
        let summary = &report["summary"];
        assert_eq!(summary["failed"], 0, "{summary}");
        assert!(
            summary["passed"].as_u64().unwrap_or(0) > 50,
            "checkov checked little: {summary}"
        );
    }
}

/// Every `run:` script of a workflow (GitHub runs them with `bash -e`), with
/// the line it starts on.
fn run_scripts(workflow: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = workflow.lines().collect();
    let mut scripts = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let body = trimmed
            .strip_prefix("- run:")
            .or_else(|| trimmed.strip_prefix("run:"))
            .map(str::trim);
        i += 1;
        let Some(body) = body else { continue };
        if body == "|" {
            let indent = line.len() - trimmed.len();
            let mut script = String::new();
            while i < lines.len()
                && (lines[i].trim().is_empty()
                    || lines[i].len() - lines[i].trim_start().len() > indent)
            {
                script.push_str(lines[i].trim_start_matches(' '));
                script.push('\n');
                i += 1;
            }
            scripts.push((i, script));
        } else {
            scripts.push((i, format!("{body}\n")));
        }
    }
    scripts
}

#[test]
fn workflow_scripts_pass_shellcheck() {
    let shellcheck = tool("shellcheck");
    for doc in projects() {
        let scratch = Scratch::new();
        let (_, root) = write_project(&doc, &scratch);
        for workflow in WORKFLOWS {
            let scripts = run_scripts(&text(&root.join(workflow)));
            assert!(scripts.len() >= 3, "{workflow}: no run scripts found");
            for (line, script) in scripts {
                assert!(
                    !script.contains("${{"),
                    "{workflow}:{line}: an expression in a script"
                );
                let file = scratch.join("script.sh");
                fs_err::write(&file, format!("#!/usr/bin/env bash\nset -e\n{script}")).unwrap();
                let out = Command::new(&shellcheck)
                    .arg(&file)
                    .output()
                    .expect("shellcheck runs");
                assert_ok(
                    &out,
                    &format!("shellcheck of {workflow} near line {line}:\n{script}"),
                );
            }
        }
    }
}

#[test]
fn the_runbooks_commands_pass_shellcheck() {
    let shellcheck = tool("shellcheck");
    for doc in projects() {
        let scratch = Scratch::new();
        let (_, root) = write_project(&doc, &scratch);
        let runbook = text(&root.join("RUNBOOK.md"));
        let blocks = fenced_blocks(&runbook, "sh");
        assert!(blocks.len() >= 8, "the runbook has too few commands");
        // One script, in order: later blocks use the variables earlier ones set.
        let script: String = blocks.iter().map(|b| format!("{b}\n")).collect();
        let file = scratch.join("runbook.sh");
        fs_err::write(&file, format!("#!/usr/bin/env bash\n{script}")).unwrap();
        let out = Command::new(&shellcheck)
            .arg(&file)
            .output()
            .expect("shellcheck runs");
        assert_ok(&out, "shellcheck of RUNBOOK.md's commands");
    }
}

fn fenced_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        let t = line.trim_start();
        match &mut current {
            None if t == open => current = Some(String::new()),
            Some(block) if t == "```" => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(t);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// CI's Terraform matrix names exactly the generated environment folders, and
/// the release workflow packages with xtask and uploads where Terraform reads.
#[test]
fn ci_checks_every_environment_and_release_uploads_what_terraform_deploys() {
    for doc in projects() {
        let scratch = Scratch::new();
        let (answers, root) = write_project(&doc, &scratch);
        let ci = text(&root.join(WORKFLOWS[0]));
        let matrix = ci
            .lines()
            .find_map(|l| l.trim().strip_prefix("env: ["))
            .and_then(|l| l.strip_suffix(']'))
            .expect("ci.yml has a Terraform env matrix");
        let matrix: BTreeSet<&str> = matrix.split(", ").collect();
        let mut expected: BTreeSet<&str> =
            answers.environments.iter().map(|e| e.as_str()).collect();
        expected.insert("local");
        assert_eq!(matrix, expected);
        for job in ["rust:", "terraform:", "checkov:", "etlgen-check:"] {
            assert!(
                ci.contains(&format!("\n  {job}\n")),
                "ci.yml has no {job} job"
            );
        }
        for check in [
            "cargo fmt --all -- --check",
            "cargo clippy --workspace --all-targets --locked -- -D warnings",
            "cargo test --workspace --locked",
            "terraform fmt -check -recursive infra",
            "validate",
            "Swatinem/rust-cache",
        ] {
            assert!(ci.contains(check), "ci.yml lacks {check}");
        }

        let release = text(&root.join(WORKFLOWS[1]));
        assert!(release.contains("tags: [\"v*\"]"));
        assert!(release.contains(
            "cargo xtask package --arch arm64 --builder cargo-lambda --version \"$GITHUB_REF_NAME\""
        ));
        assert!(release.contains(&format!("ARTIFACTS_PREFIX: {}\n", answers.client.as_str())));
        assert!(
            release.contains("dest=\"s3://$ARTIFACTS_BUCKET/$ARTIFACTS_PREFIX/$GITHUB_REF_NAME\"")
        );
    }
}

/// The generated CI's clippy step, exactly as ci.yml runs it, passes on the
/// widest pipeline: a new repository's first CI run is green.
/// (generated_build.rs runs its fmt and test steps.)
#[test]
fn the_generated_ci_clippy_step_passes() {
    let scratch = Scratch::new();
    let (_, root) = write_project(&all_services_doc("all-services", "sftp"), &scratch);
    let ci = text(&root.join(WORKFLOWS[0]));
    let clippy = run_scripts(&ci)
        .into_iter()
        .map(|(_, s)| s.trim().to_string())
        .find(|s| s.starts_with("cargo clippy "))
        .expect("ci.yml runs cargo clippy");
    let args: Vec<&str> = clippy.split_whitespace().skip(1).collect();
    let out = Workspace::take_turn(&root).cargo(&args);
    assert_ok(&out, &clippy);
}

// ---------------------------------------------------------------- packaging

/// `cargo xtask …` in a generated workspace whose turn it is.
fn xtask(ws: &Workspace, args: &[&str]) -> Output {
    ws.cargo(&[&["xtask"], args].concat())
}

#[test]
fn xtask_package_writes_zips_checksums_and_a_manifest_that_agree() {
    let scratch = Scratch::new();
    let (answers, root) = write_project("client = \"client-x\"", &scratch);
    git(&root, &["init", "-q"]);
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "-q", "-m", "generated"]);
    let commit = git(&root, &["rev-parse", "HEAD"]);
    let ws = Workspace::take_turn(&root);

    let out = xtask(
        &ws,
        &["package", "--arch", "x86_64", "--version", "v1.2.3-test"],
    );
    assert_ok(&out, "cargo xtask package --arch x86_64");
    let dist = root.join("dist");
    let steps: BTreeSet<String> = answers
        .steps
        .iter()
        .map(|s| s.name.as_str().to_string())
        .collect();

    let mut expected_files: BTreeSet<String> = steps.iter().map(|s| format!("{s}.zip")).collect();
    expected_files.extend(["SHA256SUMS".to_string(), "manifest.json".to_string()]);
    let files: BTreeSet<String> = fs_err::read_dir(&dist)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, expected_files);

    let manifest: serde_json::Value =
        serde_json::from_str(&text(&dist.join("manifest.json"))).unwrap();
    assert_eq!(manifest["version"], "v1.2.3-test");
    assert_eq!(manifest["commit"], commit.as_str());
    assert_eq!(manifest["arch"], "x86_64");
    assert_eq!(manifest["runtime"], "provided.al2023");
    let artifacts = manifest["artifacts"].as_array().expect("an artifacts list");
    let mut named = BTreeSet::new();
    let mut sums = BTreeMap::new();
    for a in artifacts {
        let name = a["name"].as_str().unwrap();
        let file = a["file"].as_str().unwrap();
        assert_eq!(file, format!("{name}.zip"));
        let bytes = fs_err::read(dist.join(file)).unwrap();
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(a["sha256"], sha.as_str(), "{file}: manifest hash");
        assert_eq!(
            a["size"].as_u64(),
            Some(bytes.len() as u64),
            "{file}: manifest size"
        );
        named.insert(name.to_string());
        sums.insert(file.to_string(), sha);
        check_bootstrap(name, &bytes, &scratch);
    }
    assert_eq!(named, steps, "the manifest names every step once");
    let listed: BTreeMap<String, String> = text(&dist.join("SHA256SUMS"))
        .lines()
        .map(|l| {
            let (sha, file) = l.split_once("  ").expect("sha256sum format");
            (file.to_string(), sha.to_string())
        })
        .collect();
    assert_eq!(listed, sums, "SHA256SUMS agrees with the files");

    // Packaging again changes nothing: the zips are reproducible.
    let before: Vec<Vec<u8>> = steps
        .iter()
        .map(|s| fs_err::read(dist.join(format!("{s}.zip"))).unwrap())
        .collect();
    assert_ok(
        &xtask(
            &ws,
            &["package", "--arch", "x86_64", "--version", "v1.2.3-test"],
        ),
        "the second cargo xtask package",
    );
    let after: Vec<Vec<u8>> = steps
        .iter()
        .map(|s| fs_err::read(dist.join(format!("{s}.zip"))).unwrap())
        .collect();
    assert!(
        before == after,
        "a second package of the same commit differs"
    );

    // A bad version is refused before anything is built or removed.
    let out = xtask(&ws, &["package", "--arch", "x86_64", "--version", "../x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid version \"../x\""));
    assert!(dist.join("manifest.json").is_file());

    // arm64 without cargo-lambda or the aarch64 standard library fails with
    // the fix, and leaves the last package alone.
    if !has_cargo_lambda() && !target_installed("aarch64-unknown-linux-gnu") {
        let out = xtask(&ws, &["package", "--version", "v1"]);
        assert!(
            !out.status.success(),
            "arm64 packaged without a way to build it"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("rustup target add aarch64-unknown-linux-gnu"),
            "{err}"
        );
        assert!(err.contains("cargo-lambda"), "{err}");
        assert!(dist.join("manifest.json").is_file());
    } else {
        let _ = writeln!(
            std::io::stderr(),
            "*** arm64 can be built here; the missing-target error was not checked ***"
        );
    }
}

/// A zip holds one executable `bootstrap`, and it is the step's own Lambda:
/// run outside Lambda without `ETL_ENV`, it names its step and refuses to start.
fn check_bootstrap(step: &str, zipped: &[u8], scratch: &Scratch) {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zipped)).unwrap();
    assert_eq!(archive.len(), 1, "{step}.zip holds only bootstrap");
    let mut entry = archive.by_name("bootstrap").expect("a bootstrap entry");
    let mode = entry.unix_mode().expect("unix permissions");
    assert_eq!(
        mode & 0o111,
        0o111,
        "{step}: bootstrap is executable ({mode:o})"
    );
    let mut binary = Vec::new();
    entry.read_to_end(&mut binary).unwrap();
    assert_eq!(
        &binary[..4],
        b"\x7fELF",
        "{step}: bootstrap is an ELF binary"
    );

    let path = scratch.join(&format!("bootstrap-{step}"));
    fs_err::write(&path, &binary).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o777)).unwrap();
    let out = Command::new(&path)
        .env_remove("ETL_ENV")
        .output()
        .expect("bootstrap runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "{step}: bootstrap started without ETL_ENV"
    );
    assert!(
        printed.contains(&format!("\"step\":\"{step}\"")),
        "{step}: {printed}"
    );
    assert!(printed.contains("ETL_ENV is not set"), "{step}: {printed}");
}

fn has_cargo_lambda() -> bool {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["lambda", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn target_installed(triple: &str) -> bool {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc runs");
    let sysroot = String::from_utf8(out.stdout).unwrap();
    Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(triple)
        .join("lib")
        .is_dir()
}

// ---------------------------------------------------------------- docs

/// The Mermaid node id of a step (Mermaid ids cannot hold `-`).
fn id(step: &str) -> String {
    step.replace('-', "_")
}

#[test]
fn the_pipeline_diagram_draws_every_step_queue_and_dlq_wired_as_the_answers_say() {
    for doc in projects() {
        let (answers, tree) = render_doc(&doc);
        let page = String::from_utf8(tree["docs/pipeline.md"].clone()).unwrap();
        let blocks = fenced_blocks(&page, "mermaid");
        let [diagram] = blocks.as_slice() else {
            panic!("one mermaid block: {blocks:?}")
        };
        assert!(diagram.starts_with("flowchart LR\n"));

        // Nodes: a queue, a Lambda and a DLQ per step, labelled with its name.
        for step in &answers.steps {
            let (name, i) = (step.name.as_str(), id(step.name.as_str()));
            for node in [
                format!("q_{i}[[\"{name} queue"),
                format!("fn_{i}(\"{name} Lambda\")"),
                format!("dlq_{i}[(\"{name} DLQ\")]"),
            ] {
                assert!(diagram.contains(&node), "{node} is not in:\n{diagram}");
            }
            let fifo = step.settings.step.fifo;
            assert_eq!(
                diagram.contains(&format!("q_{i}[[\"{name} queue (FIFO)\"]]")),
                fifo
            );
            let dlq_edge = format!(
                "q_{i} -. \"after {} receives\" .-> dlq_{i}",
                step.settings.step.max_receive_count
            );
            assert!(diagram.contains(&dlq_edge), "{dlq_edge}");
        }

        // Edges: exactly the wiring of the answers, through the landing zone
        // where a step writes there instead of to the next queue.
        let mut drawn = BTreeSet::new();
        let mut roots = BTreeSet::new();
        for line in diagram.lines().map(str::trim) {
            let parts: Vec<&str> = line.split(" --> ").collect();
            match parts.as_slice() {
                [from, to] if from.starts_with("fn_") => {
                    drawn.insert((
                        from[3..].to_string(),
                        to.trim_start_matches("q_").to_string(),
                    ));
                }
                [from, "landing", to] if from.starts_with("fn_") => {
                    drawn.insert((
                        from[3..].to_string(),
                        to.trim_start_matches("q_").to_string(),
                    ));
                }
                [from, to] if to.starts_with("q_") => {
                    roots.insert((from.to_string(), to[2..].to_string()));
                }
                _ => {}
            }
        }
        let wired: BTreeSet<(String, String)> = answers
            .steps
            .iter()
            .flat_map(|s| {
                s.feeds
                    .iter()
                    .map(move |f| (id(s.name.as_str()), id(f.as_str())))
            })
            .collect();
        assert_eq!(
            drawn, wired,
            "diagram edges vs the answers' wiring:\n{diagram}"
        );
        assert!(!wired.is_empty());

        // The source starts every step that no other step feeds.
        let fed: BTreeSet<&str> = answers
            .steps
            .iter()
            .flat_map(|s| &s.feeds)
            .map(|f| f.as_str())
            .collect();
        let entry = match answers.source.as_str() {
            "s3" => "landing",
            "http" => "api",
            _ => "source",
        };
        let expected_roots: BTreeSet<(String, String)> = answers
            .steps
            .iter()
            .filter(|s| !fed.contains(s.name.as_str()))
            .map(|s| (entry.to_string(), id(s.name.as_str())))
            .collect();
        assert_eq!(roots, expected_roots);
    }
}

#[test]
fn the_runbook_covers_alarms_redrive_replay_backfill_and_deploys() {
    for doc in projects() {
        let (answers, tree) = render_doc(&doc);
        let runbook = String::from_utf8(tree["RUNBOOK.md"].clone()).unwrap();
        let client = answers.client.as_str();
        for section in [
            "## Alarms",
            "### `<step>-dlq-not-empty`",
            "### `<step>-queue-stalled`",
            "## Inspect a DLQ",
            "## Redrive a DLQ",
            "## Replay a run from the raw zone",
            "## Backfill a logical date",
            "## Deploy per environment",
        ] {
            assert!(runbook.contains(section), "{client}: no {section}");
        }
        assert!(runbook.contains("aws sqs start-message-move-task --source-arn \"$DLQ_ARN\""));
        assert!(runbook.contains(&format!(
            "s3://{client}-<env>-data/raw/<logical_date>/<run_id>/<file>"
        )));
        for step in &answers.steps {
            assert!(
                runbook.contains(&format!("| `{}` |", step.name.as_str())),
                "{}",
                step.name.as_str()
            );
        }
        for env in &answers.environments {
            assert!(runbook.contains(&format!("### `{}`\n", env.as_str())));
            assert!(runbook.contains(&format!(
                "terraform -chdir=infra/envs/{} plan",
                env.as_str()
            )));
            // The committed backend names a placeholder bucket `init` cannot use.
            assert!(runbook.contains(&format!(
                "terraform -chdir=infra/envs/{} init -backend-config=bucket=",
                env.as_str()
            )));
        }
        // The log search finds what fills a DLQ: the runner logs a retried failure at
        // WARN, and a timeout leaves only Lambda's own line.
        let runner =
            String::from_utf8(tree["vendor/etlgen-runtime/src/runner.rs"].clone()).unwrap();
        assert!(runner.contains(
            r#"tracing::warn!(error = %e.chain(), "message failed; it will be retried")"#
        ));
        assert!(
            runbook.contains(r#"--filter-pattern '?WARN ?ERROR ?"Task timed out"'"#),
            "{client}: the log search misses retried failures"
        );
        let readme = String::from_utf8(tree["README.md"].clone()).unwrap();
        assert!(readme.contains("cargo xtask package --arch x86_64"));
        assert!(readme.contains("RUNBOOK.md#deploy-per-environment"));
    }
}

/// The replay message the runbook sends is an S3 event the validator
/// accepts, for the logical date of the stored input.
#[test]
fn the_runbooks_replay_event_is_one_the_validator_reads() {
    use etlgen_runtime::kinds::sources::s3;
    for doc in projects() {
        let (answers, tree) = render_doc(&doc);
        let runbook = String::from_utf8(tree["RUNBOOK.md"].clone()).unwrap();
        let template = runbook
            .lines()
            .find(|l| l.starts_with("{\"Records\""))
            .expect("the runbook writes an S3 event");
        let prefix = format!("{}-prod", answers.client.as_str());
        let event = template
            .replace("$AWS_REGION", "us-east-1")
            .replace(
                "$(date -u +%Y-%m-%dT%H:%M:%S.000Z)",
                "2024-06-01T10:00:00.000Z",
            )
            .replace("$P", &prefix)
            .replace("$KEY", "raw/2024-05-01/8c1e/contacts+list.csv")
            .replace("$REPLAY", "replay-20240601T100000");
        assert!(!event.contains('$'), "an unreplaced variable: {event}");
        let parsed = s3::parse_event(&event)
            .expect("an S3 event")
            .expect("a valid S3 event");
        assert_eq!(parsed.bucket, format!("{prefix}-data"));
        assert_eq!(parsed.key, "raw/2024-05-01/8c1e/contacts list.csv");
        assert_eq!(parsed.etag.as_deref(), Some("replay-20240601T100000"));
        assert_eq!(
            s3::date_in_key(&parsed.key),
            Some("2024-05-01".parse().unwrap())
        );
    }
}
