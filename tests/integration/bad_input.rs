//! Every kind of bad input: a clear one-line error naming the flag or field
//! and what is allowed, a non-zero exit code, and nothing on disk.

use crate::helpers::{Scratch, etlgen};

/// Runs `etlgen new <args> --yes` in an empty scratch directory and checks
/// that it fails with every `needles` in stderr, leaving the directory empty.
fn fails(args: &[&str], needles: &[&str]) {
    let scratch = Scratch::new();
    let out = etlgen()
        .current_dir(scratch.path())
        .arg("new")
        .args(args)
        .arg("--yes")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{args:?}: {needle:?} not in {stderr}"
        );
    }
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "{args:?}: one line expected: {stderr}"
    );
    assert!(
        scratch.entries().is_empty(),
        "{args:?} left {:?}",
        scratch.entries()
    );
}

#[test]
fn client_names_that_are_not_identifiers() {
    let long = "a".repeat(64);
    for (name, why) in [
        ("../x", "must start with a letter"),
        ("a/b", "contains '/'"),
        ("{{x}}", "must start with a letter"),
        ("", "it is empty"),
        (long.as_str(), "64 characters; at most 63"),
        ("clïent", "contains 'ï'"),
        ("Client", "must start with a letter"),
        ("fn", "reserved word"),
        ("module", "reserved word"),
    ] {
        fails(&[name], &["error: invalid client", why]);
    }
}

#[test]
fn a_missing_client_name() {
    fails(&[], &["missing client", "etlgen new <client>"]);
}

#[test]
fn unknown_services_and_sources() {
    fails(
        &["acme", "--services", "validator,mailer"],
        &["--services", "\"mailer\"", "expected one of: validator"],
    );
    fails(
        &["acme", "--services", "sftp-poller"],
        &["--services", "expected one of"],
    );
    fails(
        &["acme", "--source", "ftp"],
        &["invalid source \"ftp\"", "s3, sftp, http"],
    );
}

#[test]
fn pipelines_the_catalog_rejects() {
    fails(
        &["acme", "--services", "validator,distribution-scheduler"],
        &[
            "reads contacts that no earlier step sends",
            "add contact-importer",
            "mailing_list_id",
        ],
    );
    fails(
        &["acme", "--services", "validator,notifier,notifier"],
        &["two steps are named \"notifier\""],
    );
    fails(
        &["acme", "--services", "validator,validator:second"],
        &["validator may appear only once"],
    );
    fails(
        &["acme", "--services", "validator:../x"],
        &["invalid step name"],
    );
}

#[test]
fn invalid_region_datacenter_environment_and_schedule() {
    fails(
        &["acme", "--region", "moon-1"],
        &["invalid region \"moon-1\"", "us-east-1"],
    );
    fails(
        &["acme", "--datacenter", "qualtrics.com"],
        &["invalid datacenter", "iad1"],
    );
    fails(&["acme", "--env", "dev,dev"], &["listed twice"]);
    fails(&["acme", "--env", "local"], &["`local` is reserved"]);
    fails(&["acme", "--env", "Prod"], &["invalid environment"]);
    fails(
        &["acme", "--source", "sftp", "--schedule", "0 6 * * *"],
        &["invalid schedule", "cron("],
    );
    fails(
        &[
            "acme",
            "--source",
            "sftp",
            "--schedule",
            "cron(0 6 * * * *)",
        ],
        &["exactly one of day-of-month and day-of-week"],
    );
    fails(
        &["acme", "--schedule", "rate(1 day)"],
        &["invalid schedule", "s3 source runs when input arrives"],
    );
    fails(
        &["acme", "--source", "sftp", "--event-driven"],
        &["sftp source polls on a schedule", "--schedule"],
    );
    fails(&["prod-x"], &["invalid client", "prod"]);
    fails(&["acme", "--region", ""], &["--region is empty"]);
}

#[test]
fn settings_that_are_out_of_range_or_unknown() {
    fails(
        &["acme", "--set", "validator.batch_size=0"],
        &["steps.validator.settings.batch_size", "from 1 to 10000"],
    );
    fails(
        &["acme", "--set", "validator.colour=red"],
        &["unknown setting for validator", "batch_size"],
    );
    fails(
        &["acme", "--set", "nobody.batch_size=1"],
        &["no step named \"nobody\"", "validator"],
    );
    fails(&["acme", "--set", "batch_size"], &["STEP.KEY=VALUE"]);
    fails(&["acme", "--set", "validator.format=xml"], &["csv, jsonl"]);
}

#[test]
fn conflicting_flags_are_usage_errors() {
    let scratch = Scratch::new();
    etlgen()
        .current_dir(scratch.path())
        .args([
            "new",
            "acme",
            "--yes",
            "--schedule",
            "rate(1 day)",
            "--event-driven",
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--event-driven"));
    assert!(scratch.entries().is_empty());
}

#[test]
fn answers_files_with_unknown_keys_or_wrong_types() {
    for (doc, needles) in [
        (
            "client = \"acme\"\ncolour = \"red\"\n",
            &[
                "invalid --answers file",
                "at line 2, column 1",
                "unknown field `colour`",
            ][..],
        ),
        (
            "client = 5\n",
            &["invalid --answers file", "invalid type"][..],
        ),
        (
            "client = \"acme\"\n[[steps]]\nkind = \"validator\"\nsettings = { batch_size = \"ten\" }\n",
            &["whole number"][..],
        ),
        (
            "client = \"acme\"\n[[steps]]\nkind = \"mailer\"\n",
            &["steps[0].kind", "unknown service"][..],
        ),
    ] {
        let scratch = Scratch::new();
        let answers = scratch.join("answers.toml");
        fs_err::write(&answers, doc).unwrap();
        let out = etlgen()
            .current_dir(scratch.path())
            .args(["new", "--yes", "--answers", "answers.toml"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{doc}");
        for needle in needles {
            assert!(stderr.contains(needle), "{doc}: {needle:?} not in {stderr}");
        }
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{doc}: one line expected: {stderr}"
        );
        assert_eq!(scratch.entries(), ["answers.toml"], "{doc}");
    }
    fails(
        &["--answers", "missing.toml"],
        &["reading --answers", "missing.toml"],
    );
}

#[test]
fn a_target_that_exists_and_is_not_empty_is_left_alone() {
    let scratch = Scratch::new();
    fs_err::create_dir(scratch.join("acme")).unwrap();
    fs_err::write(scratch.join("acme/notes.txt"), "mine").unwrap();
    etlgen()
        .current_dir(scratch.path())
        .args(["new", "acme", "--yes"])
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "acme already exists and is not empty",
        ));
    assert_eq!(scratch.entries(), ["acme", "acme/notes.txt"]);
    assert_eq!(
        fs_err::read_to_string(scratch.join("acme/notes.txt")).unwrap(),
        "mine"
    );

    fs_err::write(scratch.join("file"), "x").unwrap();
    etlgen()
        .current_dir(scratch.path())
        .args(["new", "acme", "--yes", "--output", "file"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("is not a directory"));
}
