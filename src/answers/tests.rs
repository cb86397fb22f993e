use super::*;

fn resolve(doc: &str) -> Result<Answers, String> {
    let raw: AnswersFile = toml::from_str(doc).map_err(|e| e.to_string())?;
    Answers::resolve(&raw, Catalog::builtin()).map_err(|e| e.to_string())
}

fn names(a: &Answers) -> Vec<&str> {
    a.steps.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn defaults_make_a_useful_pipeline() {
    let a = resolve("client = \"client-x\"").unwrap();
    assert_eq!(a.source, "s3");
    assert_eq!(
        names(&a),
        ["validator", "contact-importer", "distribution-scheduler"]
    );
    assert_eq!(
        a.environments
            .iter()
            .map(EnvName::as_str)
            .collect::<Vec<_>>(),
        ["dev", "prod"]
    );
    assert_eq!(a.schedule, None);
}

#[test]
fn steps_are_ordered_by_stage_and_sftp_adds_its_poller() {
    let a = resolve(
        r#"
        client = "acme"
        source = "sftp"
        [[steps]]
        kind = "notifier"
        [[steps]]
        kind = "distribution-scheduler"
        name = "invite"
        [[steps]]
        kind = "validator"
        [[steps]]
        kind = "contact-importer"
        [[steps]]
        kind = "distribution-scheduler"
        name = "reminder"
        "#,
    )
    .unwrap();
    assert_eq!(
        names(&a),
        [
            "sftp-poller",
            "validator",
            "contact-importer",
            "invite",
            "reminder",
            "notifier"
        ]
    );
    let a = resolve(
        r#"
        client = "acme"
        [[steps]]
        kind = "validator"
        [[steps]]
        kind = "distribution-scheduler"
        [[steps]]
        kind = "contact-importer"
        "#,
    )
    .unwrap();
    // Within a stage a step follows the step that provides what it needs.
    assert_eq!(
        names(&a),
        ["validator", "contact-importer", "distribution-scheduler"]
    );
}

#[test]
fn a_fixed_mailing_list_satisfies_the_scheduler() {
    let doc = r#"
        client = "acme"
        [[steps]]
        kind = "validator"
        [[steps]]
        kind = "distribution-scheduler"
        settings = { mailing_list_id = "CG_123" }
    "#;
    let a = resolve(doc).unwrap();
    assert_eq!(
        a.steps[1]
            .settings
            .param("mailing_list_id")
            .and_then(|v| v.as_str()),
        Some("CG_123")
    );
    let err = resolve(&doc.replace("settings = { mailing_list_id = \"CG_123\" }", "")).unwrap_err();
    assert!(err.contains("add contact-importer"), "{err}");
    assert!(
        err.contains("distribution-scheduler.mailing_list_id"),
        "{err}"
    );
}

#[test]
fn answers_round_trip_through_the_file_format() {
    let a = resolve(
        r#"
        client = "acme"
        source = "sftp"
        schedule = "cron(0 6 * * ? *)"
        environments = ["dev", "staging", "prod"]
        [[steps]]
        kind = "validator"
        settings = { batch_size = 2 }
        [[steps]]
        kind = "response-importer"
        "#,
    )
    .unwrap();
    let file = a.to_file("9.9.9");
    let text = toml::to_string(&file).unwrap();
    let back: AnswersFile = toml::from_str(&text).unwrap();
    assert_eq!(back.etlgen_version.as_deref(), Some("9.9.9"));
    assert_eq!(Answers::resolve(&back, Catalog::builtin()).unwrap(), a);
    // The poller came with the source, so it is not written back.
    assert!(!text.contains("sftp-poller"), "{text}");
}

#[test]
fn bad_answers_name_the_field() {
    for (doc, needle) in [
        ("", "missing client"),
        ("client = \"../x\"", "invalid client"),
        (
            "client = \"a\"\nsource = \"ftp\"",
            "invalid source \"ftp\": expected one of: s3, sftp, http",
        ),
        ("client = \"a\"\nregion = \"mars-1\"", "invalid region"),
        ("client = \"a\"\ndatacenter = \"x\"", "invalid datacenter"),
        ("client = \"a\"\nschedule = \"daily\"", "invalid schedule"),
        ("client = \"a\"\nenvironments = []", "missing environments"),
        (
            "client = \"a\"\nenvironments = [\"dev\", \"dev\"]",
            "listed twice",
        ),
        (
            "client = \"a\"\nenvironments = [\"local\"]",
            "reserved for the emulator",
        ),
        (
            "client = \"a\"\nenvironments = [\"Prod\"]",
            "invalid environment",
        ),
        ("client = \"a\"\nsteps = []", "missing services"),
        (
            "client = \"a\"\n[[steps]]\nkind = \"mailer\"",
            "invalid steps[0].kind \"mailer\": unknown service",
        ),
        (
            "client = \"a\"\n[[steps]]\nkind = \"sftp-poller\"",
            "comes with its source",
        ),
        (
            "client = \"a\"\n[[steps]]\nkind = \"validator\"\nname = \"x/y\"",
            "invalid step name",
        ),
        (
            "client = \"a\"\n[[steps]]\nkind = \"validator\"\n[[steps]]\nkind = \"validator\"\nname = \"v2\"",
            "validator may appear only once",
        ),
        (
            "client = \"a\"\n[[steps]]\nkind = \"notifier\"\n[[steps]]\nkind = \"notifier\"",
            "two steps are named \"notifier\"",
        ),
        (
            "client = \"a\"\n[[steps]]\nkind = \"contact-importer\"",
            "nothing reads the client's input: add validator",
        ),
        ("client = \"a\"\ncolour = \"red\"", "unknown field `colour`"),
        ("client = 5", "invalid type"),
    ] {
        let err = resolve(doc).unwrap_err();
        assert!(err.contains(needle), "{doc:?}: {err}");
    }
}

#[test]
fn derived_aws_names_must_fit() {
    let client = "c".repeat(50);
    let err = resolve(&format!(
        "client = \"{client}\"\nenvironments = [\"prod\"]\n[[steps]]\nkind = \"validator\"\nname = \"long-validator-name\""
    ))
    .unwrap_err();
    assert!(
        err.contains("would be 76 characters; AWS allows 64"),
        "{err}"
    );
}

fn feeds<'a>(a: &'a Answers, step: &str) -> Vec<&'a str> {
    a.step(step)
        .unwrap()
        .feeds
        .iter()
        .map(|n| n.as_str())
        .collect()
}

