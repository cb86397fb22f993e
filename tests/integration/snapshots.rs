//! Snapshots of rendered repositories, so a reviewer sees what a template
//! change does to a generated repository (cargo-dist's "uber-snapshots").
//!
//! The vendored framework and `Cargo.lock` are summarised, not inlined: they
//! are tested on their own, and would drown every template diff.

use crate::helpers::{all_services_doc, render_doc, responses_http_doc};

fn uber_snapshot(doc: &str) -> String {
    let (_, tree) = render_doc(doc);
    let mut out = String::new();
    let mut vendored = 0;
    for (path, bytes) in &tree {
        if path.starts_with("vendor/") {
            vendored += 1;
            continue;
        }
        out.push_str(&format!("==== {path} ====\n"));
        if path == "Cargo.lock" {
            out.push_str("(composed from src/lockfile/base.lock; see the lockfile tests)\n");
        } else {
            out.push_str(&String::from_utf8_lossy(bytes));
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    assert!(vendored > 10, "the framework is vendored");
    out.push_str(
        "==== vendor/etlgen-runtime/ ====\n(the etlgen-runtime crate, vendored byte for byte)\n",
    );
    out
}

fn assert_snapshot(name: &str, doc: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(env!("CARGO_PKG_VERSION")), "[VERSION]");
    // .etlgen/lock.toml records every file's hash; the files themselves are shown.
    settings.add_filter("[0-9a-f]{64}", "[SHA256]");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!(name, uber_snapshot(doc)));
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

#[test]
fn default_pipeline() {
    assert_snapshot("default", "client = \"client-x\"");
}

#[test]
fn all_services_from_sftp() {
    assert_snapshot("all_services_sftp", &all_services_doc("acme", "sftp"));
}

#[test]
fn responses_over_http_with_overrides() {
    assert_snapshot("responses_http", &responses_http_doc("big-bank"));
}
