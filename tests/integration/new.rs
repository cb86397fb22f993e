//! `etlgen new` through the binary: the happy paths.

use git2::Repository;

use crate::helpers::{Scratch, etlgen};

#[test]
fn yes_generates_the_default_pipeline_with_one_commit() {
    let scratch = Scratch::new();
    etlgen()
        .current_dir(scratch.path())
        .args(["new", "client-x", "--yes"])
        .assert()
        .success()
        .stdout(predicates::str::contains("Created client-x"))
        .stdout(predicates::str::contains("contact-importer"));
    let repo_dir = scratch.join("client-x");
    for path in [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        ".etlgen/answers.toml",
        "config/default.toml",
        "config/dev.toml",
        "config/prod.toml",
        "lambdas/validator/src/main.rs",
        "lambdas/validator/src/hooks.rs",
        "lambdas/contact-importer/tests/hooks.rs",
        "lambdas/distribution-scheduler/Cargo.toml",
        "vendor/etlgen-runtime/Cargo.toml",
        "vendor/etlgen-runtime/src/lib.rs",
    ] {
        assert!(repo_dir.join(path).is_file(), "{path} is missing");
    }
    let answers = fs_err::read_to_string(repo_dir.join(".etlgen/answers.toml")).unwrap();
    assert!(answers.contains(&format!(
        "etlgen_version = \"{}\"",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(answers.contains("client = \"client-x\""));
    assert!(
        !answers.to_lowercase().contains("token ="),
        "no secrets: {answers}"
    );

    let repo = Repository::open(&repo_dir).unwrap();
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    assert_eq!(head.parent_count(), 0);
    assert!(head.message().unwrap().starts_with("Generate client-x"));
    assert!(
        !head.author().name().unwrap().is_empty(),
        "a commit author even without git config"
    );
    assert!(
        repo.statuses(None).unwrap().is_empty(),
        "everything generated is committed"
    );
    // Nothing but the repository is left next to it.
    assert_eq!(fs_err::read_dir(scratch.path()).unwrap().count(), 1);
}

#[test]
fn dry_run_lists_files_and_writes_nothing() {
    let scratch = Scratch::new();
    let out = etlgen()
        .current_dir(scratch.path())
        .args([
            "new",
            "acme",
            "--yes",
            "--dry-run",
            "--services",
            "validator,response-importer",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("Would create acme with"), "{stdout}");
    assert!(
        stdout.contains("seeded") && stdout.contains("lambdas/response-importer/src/hooks.rs"),
        "{stdout}"
    );
    assert!(
        stdout.contains("owned") && stdout.contains("vendor/etlgen-runtime/Cargo.toml"),
        "{stdout}"
    );
    assert!(stdout.contains("Dry run: nothing was written."), "{stdout}");
    assert!(scratch.entries().is_empty());
}

#[test]
fn flags_answers_file_and_set_are_layered() {
    let scratch = Scratch::new();
    fs_err::write(
        scratch.join("acme.toml"),
        "client = \"acme\"\nregion = \"eu-west-1\"\ndatacenter = \"fra1\"\nsource = \"sftp\"\n\
         [[steps]]\nkind = \"validator\"\n[[steps]]\nkind = \"response-importer\"\nname = \"nps\"\n",
    )
    .unwrap();
    etlgen()
        .current_dir(scratch.path())
        .args([
            "new",
            "--answers",
            "acme.toml",
            "--region",
            "eu-central-1",
            "--no-git",
        ])
        .args([
            "--set",
            "nps.survey_id=SV_123",
            "--set",
            "validator.batch_size=1",
            "--output",
            "out/acme",
        ])
        .assert()
        .success();
    let root = scratch.join("out/acme");
    assert!(!root.join(".git").exists(), "--no-git");
    let config = fs_err::read_to_string(root.join("config/default.toml")).unwrap();
    assert!(
        config.contains("region = \"eu-central-1\""),
        "the flag beats the file"
    );
    assert!(
        config.contains("datacenter = \"fra1\""),
        "the file beats the default"
    );
    assert!(
        config.contains("survey_id = \"SV_123\""),
        "--set reaches the step config"
    );
    assert!(
        root.join("lambdas/sftp-poller/src/main.rs").is_file(),
        "the sftp source adds its poller"
    );
    let answers = fs_err::read_to_string(root.join(".etlgen/answers.toml")).unwrap();
    assert!(answers.contains("survey_id = \"SV_123\""), "{answers}");
}

#[test]
fn a_repeated_kind_becomes_one_crate_per_name() {
    let scratch = Scratch::new();
    etlgen()
        .current_dir(scratch.path())
        .args(["new", "acme", "--yes", "--no-git"])
        .args(["--services", "validator,contact-importer,distribution-scheduler:invite,distribution-scheduler:reminder"])
        .args(["--set", "reminder.send_offset_hours=57"])
        .assert()
        .success();
    let root = scratch.join("acme");
    let workspace = fs_err::read_to_string(root.join("Cargo.toml")).unwrap();
    for member in ["lambdas/invite", "lambdas/reminder"] {
        assert!(workspace.contains(member), "{workspace}");
    }
    let config = fs_err::read_to_string(root.join("config/default.toml")).unwrap();
    let table = |name: &str| {
        let doc: toml::Table = toml::from_str(&config).unwrap();
        doc["steps"][name].clone()
    };
    assert_eq!(
        table("reminder")["send_offset_hours"].as_integer(),
        Some(57)
    );
    assert_eq!(table("invite")["send_offset_hours"].as_integer(), Some(9));
    let readers = table("contact-importer")["next_steps"].clone();
    assert_eq!(
        readers,
        toml::Value::try_from(["invite", "reminder"]).unwrap(),
        "fan-out"
    );
}

#[test]
fn an_empty_output_directory_is_filled() {
    let scratch = Scratch::new();
    fs_err::create_dir(scratch.join("here")).unwrap();
    etlgen()
        .current_dir(scratch.path())
        .args(["new", "acme", "--yes", "--output", "here"])
        .assert()
        .success();
    assert!(scratch.join("here/Cargo.toml").is_file());
    assert!(scratch.join("here/.git").is_dir());
}
