//! `etlgen list`: the catalog as text and as JSON.

use crate::helpers::etlgen;

#[test]
fn text_names_every_kind_with_its_defaults_and_hooks() {
    let out = etlgen().arg("list").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "validator",
        "contact-importer",
        "distribution-scheduler (processing, repeatable, default)",
        "response-importer",
        "exporter",
        "notifier",
        "sftp-poller (source, comes with its source)",
        "s3     The client drops a file",
        "reads:    contacts from contact-importer (with mailing_list_id set: records)",
        "reads:    records from validator",
        "hooks:    send_time, build_request",
        "maxReceiveCount",
        "memory 1024 MB, /tmp 2048 MB",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
}

#[test]
fn json_is_the_catalog() {
    let out = etlgen()
        .args(["list", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds = json["kind"].as_array().unwrap();
    let scheduler = kinds
        .iter()
        .find(|k| k["id"] == "distribution-scheduler")
        .unwrap();
    assert_eq!(scheduler["repeatable"], true);
    assert_eq!(scheduler["consumes"], "contacts");
    assert!(scheduler["settings"]["max_receive_count"].as_u64().unwrap() >= 1);
    assert_eq!(json["defaults"]["source"], "s3");
    assert_eq!(json["source"].as_array().unwrap().len(), 3);
}

#[test]
fn an_unknown_format_is_a_usage_error() {
    etlgen().args(["list", "--format", "yaml"]).assert().code(2);
}