#[test]
fn each_step_feeds_every_later_step_that_reads_what_it_sends() {
    let a = resolve(
        r#"
        client = "acme"
        source = "sftp"
        [[steps]]
        kind = "notifier"
        [[steps]]
        kind = "exporter"
        [[steps]]
        kind = "validator"
        [[steps]]
        kind = "contact-importer"
        [[steps]]
        kind = "distribution-scheduler"
        name = "invite"
        [[steps]]
        kind = "distribution-scheduler"
        name = "reminder"
        [[steps]]
        kind = "response-importer"
        "#,
    )
    .unwrap();
    assert_eq!(
        names(&a),
        [
            "sftp-poller",
            "validator",
            "contact-importer",
            "invite",
            "reminder",
            "response-importer",
            "exporter",
            "notifier"
        ]
    );
    assert_eq!(feeds(&a, "sftp-poller"), ["validator"]);
    assert_eq!(
        feeds(&a, "validator"),
        ["contact-importer", "response-importer"]
    );
    assert_eq!(feeds(&a, "contact-importer"), ["invite", "reminder"]);
    // Post-processing reads what nothing else reads; notification comes last.
    for leaf in ["invite", "reminder", "response-importer"] {
        assert_eq!(feeds(&a, leaf), ["exporter"], "{leaf}");
    }
    assert_eq!(feeds(&a, "exporter"), ["notifier"]);
    assert!(feeds(&a, "notifier").is_empty());
}

#[test]
fn a_fixed_list_makes_the_scheduler_read_records() {
    let a = resolve(
        r#"
        client = "acme"
        [[steps]]
        kind = "validator"
        [[steps]]
        kind = "distribution-scheduler"
        settings = { mailing_list_id = "CG_1" }
        "#,
    )
    .unwrap();
    assert_eq!(feeds(&a, "validator"), ["distribution-scheduler"]);
}

#[test]
fn post_processing_needs_something_to_follow() {
    let err =
        resolve("client = \"a\"\n[[steps]]\nkind = \"validator\"\n[[steps]]\nkind = \"exporter\"")
            .map(|a| feeds(&a, "validator").join(","));
    // The validator's records are the exporter's input when nothing else reads them.
    assert_eq!(err.unwrap(), "exporter");
    let err = resolve("client = \"a\"\n[[steps]]\nkind = \"notifier\"").unwrap_err();
    assert!(err.contains("nothing reads the client's input"), "{err}");
}

#[test]
fn schedules_belong_to_scheduled_sources() {
    let sftp = resolve("client = \"a\"\nsource = \"sftp\"").unwrap();
    assert_eq!(
        sftp.schedule.unwrap().as_str(),
        "rate(1 hour)",
        "the source's default"
    );
    let err = resolve("client = \"a\"\nsource = \"sftp\"\nschedule = \"\"").unwrap_err();
    assert!(err.contains("polls on a schedule"), "{err}");
    let err = resolve("client = \"a\"\nschedule = \"rate(1 day)\"").unwrap_err();
    assert!(
        err.contains("invalid schedule") && err.contains("takes no schedule"),
        "{err}"
    );
}

#[test]
fn a_step_named_like_a_framework_dependency_is_refused() {
    let err =
        resolve("client = \"a\"\n[[steps]]\nkind = \"validator\"\nname = \"tokio\"").unwrap_err();
    assert!(
        err.contains("invalid step name \"tokio\"") && err.contains("choose another"),
        "{err}"
    );
}

