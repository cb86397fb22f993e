//! `add`, `remove`, `update` and `check` on real git repositories made by
//! `etlgen new`: the scenarios of the lifecycle, each asserting exact file
//! contents afterwards, and every refusal leaving the repository exactly as
//! it was (files, HEAD and the pristine ref).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use etlgen::cmd::update;
use etlgen::git::PRISTINE_REF;
use etlgen::templates::{TEMPLATES, Templates};

use crate::helpers::{Scratch, etlgen};
use crate::tools::{Workspace, assert_ok, git};

/// Adds a response importer named `nps`, as a client asking for NPS would.
const ADD_NPS: &[&str] = &[
    "add",
    "response-importer",
    "--name",
    "nps",
    "--set",
    "survey_id=SV_1",
];

/// `etlgen new <client> --yes` in the scratch directory; the repository's root.
fn generate(scratch: &Scratch, client: &str) -> PathBuf {
    etlgen()
        .current_dir(scratch.path())
        .args(["new", client, "--yes"])
        .assert()
        .success();
    scratch.join(client)
}

/// Commits every change in the working tree, as a user would.
fn commit_all(root: &Path, message: &str) {
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", message]);
}

fn read(root: &Path, path: &str) -> String {
    fs_err::read_to_string(root.join(path)).unwrap()
}

fn append(root: &Path, path: &str, text: &str) {
    let mut content = read(root, path);
    content.push_str(text);
    fs_err::write(root.join(path), content).unwrap();
}

/// Everything a refused command must leave alone: every file outside
/// `.git`, HEAD and the pristine ref.
#[derive(Debug, PartialEq)]
struct State {
    files: BTreeMap<String, Vec<u8>>,
    head: String,
    pristine: String,
}

fn state(root: &Path) -> State {
    let files = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git")
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, fs_err::read(e.path()).unwrap())
        })
        .collect();
    State {
        files,
        head: git(root, &["rev-parse", "HEAD"]),
        pristine: git(root, &["rev-parse", "--verify", "-q", PRISTINE_REF]),
    }
}

