//! `etlgen plan`: the scoping document, checked against the answers it comes
//! from and against the Terraform `etlgen new` renders for them.

use std::collections::BTreeMap;

use etlgen::answers::ANSWERS_PATH;
use etlgen::catalog::Catalog;
use etlgen::render::Tree;
use serde_json::Value;

use crate::helpers::{Scratch, all_services_doc, etlgen, projects, render_doc};

/// Runs `etlgen plan --answers <doc> ARGS` and returns stdout.
fn plan(doc: &str, args: &[&str]) -> String {
    let scratch = Scratch::new();
    let file = scratch.join("answers.toml");
    fs_err::write(&file, doc).unwrap();
    let out = etlgen()
        .arg("plan")
        .arg("--answers")
        .arg(&file)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn plan_json(doc: &str, args: &[&str]) -> Value {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&plan(doc, &all)).expect("plan --format json prints JSON")
}

/// Snapshots the Markdown with the etlgen version blanked out, as the
/// repository snapshots do.
fn assert_markdown_snapshot(name: &str, doc: &str) {
    let version = concat!("etlgen ", env!("CARGO_PKG_VERSION"));
    let markdown = plan(doc, &[]).replace(version, "etlgen [VERSION]");
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!(name, markdown));
}

#[test]
fn markdown_of_the_default_pipeline() {
    assert_markdown_snapshot("plan_default", "client = \"client-x\"");
}

#[test]
fn markdown_of_the_all_services_sftp_pipeline() {
    assert_markdown_snapshot(
        "plan_all_services_sftp",
        &all_services_doc("all-services", "sftp"),
    );
}

/// The JSON's steps, settings, queues and hook points are the answers'.
#[test]
fn json_steps_and_hook_points_agree_with_the_answers() {
    let catalog = Catalog::builtin();
    for doc in projects() {
        let (answers, _) = render_doc(&doc);
        let json = plan_json(&doc, &[]);
        assert_eq!(json["client"], answers.client.as_str());
        let steps = json["steps"].as_array().unwrap();
        assert_eq!(steps.len(), answers.steps.len());
        for (got, step) in steps.iter().zip(&answers.steps) {
            let s = &step.settings.step;
            assert_eq!(got["name"], step.name.as_str());
            assert_eq!(got["kind"], step.kind.as_str());
            let fifo = if s.fifo { ".fifo" } else { "" };
            let name = format!("{}-<env>-{}{fifo}", answers.client, step.name);
            assert_eq!(got["queue"]["name"], name.as_str());
            assert_eq!(got["queue"]["fifo"], s.fifo);
            for (key, value) in [
                ("batch_size", s.batch_size),
                ("batching_window_seconds", s.batching_window_seconds),
                ("max_concurrency", s.max_concurrency),
                ("timeout_seconds", s.timeout_seconds),
                ("memory_mb", s.memory_mb),
                ("ephemeral_storage_mb", s.ephemeral_storage_mb),
                ("max_receive_count", s.max_receive_count),
            ] {
                assert_eq!(got["settings"][key], value, "{}.{key}", step.name);
            }
            let feeds: Vec<&str> = step.feeds.iter().map(|f| f.as_str()).collect();
            assert_eq!(got["feeds"], serde_json::json!(feeds));
            let hooks: Vec<&str> = got["hooks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["name"].as_str().unwrap())
                .collect();
            assert_eq!(
                hooks,
                catalog.kind(&step.kind).unwrap().hooks,
                "{}",
                step.name
            );
            for h in got["hooks"].as_array().unwrap() {
                assert!(
                    h["default"].as_str().unwrap().starts_with("By default"),
                    "{h}"
                );
            }
        }
        assert!(
            json["mermaid"]
                .as_str()
                .unwrap()
                .starts_with("flowchart LR")
        );
    }
}

/// `--records` drives the call counts: one contact import per record batch.
#[test]
fn json_call_counts_follow_the_records_assumed() {
    let doc = "client = \"client-x\"";
    let (answers, _) = render_doc(doc);
    let per_batch = answers
        .step("validator")
        .unwrap()
        .settings
        .param("records_per_batch");
    let per_batch = per_batch.and_then(|v| v.as_integer()).unwrap() as u64;
    for records in [1_u64, 250, 10_000] {
        let json = plan_json(doc, &["--records", &records.to_string()]);
        let q = &json["qualtrics"];
        assert_eq!(q["assumptions"]["records"], records);
        let imports = q["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["budget"] == "import_transaction_contacts")
            .unwrap();
        assert_eq!(imports["calls_per_run"], records.div_ceil(per_batch));
        let sum: u64 = q["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["calls_per_run"].as_u64().unwrap())
            .sum();
        assert_eq!(q["total_calls_per_run"], sum);
    }
}

/// Every `resource` block of the rendered `infra/modules`, with how many one
/// environment gets: step-module resources once per `module "…"` block,
/// pipeline resources once, or once per entry of a literal `for_each` set.
/// A `for_each` over a variable (the on-call e-mails) has no fixed count and
/// is left out.
fn rendered_resources(tree: &Tree) -> BTreeMap<String, u64> {
    let text = |path: &str| String::from_utf8(tree[path].clone()).unwrap();
    let modules = text("infra/modules/pipeline/main.tf")
        .lines()
        .filter(|l| l.starts_with("module \""))
        .count() as u64;
    let mut out = BTreeMap::new();
    for (path, bytes) in tree {
        let module = match path.strip_prefix("infra/modules/") {
            Some(rest) if rest.starts_with("step/") => "step",
            Some(rest) if rest.starts_with("pipeline/") => "pipeline",
            _ => continue,
        };
        let source = String::from_utf8(bytes.clone()).unwrap();
        let lines: Vec<&str> = source.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(rest) = line.strip_prefix("resource \"") else {
                continue;
            };
            let parts: Vec<&str> = rest.split('"').collect();
            let address = format!("{module}/{}.{}", parts[0], parts[2]);
            let for_each = lines[i + 1..]
                .iter()
                .take_while(|l| !l.starts_with('}'))
                .find_map(|l| l.trim().strip_prefix("for_each = toset("));
            let count = match for_each {
                None if module == "step" => modules,
                None => 1,
                Some(set) if set.starts_with('[') => set.matches('"').count() as u64 / 2,
                Some(_) => continue,
            };
            out.insert(address, count);
        }
    }
    out
}

/// The plan's resource counts are what Terraform would create: the same
/// addresses and counts as the rendered modules, so the two cannot drift.
#[test]
fn resource_counts_agree_with_the_rendered_terraform() {
    for doc in projects() {
        let (answers, tree) = render_doc(&doc);
        let expected = rendered_resources(&tree);
        let json = plan_json(&doc, &[]);
        let resources = &json["resources"];
        let got: BTreeMap<String, u64> = resources["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let address = format!(
                    "{}/{}",
                    r["module"].as_str().unwrap(),
                    r["terraform"].as_str().unwrap()
                );
                (address, r["count"].as_u64().unwrap())
            })
            .collect();
        assert_eq!(got, expected, "{}", answers.client);
        assert_eq!(
            resources["total_per_environment"],
            expected.values().sum::<u64>()
        );
        // And the headline numbers are the answers' own.
        let steps = answers.steps.len() as u64;
        assert_eq!(got["step/aws_lambda_function.step"], steps);
        assert_eq!(got["step/aws_sqs_queue.dlq"], steps);
        let alarms = got["step/aws_cloudwatch_metric_alarm.dlq"]
            + got["step/aws_cloudwatch_metric_alarm.oldest_message"];
        assert_eq!(alarms, 2 * steps, "two alarms per step");
        assert_eq!(
            got.contains_key("pipeline/aws_scheduler_schedule.poll"),
            answers.schedule.is_some()
        );
        assert_eq!(
            got.contains_key("pipeline/aws_apigatewayv2_api.submissions"),
            answers.source == "http"
        );
        assert_eq!(
            got.contains_key("pipeline/aws_s3_bucket.landing"),
            answers.source == "s3"
        );
    }
}