#[test]
fn the_data_bucket_name_must_fit_s3() {
    let client = "c".repeat(55);
    let err = resolve(&format!(
        "client = \"{client}\"\n[[steps]]\nkind = \"validator\"\nname = \"v\""
    ))
    .unwrap_err();
    assert!(
        err.contains("data bucket name") && err.contains("S3 allows 63"),
        "{err}"
    );
}

/// dev is personal: its names carry a workspace of up to 12 characters, so a
/// client name that fits `<client>-dev-data` can still be too long.
#[test]
fn names_leave_room_for_the_longest_dev_workspace() {
    let client = "c".repeat(42);
    let doc = |envs: &str| {
        format!(
            "client = \"{client}\"\nenvironments = [{envs}]\n[[steps]]\nkind = \"validator\"\nname = \"v\""
        )
    };
    let err = resolve(&doc("\"dev\", \"prod\"")).unwrap_err();
    assert!(
        err.contains(&format!(
            "\"{client}-dev-<workspace>-data\" would be 64 characters"
        )) && err.contains("12-character workspace"),
        "{err}"
    );
    assert!(resolve(&doc("\"staging\", \"prod\"")).is_ok());
    assert!(resolve(&doc("\"dev\"").replace(&"c".repeat(42), &"c".repeat(41))).is_ok());

    let step = "s".repeat(40);
    let err = resolve(&format!(
        "client = \"{}\"\n[[steps]]\nkind = \"validator\"\nname = \"{step}\"",
        "c".repeat(8)
    ))
    .unwrap_err();
    assert!(
        err.contains(&format!(
            "\"cccccccc-dev-<workspace>-{step}\" would be 66 characters"
        )),
        "{err}"
    );
}

/// An HTTP source's client assumes `<client>-<env>-submit`: no step may be named so there,
/// and the name must fit IAM's 64 characters. Other sources have no such role.
#[test]
fn an_http_source_keeps_its_submit_role_name() {
    let doc = |client: &str, source: &str, step: &str| {
        format!(
            "client = \"{client}\"\nsource = \"{source}\"\n[[steps]]\nkind = \"validator\"\nname = \"{step}\""
        )
    };
    let err = resolve(&doc("acme", "http", "submit")).unwrap_err();
    assert!(err.contains("a step is named \"submit\""), "{err}");
    assert!(resolve(&doc("acme", "s3", "submit")).is_ok());

    // 41 + 1 + 16 (dev and a 12-character workspace) + 1 + 6 = 65; the data bucket fits.
    let client = "c".repeat(41);
    let err = resolve(&doc(&client, "http", "v")).unwrap_err();
    assert!(
        err.contains("submit role name") && err.contains("would be 65 characters"),
        "{err}"
    );
    assert!(resolve(&doc(&client, "s3", "v")).is_ok());
}

/// A shared `dev-x` would name its resources as a developer's `dev` stack in workspace
/// `x` does.
#[test]
fn an_environment_named_like_a_personal_stack_is_refused() {
    let doc = |envs: &str| format!("client = \"acme\"\nenvironments = [{envs}]");
    let err = resolve(&doc("\"dev\", \"dev-eu\"")).unwrap_err();
    assert!(
        err.contains("environment \"dev-eu\" could share its names") && err.contains("\"dev-\""),
        "{err}"
    );
    assert!(resolve(&doc("\"dev-eu\", \"prod\"")).is_ok());
}

fn inputs(a: &Answers, step: &str) -> (u64, u64) {
    let inputs = run_inputs(&a.steps, Catalog::builtin());
    let found = inputs.get(step).copied().unwrap_or_default();
    (found.per_batch, found.per_run)
}

#[test]
fn a_run_brings_each_step_what_its_producers_send() {
    let services = |list: &str| {
        let kinds: String = (list.split(','))
            .map(|k| format!("[[steps]]\nkind = \"{k}\"\n"))
            .collect();
        resolve(&format!("client = \"acme\"\n{kinds}")).unwrap()
    };
    let a = services("validator,response-importer,notifier");
    assert_eq!(inputs(&a, "validator"), (0, 1), "the file");
    assert_eq!(inputs(&a, "response-importer"), (1, 0));
    assert_eq!(inputs(&a, "notifier"), (1, 0), "one per batch");
    let a = services("validator,contact-importer,response-importer,notifier");
    assert_eq!(inputs(&a, "notifier"), (2, 0), "two leaves, each per batch");
    let a = services("validator,contact-importer,distribution-scheduler,notifier");
    assert_eq!(inputs(&a, "distribution-scheduler"), (1, 0));
    assert_eq!(inputs(&a, "notifier"), (0, 1), "the scheduler sends once");
    let a = services(
        "validator,contact-importer,distribution-scheduler,response-importer,exporter,notifier",
    );
    assert_eq!(inputs(&a, "exporter"), (1, 1));
    assert_eq!(inputs(&a, "notifier"), (0, 1), "the exporter sends once");
}
