//! Shared fixtures: the binary under test, scratch directories and renders.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use etlgen::answers::{Answers, AnswersFile, StepEntry};
use etlgen::catalog::Catalog;
use etlgen::plan::Plan;
use etlgen::render::{Tree, render};

/// The etlgen binary, with no git identity and no terminal.
pub fn etlgen() -> Command {
    let mut cmd = Command::cargo_bin("etlgen").expect("the etlgen binary is built");
    cmd.env_remove("GIT_AUTHOR_NAME")
        .env_remove("GIT_AUTHOR_EMAIL")
        .env("NO_COLOR", "1");
    cmd
}

/// A scratch directory and the paths in it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Every entry under the scratch directory, relative and sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut out: Vec<String> = walkdir::WalkDir::new(self.path())
            .min_depth(1)
            .into_iter()
            .map(|e| {
                let e = e.expect("a readable entry");
                e.path()
                    .strip_prefix(self.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        out.sort();
        out
    }
}

/// Resolves and renders an answers document in-process.
pub fn render_doc(doc: &str) -> (Answers, Tree) {
    let raw: AnswersFile = toml::from_str(doc).expect("a valid answers document");
    let answers = Answers::resolve(&raw, Catalog::builtin()).expect("valid answers");
    let plan = Plan::new(answers.clone()).expect("a plan");
    let tree = render(&plan).expect("a render");
    (answers, tree)
}

/// The answers document of a pipeline with every selectable kind.
pub fn all_services_doc(client: &str, source: &str) -> String {
    let mut doc = format!(
        "client = \"{client}\"\nsource = \"{source}\"\nschedule = \"cron(0 6 * * ? *)\"\n\
         environments = [\"dev\", \"staging\", \"prod\"]\n"
    );
    for (kind, name) in [
        ("validator", "validator"),
        ("contact-importer", "import-contacts"),
        ("distribution-scheduler", "invite"),
        ("distribution-scheduler", "reminder"),
        ("response-importer", "import-responses"),
        ("exporter", "export"),
        ("notifier", "notify"),
    ] {
        doc.push_str(&format!(
            "[[steps]]\nkind = \"{kind}\"\nname = \"{name}\"\n"
        ));
    }
    doc
}

/// An HTTP-sourced pipeline exercising the less common settings: a JSON-lines
/// validator with its own columns, a FIFO response importer, a scheduler on a
/// fixed mailing list, an SFTP export, a notifier and a single environment.
pub fn responses_http_doc(client: &str) -> String {
    format!(
        r#"
        client = "{client}"
        source = "http"
        region = "eu-west-1"
        datacenter = "fra1"
        environments = ["dev"]
        [[steps]]
        kind = "validator"
        settings = {{ format = "jsonl", primary_key = "response_id", columns = [
            {{ name = "response_id", required = true }},
            {{ name = "score", type = "integer" }},
        ] }}
        [[steps]]
        kind = "response-importer"
        name = "nps"
        settings = {{ survey_id = "SV_abc", fifo = true, batch_size = 5 }}
        [[steps]]
        kind = "distribution-scheduler"
        name = "fixed-list"
        settings = {{ mailing_list_id = "CG_FIXED" }}
        [[steps]]
        kind = "exporter"
        settings = {{ sftp_dir = "/inbox" }}
        [[steps]]
        kind = "notifier"
        "#
    )
}

/// The three shapes the templates branch on, which the tests that run real
/// tools on a generated repository judge: the default pipeline (S3 source);
/// the widest one (SFTP source, a repeated kind, a schedule, every post
/// step); and an HTTP source with a FIFO step and one environment.
pub fn projects() -> Vec<String> {
    vec![
        "client = \"client-x\"".to_string(),
        all_services_doc("all-services", "sftp"),
        responses_http_doc("responses"),
    ]
}

/// Renders an answers document in-process and writes the repository into
/// the scratch directory, under the client's name.
pub fn write_project(doc: &str, scratch: &Scratch) -> (Answers, PathBuf) {
    let (answers, tree) = render_doc(doc);
    let root = scratch.join(answers.client.as_str());
    etlgen::write::write_tree(&root, &tree).expect("the repository is written");
    (answers, root)
}

/// Every pipeline the catalog's selectable kinds can make, for every source:
/// a label (`<source>-<kinds as a bit mask>`) and the raw answers, before
/// the catalog's requirements accept or reject them.
pub fn every_combination(client: &str) -> Vec<(String, AnswersFile)> {
    let catalog = Catalog::builtin();
    let kinds: Vec<&str> = catalog.selectable_kinds().map(|k| k.id.as_str()).collect();
    let mut out = Vec::new();
    for source in catalog.sources.iter().map(|s| s.id.as_str()) {
        for mask in 1u32..(1 << kinds.len()) {
            let steps = kinds
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, k)| StepEntry {
                    name: None,
                    kind: (*k).to_string(),
                    settings: toml::Table::new(),
                })
                .collect();
            let raw = AnswersFile {
                client: Some(client.into()),
                source: Some(source.into()),
                steps: Some(steps),
                ..AnswersFile::default()
            };
            out.push((format!("{source}-{mask:b}"), raw));
        }
    }
    out
}