/// Runs `etlgen plan ARGS` in `dir` and returns its stderr, asserting exit 1.
fn plan_fails(dir: &std::path::Path, args: &[&str]) -> String {
    let out = etlgen()
        .current_dir(dir)
        .arg("plan")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn bad_answers_and_a_non_etlgen_directory_are_clear_errors() {
    let scratch = Scratch::new();
    let missing = plan_fails(scratch.path(), &["--answers", "nope.toml"]);
    assert!(
        missing.contains("cannot read the answers file"),
        "{missing}"
    );
    assert_eq!(missing.matches("nope.toml").count(), 1, "{missing}");

    fs_err::write(scratch.join("broken.toml"), "client = \"x\nsource = 3\n").unwrap();
    let broken = plan_fails(scratch.path(), &["--answers", "broken.toml"]);
    assert!(
        broken.contains("invalid answers file broken.toml"),
        "{broken}"
    );
    assert!(broken.contains("line 1"), "{broken}");

    fs_err::write(
        scratch.join("bad.toml"),
        "client = \"acme\"\nsource = \"ftp\"\n",
    )
    .unwrap();
    let bad = plan_fails(scratch.path(), &["--answers", "bad.toml"]);
    assert!(bad.contains("invalid source \"ftp\""), "{bad}");
    assert!(bad.contains("s3, sftp, http"), "{bad}");

    fs_err::write(scratch.join("anonymous.toml"), "source = \"s3\"\n").unwrap();
    let anonymous = plan_fails(scratch.path(), &["--answers", "anonymous.toml"]);
    assert!(anonymous.contains("has no `client`"), "{anonymous}");

    let not_repo = plan_fails(scratch.path(), &[]);
    assert!(not_repo.contains("not an etlgen repository"), "{not_repo}");
    assert!(not_repo.contains(ANSWERS_PATH), "{not_repo}");
    assert!(not_repo.contains("--answers"), "{not_repo}");
    let elsewhere = plan_fails(scratch.path(), &["--path", "missing-dir"]);
    assert!(elsewhere.contains("missing-dir"), "{elsewhere}");
}

/// In a generated repository, plan reads `.etlgen/answers.toml` and says
/// exactly what it says for the answers file the repository came from.
#[test]
fn plan_in_a_generated_repository_equals_plan_of_its_answers() {
    let scratch = Scratch::new();
    let doc = all_services_doc("acme", "sftp");
    let file = scratch.join("acme.toml");
    fs_err::write(&file, &doc).unwrap();
    let repo = scratch.join("acme");
    etlgen()
        .args(["new", "--yes", "--no-git", "--answers"])
        .arg(&file)
        .arg("--output")
        .arg(&repo)
        .assert()
        .success();
    let from_file = plan(&doc, &[]);
    let by_path = etlgen()
        .arg("plan")
        .arg("--path")
        .arg(&repo)
        .output()
        .unwrap();
    assert!(by_path.status.success());
    assert_eq!(String::from_utf8(by_path.stdout).unwrap(), from_file);
    let inside = etlgen()
        .current_dir(&repo)
        .args(["plan", "--format", "json"])
        .output()
        .unwrap();
    assert!(inside.status.success());
    let inside: Value = serde_json::from_slice(&inside.stdout).unwrap();
    assert_eq!(inside, plan_json(&doc, &[]));
}