/// Runs etlgen in `root`; returns (success, stdout, stderr).
fn run(root: &Path, args: &[&str]) -> (bool, String, String) {
    let out = etlgen().current_dir(root).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The built-in templates with one template's text replaced, as a newer
/// etlgen's would be.
/// A template's name and how the newer etlgen changes its text.
type TemplateEdit<'a> = (&'a str, &'a dyn Fn(&str) -> String);

fn changed_templates(changes: &[TemplateEdit]) -> Templates {
    let mut templates = Templates::load(&TEMPLATES).unwrap();
    for (name, change) in changes {
        let old = TEMPLATES.get_file(name).unwrap().contents_utf8().unwrap();
        templates.tera.add_raw_template(name, &change(old)).unwrap();
    }
    templates
}

/// `etlgen update` in-process with `templates`.
fn update_with(root: &Path, templates: &Templates) -> (ExitCode, String) {
    let args = update::Args {
        path: root.to_path_buf(),
        dry_run: false,
    };
    let mut out = Vec::new();
    let code = update::run_with(&args, templates, &mut out).unwrap();
    (code, String::from_utf8(out).unwrap())
}

#[test]
fn edits_survive_an_added_step_which_is_wired_built_and_tested() {
    let scratch = Scratch::new();
    let root = generate(&scratch, "acme");
    let hooks = "lambdas/validator/src/hooks.rs";
    append(
        &root,
        hooks,
        "\n// Rows come from the ACME CRM export; see the contract in docs/.\n",
    );
    append(
        &root,
        "README.md",
        "\n## Client notes\n\nCall Dana before a backfill.\n",
    );
    commit_all(&root, "client edits");
    let edited_hooks = read(&root, hooks);
    let edited_readme = read(&root, "README.md");

    let (ok, out, err) = run(&root, ADD_NPS);
    assert!(ok, "{out}{err}");
    assert!(out.contains("created  lambdas/nps/src/hooks.rs"), "{out}");
    assert_eq!(read(&root, hooks), edited_hooks, "the hooks edit survives");
    let readme = read(&root, "README.md");
    assert!(
        readme.ends_with("Call Dana before a backfill.\n"),
        "{readme}"
    );
    assert!(
        readme.contains("nps"),
        "the README gains the step:\n{readme}"
    );
    assert!(readme.len() > edited_readme.len());

    // Wired everywhere: workspace, Terraform, config, diagram.
    assert!(read(&root, "Cargo.toml").contains("\"lambdas/nps\""));
    assert!(read(&root, "infra/modules/pipeline/main.tf").contains("module \"nps\""));
    assert!(read(&root, "config/default.toml").contains("[steps.nps]"));
    assert!(read(&root, "docs/pipeline.md").contains("nps"));
    assert!(read(&root, ".etlgen/answers.toml").contains("survey_id = \"SV_1\""));
    assert_eq!(
        git(&root, &["status", "--porcelain"]),
        "",
        "one clean commit"
    );
    assert!(git(&root, &["log", "-1", "--format=%s"]).starts_with("Add the nps step"));
    let (ok, out, _) = run(&root, &["check"]);
    assert!(ok, "{out}");

    // The repository still builds, and every step's tests pass, the new one's too.
    let ws = Workspace::take_turn(&root);
    let test = ws.cargo(&[
        "test",
        "--locked",
        "--workspace",
        "--exclude",
        "etlgen-runtime",
    ]);
    assert_ok(&test, "cargo test after etlgen add");
    let ran = String::from_utf8_lossy(&test.stdout);
    // The response importer's generated test is the new step's.
    assert!(
        ran.contains("test responses_are_imported_once_with_the_envelope_key ... ok"),
        "{ran}"
    );
}

#[test]
fn a_line_both_sides_changed_is_a_reported_conflict_keeping_the_users_text() {
    let scratch = Scratch::new();
    let root = generate(&scratch, "acme");
    let readme = read(&root, "README.md");
    let first = readme.lines().next().unwrap().to_string();
    fs_err::write(
        root.join("README.md"),
        readme.replacen(&first, "# ACME's pipeline (ours)", 1),
    )
    .unwrap();
    commit_all(&root, "retitle");
    let before = git(&root, &["rev-parse", "HEAD"]);

    let templates = changed_templates(&[("repo/README.md.tera", &|t: &str| {
        let line = t.lines().next().unwrap();
        t.replacen(line, &format!("{line} (template v2)"), 1)
    })]);
    let (code, out) = update_with(&root, &templates);
    assert_eq!(code, ExitCode::FAILURE, "{out}");
    assert!(
        out.contains("Conflicts") && out.contains("  README.md"),
        "{out}"
    );
    let merged = read(&root, "README.md");
    assert!(
        merged.contains("<<<<<<<") && merged.contains(">>>>>>>"),
        "{merged}"
    );
    assert!(merged.contains("# ACME's pipeline (ours)"), "{merged}");
    assert!(merged.contains("(template v2)"), "{merged}");
    assert_eq!(
        git(&root, &["rev-parse", "HEAD"]),
        before,
        "nothing committed"
    );
}

#[test]
fn check_is_clean_until_an_owned_file_is_edited_and_names_it() {
    let scratch = Scratch::new();
    let root = generate(&scratch, "acme");
    let (ok, out, _) = run(&root, &["check"]);
    assert!(ok && out.starts_with("OK"), "{out}");
    append(&root, "lambdas/validator/src/main.rs", "// a quick fix\n");
    let (ok, out, _) = run(&root, &["check"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("drift: lambdas/validator/src/main.rs"),
        "{out}"
    );
    assert!(out.contains("+// a quick fix"), "the diff is shown:\n{out}");
    assert!(!out.contains("drift: README.md"), "{out}");
    // A merged or seeded file is the user's to edit.
    git(&root, &["checkout", "--", "."]);
    append(&root, "README.md", "notes\n");
    append(&root, "lambdas/validator/src/hooks.rs", "// mine\n");
    let (ok, out, _) = run(&root, &["check"]);
    assert!(ok, "{out}");
}

#[test]
fn add_then_remove_round_trips_to_the_same_tree() {
    let scratch = Scratch::new();
    let root = generate(&scratch, "acme");
    let before = git(&root, &["rev-parse", "HEAD^{tree}"]);
    let (ok, out, err) = run(&root, &["add", "notifier", "--name", "notify"]);
    assert!(ok, "{out}{err}");
    assert!(root.join("lambdas/notify").is_dir());
    let (ok, out, err) = run(&root, &["remove", "notify"]);
    assert!(ok, "{out}{err}");
    assert!(
        !root.join("lambdas/notify").exists(),
        "no empty directory is left"
    );
    assert_eq!(git(&root, &["rev-parse", "HEAD^{tree}"]), before);
    assert_eq!(git(&root, &["rev-list", "--count", "HEAD"]), "3");
}

#[test]
fn a_second_update_is_a_no_op_and_a_deleted_file_stays_deleted() {
    let scratch = Scratch::new();
    let root = generate(&scratch, "acme");
    git(&root, &["rm", "-q", "docs/pipeline.md"]);
    git(&root, &["commit", "-q", "-m", "we keep diagrams elsewhere"]);
    let templates = changed_templates(&[
        ("docs/docs/pipeline.md.tera", &|t: &str| {
            format!("{t}\nTemplate v2.\n")
        }),
        ("repo/README.md.tera", &|t: &str| {
            format!("{t}\nTemplate v2.\n")
        }),
        ("step/src/main.rs.tera", &|t: &str| {
            format!("{t}\n// Template v2.\n")
        }),
    ]);
    let (code, out) = update_with(&root, &templates);
    assert_eq!(code, ExitCode::SUCCESS, "{out}");
    assert!(out.contains("kept deleted: docs/pipeline.md"), "{out}");
    assert!(!root.join("docs/pipeline.md").exists());
    assert!(read(&root, "README.md").ends_with("Template v2.\n"));
    assert!(read(&root, "lambdas/validator/src/main.rs").ends_with("// Template v2.\n"));
    assert_eq!(git(&root, &["status", "--porcelain"]), "");

    let after_first = state(&root);
    let (code, out) = update_with(&root, &templates);
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(out.contains("Already up to date"), "{out}");
    assert_eq!(state(&root), after_first, "no change and no new commit");
}

#[test]
fn files_of_a_step_dropped_from_the_answers_go_with_the_next_update() {
    let scratch = Scratch::new();
    let root = generate(&scratch, "acme");
    let (ok, out, err) = run(&root, &["add", "exporter"]);
    assert!(ok, "{out}{err}");
    // The answers edited by hand: the exporter is switched off.
    let answers = read(&root, ".etlgen/answers.toml");
    let start = answers
        .find("[[steps]]\nname = \"exporter\"")
        .expect("the exporter entry");
    let end = answers[start + 1..]
        .find("[[steps]]")
        .map_or(answers.len(), |i| start + 1 + i);
    fs_err::write(
        root.join(".etlgen/answers.toml"),
        format!("{}{}", &answers[..start], &answers[end..]),
    )
    .unwrap();
    commit_all(&root, "no exporter after all");
    let (ok, out, _) = run(&root, &["check"]);
    assert!(!ok && out.contains("run `etlgen update`"), "{out}");

    let (ok, out, err) = run(&root, &["update"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("deleted  lambdas/exporter/src/main.rs"),
        "{out}"
    );
    assert!(!root.join("lambdas/exporter").exists());
    assert!(!read(&root, "infra/modules/pipeline/main.tf").contains("module \"exporter\""));
    let (ok, out, _) = run(&root, &["check"]);
    assert!(ok, "{out}");
}

/// Each refusal names the problem, exits non-zero and changes nothing.
#[test]
fn refusals_leave_the_repository_exactly_as_it_was() {
    let scratch = Scratch::new();
    let root = generate(&scratch, "acme");
    let cases: &[(&[&str], &str)] = &[
        (&["add", "surveyor"], "unknown service \"surveyor\""),
        (
            &["add", "validator"],
            "a step named \"validator\" exists already",
        ),
        (
            &[
                "add",
                "contact-importer",
                "--name",
                "more",
                "--set",
                "batch_size=0",
            ],
            "batch_size",
        ),
        (
            &["remove", "contact-importer"],
            "cannot remove contact-importer",
        ),
        (&["remove", "validator"], "cannot remove validator"),
        (&["remove", "nobody"], "no step named \"nobody\""),
    ];
    let before = state(&root);
    for (args, expected) in cases {
        let (ok, out, err) = run(&root, args);
        assert!(!ok, "{args:?} succeeded:\n{out}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(state(&root), before, "{args:?} changed the repository");
    }
}

#[test]
fn bad_repositories_are_refused_unchanged() {
    let scratch = Scratch::new();
    let root = generate(&scratch, "acme");

    // A dirty tree.
    append(&root, "README.md", "unsaved\n");
    let before = state(&root);
    let (ok, _, err) = run(&root, &["update"]);
    assert!(
        !ok && err.contains("uncommitted changes (README.md)"),
        "{err}"
    );
    assert_eq!(state(&root), before);
    git(&root, &["checkout", "--", "."]);

    // An answers file with an invalid value.
    let answers = read(&root, ".etlgen/answers.toml");
    fs_err::write(
        root.join(".etlgen/answers.toml"),
        answers.replace("us-east-1", "mars-1"),
    )
    .unwrap();
    commit_all(&root, "hand edit");
    let before = state(&root);
    for args in [&["update"][..], &["add", "notifier"], &["check"]] {
        let (ok, _, err) = run(&root, args);
        assert!(!ok && err.contains("region"), "{args:?}: {err}");
        assert_eq!(state(&root), before);
    }
    fs_err::write(root.join(".etlgen/answers.toml"), "client = [\n").unwrap();
    commit_all(&root, "corrupt");
    let (ok, _, err) = run(&root, &["update"]);
    assert!(
        !ok && err.contains(".etlgen/answers.toml is not valid"),
        "{err}"
    );
    git(&root, &["reset", "-q", "--hard", "HEAD~2"]);

    // A repository rendered by a newer etlgen is not downgraded.
    let lock = read(&root, ".etlgen/lock.toml");
    let version = format!("etlgen_version = \"{}\"", env!("CARGO_PKG_VERSION"));
    fs_err::write(
        root.join(".etlgen/lock.toml"),
        lock.replace(&version, "etlgen_version = \"99.0.0\""),
    )
    .unwrap();
    commit_all(&root, "from the future");
    let before = state(&root);
    let (ok, _, err) = run(&root, &["update"]);
    assert!(
        !ok && err.contains("etlgen 99.0.0, newer than this etlgen"),
        "{err}"
    );
    assert_eq!(state(&root), before);
    git(&root, &["reset", "-q", "--hard", "HEAD~1"]);

    // Not an etlgen repository.
    let (ok, _, err) = run(scratch.path(), &["update"]);
    assert!(!ok && err.contains("is not an etlgen repository"), "{err}");
}

#[test]
fn a_missing_pristine_ref_is_re_rendered_only_when_provably_the_same() {
    let scratch = Scratch::new();
    let root = generate(&scratch, "acme");
    git(&root, &["update-ref", "-d", PRISTINE_REF]);
    // Same version and answers: the re-render is the recorded one.
    let (ok, out, err) = run(&root, &["update"]);
    assert!(ok && out.contains("Already up to date"), "{out}{err}");

    // Answers edited by hand, so the lock no longer proves the base.
    append(
        &root,
        ".etlgen/answers.toml",
        "\n[[steps]]\nkind = \"notifier\"\n",
    );
    commit_all(&root, "hand-added notifier");
    git(&root, &["update-ref", "-d", PRISTINE_REF]);
    let head = git(&root, &["rev-parse", "HEAD"]);
    let (ok, _, err) = run(&root, &["update"]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("refs/etlgen/pristine is missing") && err.contains("git fetch origin"),
        "{err}"
    );
    assert_eq!(git(&root, &["rev-parse", "HEAD"]), head);
    assert!(!root.join("lambdas/notifier").exists());
}

#[test]
fn an_interrupted_write_leaves_the_repository_as_it_was() {
    let scratch = Scratch::new();
    let root = generate(&scratch, "acme");
    // An untracked file where the new crate's directory must go: the write
    // fails after the earlier files (Cargo.toml, config, docs, infra) changed.
    fs_err::write(root.join("lambdas/nps"), "in the way\n").unwrap();
    let before = state(&root);
    let (ok, out, err) = run(&root, ADD_NPS);
    assert!(!ok, "{out}");
    assert!(err.contains("lambdas/nps"), "{err}");
    assert_eq!(state(&root), before);
}
