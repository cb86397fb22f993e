//! The generated Terraform, judged by the real tools: `terraform fmt` and
//! `terraform validate` for every environment, checkov with no failed check
//! and a reason on every skip, and `terraform apply` of the `local`
//! environment against moto server on loopback, after which every queue,
//! dead-letter queue, bucket, role, function, event source mapping and alarm
//! the answers call for is listed back from the emulator and compared with
//! the answers.
//!
//! Tools:
//! - `terraform` on PATH (or `ETLGEN_TERRAFORM`), with the `hashicorp/aws`
//!   provider from a filesystem mirror: `ETLGEN_TF_MIRROR`, else the first
//!   one found in the usual places, else downloaded once into a cache. The
//!   tests write their own CLI configuration, so the machine's
//!   `TF_CLI_CONFIG_FILE` is never used. Under `CI=true` (as `.ci/run`
//!   sets) a missing terraform fails the tests; elsewhere they say loudly
//!   that they did not run.
//! - checkov and moto from the virtualenv `scripts/test` makes (tools.rs).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use etlgen::answers::Answers;
use etlgen::catalog::Catalog;
use etlgen::plan::{AWS_PROVIDER_VERSION, Plan};
use etlgen::render::render;
use serde_json::Value;

use crate::helpers::{
    Scratch, all_services_doc, every_combination, projects, render_doc, write_project,
};
use crate::tools::{Workspace, assert_ok, on_path, tail, tool};

// ------------------------------------------------------------- terraform

/// The terraform binary and a CLI configuration of the tests' own.
pub(crate) struct Terraform {
    bin: PathBuf,
    config: tempfile::TempDir,
}

impl Terraform {
    /// Finds terraform and the provider mirror; `None` after a loud skip.
    pub(crate) fn find() -> Option<Terraform> {
        let Some(bin) = std::env::var_os("ETLGEN_TERRAFORM")
            .map(PathBuf::from)
            .or_else(|| on_path("terraform"))
        else {
            let msg = "terraform is not on PATH (install it, or set ETLGEN_TERRAFORM): \
                       the Terraform checks did not run";
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
            // Straight to the process's stderr: libtest hides the output of
            // a passing test, and a skip must be seen.
            let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {msg} ***\n");
            return None;
        };
        let config = tempfile::tempdir().unwrap();
        let installation = match provider_mirror() {
            // The mirror holds every provider the generated modules use.
            Some(mirror) => format!(
                "provider_installation {{\n  filesystem_mirror {{\n    path = {}\n  }}\n}}\n",
                serde_json::to_string(&mirror.to_string_lossy()).unwrap()
            ),
            None => {
                eprintln!(
                    "no hashicorp/aws provider mirror found (set ETLGEN_TF_MIRROR): \
                     terraform init downloads the provider"
                );
                // A cache shared by the tests, so it is downloaded once.
                let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tf-plugin-cache");
                fs_err::create_dir_all(&cache).unwrap();
                format!(
                    "plugin_cache_dir = {}\n",
                    serde_json::to_string(&cache.to_string_lossy()).unwrap()
                )
            }
        };
        fs_err::write(config.path().join("terraformrc"), installation).unwrap();
        Some(Terraform { bin, config })
    }

    /// The CLI configuration file (`TF_CLI_CONFIG_FILE`).
    pub(crate) fn cli_config(&self) -> PathBuf {
        self.config.path().join("terraformrc")
    }

    /// The directory holding the terraform binary.
    pub(crate) fn bin_dir(&self) -> PathBuf {
        self.bin.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    pub(crate) fn command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(dir)
            .env("TF_CLI_CONFIG_FILE", self.cli_config())
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1")
            .env_remove("TF_CLI_ARGS")
            .env_remove("TF_WORKSPACE");
        cmd
    }

    pub(crate) fn run(&self, dir: &Path, args: &[&str]) -> Output {
        self.command(dir)
            .args(args)
            .output()
            .expect("terraform runs")
    }
}

/// A filesystem mirror of the `hashicorp/aws` provider at the pinned
/// version: `ETLGEN_TF_MIRROR`, else the first found under Terraform's
/// implicit local mirror directories and the usual install prefixes. A
/// mirror lays providers out as `<mirror>/<host>/hashicorp/aws/<version>`.
fn provider_mirror() -> Option<PathBuf> {
    let mirror_of = |version_dir: &Path| {
        let aws = version_dir.parent()?;
        let namespace = aws.parent()?;
        (version_dir.is_dir()
            && version_dir.file_name()? == AWS_PROVIDER_VERSION
            && aws.file_name()? == "aws"
            && namespace.file_name()? == "hashicorp")
            .then(|| namespace.parent()?.parent().map(Path::to_path_buf))
            .flatten()
    };
    let find_in = |root: &Path, depth: usize| {
        walkdir::WalkDir::new(root)
            .max_depth(depth)
            .into_iter()
            .filter_map(Result::ok)
            .find_map(|e| mirror_of(e.path()))
    };
    if let Some(dir) = std::env::var_os("ETLGEN_TF_MIRROR").map(PathBuf::from) {
        let found = find_in(&dir, 4);
        assert!(
            found.as_deref() == Some(dir.as_path()),
            "ETLGEN_TF_MIRROR={} has no <host>/hashicorp/aws/{AWS_PROVIDER_VERSION}",
            dir.display()
        );
        return found;
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(home) = &home {
        roots.push(home.join(".terraform.d/plugins"));
        roots.push(home.join(".local/share/terraform/plugins"));
    }
    roots.extend(
        ["/usr/local/share/terraform", "/usr/share/terraform", "/opt"]
            .iter()
            .map(PathBuf::from),
    );
    roots
        .into_iter()
        .filter(|r| r.is_dir())
        .find_map(|root| find_in(&root, 6))
}

/// Every root module of a generated repository: `infra/envs/*`.
fn environments(root: &Path) -> BTreeSet<String> {
    fs_err::read_dir(root.join("infra/envs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Rendered as every allowed combination of services and sources, the
/// Terraform is already in `terraform fmt`'s layout.
#[test]
fn terraform_is_formatted_as_rendered_for_every_allowed_combination() {
    let Some(tf) = Terraform::find() else { return };
    let scratch = Scratch::new();
    let mut rendered = 0;
    for (label, raw) in every_combination("fmt") {
        let Ok(answers) = Answers::resolve(&raw, Catalog::builtin()) else {
            continue;
        };
        let tree = render(&Plan::new(answers).unwrap()).unwrap();
        for (path, bytes) in tree.iter().filter(|(p, _)| p.starts_with("infra/")) {
            let out = scratch.join(&format!("{label}/{path}"));
            fs_err::create_dir_all(out.parent().unwrap()).unwrap();
            fs_err::write(out, bytes).unwrap();
        }
        rendered += 1;
    }
    assert!(rendered > 60, "rendered {rendered}");
    let out = tf.run(
        scratch.path(),
        &["fmt", "-check", "-recursive", "-no-color"],
    );
    assert_ok(
        &out,
        "terraform fmt -check -recursive (files it would change)",
    );
}

/// Every environment of the answers and `local` initialise without a backend
/// and validate with no error and no warning.
#[test]
fn every_environment_initialises_and_validates() {
    let Some(tf) = Terraform::find() else { return };
    for doc in projects() {
        let scratch = Scratch::new();
        let (answers, root) = write_project(&doc, &scratch);
        let fmt = tf.run(&root, &["fmt", "-check", "-recursive", "-no-color"]);
        assert_ok(&fmt, "terraform fmt -check -recursive");
        let mut expected: BTreeSet<String> = answers
            .environments
            .iter()
            .map(|e| e.as_str().to_string())
            .collect();
        expected.insert("local".into());
        assert_eq!(environments(&root), expected, "infra/envs of:\n{doc}");
        for env in &expected {
            let dir = root.join("infra/envs").join(env);
            let init = tf.run(
                &dir,
                &["init", "-backend=false", "-input=false", "-no-color"],
            );
            assert_ok(&init, &format!("terraform init ({env})"));
            let out = tf.run(&dir, &["validate", "-json", "-no-color"]);
            let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!(
                    "terraform validate -json ({env}): {e}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
            assert_eq!(
                (report["valid"].as_bool(), report["warning_count"].as_u64()),
                (Some(true), Some(0)),
                "terraform validate ({env}) of {}:\n{report:#}",
                answers.client.as_str()
            );
        }
    }
}

/// Every environment pins the provider the tests run, keeps its state under
/// its own key with S3's lock file, and names its own environment.
#[test]
fn environments_pin_the_provider_and_keep_state_apart() {
    let (answers, tree) = render_doc(&all_services_doc("acme", "sftp"));
    let text = |p: &str| String::from_utf8(tree[p].clone()).unwrap();
    for env in &answers.environments {
        let env = env.as_str();
        let terraform = text(&format!("infra/envs/{env}/terraform.tf"));
        assert!(terraform.contains(&format!("version = \"{AWS_PROVIDER_VERSION}\"")));
        assert!(terraform.contains(&format!("key          = \"acme/{env}/terraform.tfstate\"")));
        assert!(terraform.contains("use_lockfile = true"), "{terraform}");
        let main = text(&format!("infra/envs/{env}/main.tf"));
        assert!(
            main.contains(&format!("environment  = \"{env}\"")),
            "{main}"
        );
        assert!(tree.contains_key(&format!("infra/envs/{env}/terraform.tfvars")));
    }
    let local = text("infra/envs/local/terraform.tf");
    assert!(
        !local.contains("backend"),
        "the local state never leaves the machine"
    );
}

// ---------------------------------------------------------------- checkov

/// The checks the generated Terraform skips, each for the reason given in
/// line and in docs/infrastructure.md. A new skip must be added here and there.
const ALLOWED_SKIPS: &[&str] = &[
    "CKV_AWS_115",
    "CKV_AWS_116",
    "CKV_AWS_117",
    "CKV_AWS_272",
    "CKV_AWS_144",
    "CKV_AWS_145",
    "CKV_AWS_18",
    "CKV2_AWS_57",
    "CKV_AWS_41",
];

/// checkov finds no failed check in the generated Terraform, and every check
/// it skips is skipped in line, with a reason, and documented.
#[test]
fn checkov_reports_no_failed_check_and_every_skip_has_a_reason() {
    let checkov = tool("checkov");
    let docs = fs_err::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/infrastructure.md"),
    )
    .unwrap();
    for id in ALLOWED_SKIPS {
        assert!(
            docs.contains(id),
            "docs/infrastructure.md does not explain {id}"
        );
    }
    for doc in projects() {
        let scratch = Scratch::new();
        let (answers, root) = write_project(&doc, &scratch);
        let out = Command::new(&checkov)
            .args(["--directory", "infra", "--framework", "terraform"])
            .args(["--output", "json", "--skip-download", "--quiet"])
            .current_dir(&root)
            .output()
            .expect("checkov runs");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "checkov's JSON report: {e}\n{}\n{}",
                tail(&String::from_utf8_lossy(&out.stdout), 40),
                tail(&String::from_utf8_lossy(&out.stderr), 40)
            )
        });
        let client = answers.client.as_str();
        let summary = &report["summary"];
        let failed: Vec<String> = report["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| format!("{} {} ({})", c["check_id"], c["resource"], c["file_path"]))
            .collect();
        assert!(
            failed.is_empty(),
            "checkov failed checks in {client}:\n{}",
            failed.join("\n")
        );
        assert_eq!(summary["failed"], 0, "{client}: {summary}");
        assert_eq!(summary["parsing_errors"], 0, "{client}: {summary}");
        assert!(
            summary["passed"].as_u64().unwrap_or(0) > 150,
            "checkov saw too little of {client}: {summary}"
        );
        for skip in report["results"]["skipped_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let id = skip["check_id"].as_str().unwrap_or_default();
            let reason = skip["check_result"]["suppress_comment"]
                .as_str()
                .unwrap_or_default();
            assert!(
                ALLOWED_SKIPS.contains(&id),
                "{client}: {id} on {} is skipped but not in ALLOWED_SKIPS",
                skip["resource"]
            );
            assert!(
                reason.split_whitespace().count() >= 5,
                "{client}: {id} on {} is skipped without a reason",
                skip["resource"]
            );
        }
        eprintln!("checkov on {client}: {summary}");
    }
}

// ---------------------------------------------------------------- apply

/// moto server on a free loopback port, killed by its PID when dropped, even
/// when a test panics.
pub(crate) struct Moto {
    child: Child,
    pub(crate) endpoint: String,
}

impl Moto {
    pub(crate) fn start(moto_server: &Path) -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(moto_server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !moto.ready(port) {
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on 127.0.0.1:{port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        moto
    }

    /// Whether moto answers its own API.
    fn ready(&self, port: u16) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let request = format!(
            "GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        );
        let mut response = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut response).is_ok()
            && response.starts_with("HTTP/1.1 200")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Lambda architecture of this machine, which is all it can build.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "x86_64",
    }
}

/// Builds every Lambda of the workspace at `root` and writes
/// `dist/<step>.zip`, with `cargo xtask package` for this machine's
/// architecture, as a user does before a first apply.
fn package(root: &Path) {
    let out = Workspace::take_turn(root).cargo(&[
        "xtask",
        "package",
        "--arch",
        host_arch(),
        "--builder",
        "cargo",
        "--version",
        "v0.0.0-terraform-test",
    ]);
    assert_ok(&out, "cargo xtask package");
    for entry in fs_err::read_dir(root.join("lambdas")).unwrap() {
        let step = entry.unwrap().file_name().to_string_lossy().into_owned();
        let zip = root.join(format!("dist/{step}.zip"));
        assert!(
            zip.is_file(),
            "cargo xtask package did not write {}",
            zip.display()
        );
    }
}

/// Lists what the emulator holds for `prefix` (`<client>-local-`), as JSON.
const LIST: &str = r#"
import json, sys
import boto3
endpoint, region, prefix, client = sys.argv[1:5]
kw = dict(endpoint_url=endpoint, region_name=region,
          aws_access_key_id="local", aws_secret_access_key="local")
out = {}
sqs = boto3.client("sqs", **kw)
out["queues"] = {
    url.rsplit("/", 1)[1]: dict(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"], Url=url)
    for url in sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
}
s3 = boto3.client("s3", **kw)
out["buckets"] = {}
for b in s3.list_buckets()["Buckets"]:
    if b["Name"].startswith(prefix):
        n = s3.get_bucket_notification_configuration(Bucket=b["Name"])
        try:
            policy = json.loads(s3.get_bucket_policy(Bucket=b["Name"])["Policy"])
        except s3.exceptions.ClientError:
            policy = None
        out["buckets"][b["Name"]] = {
            "versioning": s3.get_bucket_versioning(Bucket=b["Name"]).get("Status"),
            "queues": [(q["QueueArn"], q.get("Filter")) for q in n.get("QueueConfigurations", [])],
            "policy": policy,
        }
iam = boto3.client("iam", **kw)
out["roles"] = {
    r["RoleName"]: iam.list_role_policies(RoleName=r["RoleName"])["PolicyNames"]
    for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(prefix)
}
out["policies"] = {
    name: iam.get_role_policy(RoleName=name, PolicyName="step")["PolicyDocument"]
    for name, policies in out["roles"].items() if "step" in policies
}
out["trust"] = {
    r["RoleName"]: {
        "assume": r["AssumeRolePolicyDocument"],
        "attached": [p["PolicyName"] for p in iam.list_attached_role_policies(RoleName=r["RoleName"])["AttachedPolicies"]],
    }
    for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(prefix)
}
kms = boto3.client("kms", **kw)
alias = [a for a in kms.list_aliases()["Aliases"] if a["AliasName"] == "alias/" + prefix.rstrip("-")]
out["key_policy"] = json.loads(kms.get_key_policy(KeyId=alias[0]["TargetKeyId"], PolicyName="default")["Policy"]) if alias else None
lam = boto3.client("lambda", **kw)
out["functions"] = {
    f["FunctionName"]: f
    for f in lam.list_functions()["Functions"] if f["FunctionName"].startswith(prefix)
}
out["mappings"] = [
    m for m in lam.list_event_source_mappings()["EventSourceMappings"]
    if m["FunctionArn"].rsplit(":", 1)[1].startswith(prefix)
]
cw = boto3.client("cloudwatch", **kw)
out["alarms"] = {
    a["AlarmName"]: {"metric": a["MetricName"], "actions": a["AlarmActions"], "dimensions": a["Dimensions"]}
    for a in cw.describe_alarms(AlarmNamePrefix=prefix)["MetricAlarms"]
}
sm = boto3.client("secretsmanager", **kw)
out["secrets"] = {}
for s in sm.list_secrets()["SecretList"]:
    if s["Name"].startswith(client + "/local/"):
        try:
            sm.get_secret_value(SecretId=s["Name"])
            out["secrets"][s["Name"]] = "has a value"
        except sm.exceptions.ResourceNotFoundException:
            out["secrets"][s["Name"]] = "no value"
sch = boto3.client("scheduler", **kw)
out["schedules"] = {}
for s in sch.list_schedules(NamePrefix=prefix)["Schedules"]:
    d = sch.get_schedule(Name=s["Name"])
    out["schedules"][s["Name"]] = {
        "expression": d["ScheduleExpression"], "timezone": d.get("ScheduleExpressionTimezone"),
        "target": d["Target"]["Arn"], "input": d["Target"].get("Input"),
    }
api = boto3.client("apigatewayv2", **kw)
out["apis"] = {}
for a in api.get_apis()["Items"]:
    if a["Name"].startswith(prefix.rstrip("-")):
        out["apis"][a["Name"]] = {
            "routes": [(r["RouteKey"], r.get("AuthorizationType")) for r in api.get_routes(ApiId=a["ApiId"])["Items"]],
            "integrations": [(i.get("IntegrationSubtype"), i.get("RequestParameters")) for i in api.get_integrations(ApiId=a["ApiId"])["Items"]],
        }
print(json.dumps(out, default=str))
"#;

/// `terraform apply` of the `local` environment against moto server creates
/// the whole stack, with the real packaged Lambdas, and what it created can
/// be listed back and agrees with the answers.
#[test]
fn the_local_environment_applies_against_moto_and_lists_back() {
    let Some(tf) = Terraform::find() else { return };
    let (moto_server, python) = (tool("moto_server"), tool("python"));
    let moto = Moto::start(&moto_server);
    let scratch = Scratch::new();
    let started = Instant::now();
    std::thread::scope(|scope| {
        let runs: Vec<_> = projects()
            .into_iter()
            .map(|doc| {
                let (tf, moto, scratch, python) = (&tf, &moto, &scratch, &python);
                scope.spawn(move || apply_and_list(tf, &moto.endpoint, scratch, python, &doc))
            })
            .collect();
        for run in runs {
            if let Err(panic) = run.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    eprintln!(
        "packaged, applied and listed {} projects in {:.0?}",
        projects().len(),
        started.elapsed()
    );
}

fn apply_and_list(tf: &Terraform, endpoint: &str, scratch: &Scratch, python: &Path, doc: &str) {
    let (answers, root) = write_project(doc, scratch);
    let client = answers.client.as_str();
    let local = root.join("infra/envs/local");
    let endpoint_var = format!("aws_endpoint={endpoint}");
    let arch_var = format!("architecture={}", host_arch());
    let mut vars = vec!["-var", endpoint_var.as_str(), "-var", arch_var.as_str()];
    // A cross-account principal of the client, where the source has one.
    let principals_var = format!("client_principals=[\"{CLIENT_PRINCIPAL}\"]");
    if matches!(answers.source.as_str(), "s3" | "http") {
        vars.extend(["-var", principals_var.as_str()]);
    }
    assert_ok(
        &tf.run(&local, &["init", "-input=false", "-no-color"]),
        "terraform init (local)",
    );

    // Without packages the plan stops at once and says how to make them.
    let plan = tf
        .command(&local)
        .args(["plan", "-no-color"])
        .args(&vars)
        .output()
        .unwrap();
    // (Terraform wraps its messages; compare with single spaces.)
    let stderr = String::from_utf8_lossy(&plan.stderr);
    let words = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        !plan.status.success() && words.contains("run `cargo xtask package`"),
        "{client}: a plan without dist/ must fail naming the package command:\n{stderr}"
    );

    package(&root);
    let apply = tf
        .command(&local)
        .args(["apply", "-auto-approve", "-no-color", "-parallelism=30"])
        .args(&vars)
        .output()
        .unwrap();
    assert_ok(&apply, &format!("terraform apply (local) of {client}"));
    let stdout = String::from_utf8_lossy(&apply.stdout);
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("Apply complete!"))
        .unwrap_or_default()
        .to_string();
    eprintln!("{client}: {summary}");

    let listed = Command::new(python)
        .arg("-c")
        .arg(LIST)
        .args([
            endpoint,
            answers.region.as_str(),
            &format!("{client}-local-"),
            client,
        ])
        .output()
        .expect("python runs");
    assert_ok(&listed, "listing the emulator");
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    check_stack(&answers, endpoint, &listed);
}

/// What the emulator holds is what the answers describe.
fn check_stack(answers: &Answers, endpoint: &str, listed: &Value) {
    let client = answers.client.as_str();
    let prefix = format!("{client}-local");
    let queues = listed["queues"].as_object().unwrap();
    let functions = listed["functions"].as_object().unwrap();
    let roles = listed["roles"].as_object().unwrap();
    let alarms = listed["alarms"].as_object().unwrap();
    let input_step = answers.steps.iter().find(|s| s.kind == "validator");

    let queue_name = |step: &etlgen::answers::Step, dlq: bool| {
        format!(
            "{prefix}-{}{}{}",
            step.name.as_str(),
            if dlq { "-dlq" } else { "" },
            if step.settings.step.fifo { ".fifo" } else { "" }
        )
    };
    let mut expected_queues = BTreeSet::new();
    for step in &answers.steps {
        let s = &step.settings.step;
        let name = format!("{prefix}-{}", step.name.as_str());
        let (queue, dlq) = (queue_name(step, false), queue_name(step, true));
        expected_queues.extend([queue.clone(), dlq.clone()]);

        // The queue and its dead-letter queue.
        let q = &queues
            .get(&queue)
            .unwrap_or_else(|| panic!("{client}: no queue {queue} in {:?}", queues.keys()));
        let d = &queues
            .get(&dlq)
            .unwrap_or_else(|| panic!("{client}: no dead-letter queue {dlq}"));
        let redrive: Value = serde_json::from_str(q["RedrivePolicy"].as_str().unwrap()).unwrap();
        assert_eq!(redrive["deadLetterTargetArn"], d["QueueArn"], "{queue}");
        assert_eq!(
            redrive["maxReceiveCount"].to_string().trim_matches('"'),
            s.max_receive_count.to_string(),
            "{queue}"
        );
        let visibility: u32 = q["VisibilityTimeout"].as_str().unwrap().parse().unwrap();
        assert!(
            visibility >= 6 * s.timeout_seconds,
            "{queue}: visibility {visibility}"
        );
        assert_eq!(q["SqsManagedSseEnabled"], "true", "{queue} is encrypted");
        assert_eq!(d["SqsManagedSseEnabled"], "true", "{dlq} is encrypted");
        let fifo = q["FifoQueue"].as_str() == Some("true");
        assert_eq!(fifo, s.fifo, "{queue}");
        assert_eq!(d["FifoQueue"].as_str() == Some("true"), s.fifo, "{dlq}");

        // The function: the real package, on provided.al2023.
        let f = functions
            .get(&name)
            .unwrap_or_else(|| panic!("{client}: no function {name} in {:?}", functions.keys()));
        assert_eq!(f["Runtime"], "provided.al2023", "{name}");
        assert_eq!(f["Handler"], "bootstrap", "{name}");
        assert_eq!(
            f["Architectures"],
            serde_json::json!([host_arch()]),
            "{name}"
        );
        assert_eq!(f["Timeout"], s.timeout_seconds, "{name}");
        assert_eq!(f["MemorySize"], s.memory_mb, "{name}");
        assert_eq!(
            f["EphemeralStorage"]["Size"], s.ephemeral_storage_mb,
            "{name}"
        );
        assert_eq!(f["TracingConfig"]["Mode"], "Active", "{name}");
        assert!(
            f["KMSKeyArn"].is_string(),
            "{name}: environment not encrypted"
        );
        assert!(
            f["CodeSize"].as_u64().unwrap_or(0) > 100_000,
            "{name}: {} bytes is not a packaged Lambda",
            f["CodeSize"]
        );
        let vars = f["Environment"]["Variables"].as_object().unwrap();
        assert_eq!(vars["ETL_ENV"], "local", "{name}");
        assert_eq!(
            vars["ETL__PIPELINE__DATA_BUCKET"],
            format!("{prefix}-data"),
            "{name}"
        );
        assert_eq!(vars["ETL__AWS__ENDPOINT_URL"], endpoint, "{name}");
        assert!(
            vars["ETL__RUNTIME__FAILURE_TOPIC_ARN"]
                .as_str()
                .is_some_and(|t| t.ends_with(&format!(":{prefix}-oncall"))),
            "{name}"
        );
        // Each reader's queue URL, under the name the framework maps to
        // steps.<reader>.queue_url; the validator reads the landing zone. Every step
        // but a notifier also has the notifiers', to tell them when a run fails.
        let notifiers = (answers.steps.iter()).filter(|s| s.kind == "notifier");
        let tells = if step.kind == "notifier" {
            Vec::new()
        } else {
            notifiers.map(|s| s.name.as_str().to_owned()).collect()
        };
        let readers: BTreeSet<String> = step
            .feeds
            .iter()
            .filter(|r| Some(r.as_str()) != input_step.map(|i| i.name.as_str()))
            .map(|r| r.as_str().to_string())
            .chain(tells)
            .collect();
        let sent_to: BTreeSet<String> = vars
            .keys()
            .filter_map(|k| k.strip_prefix("ETL__STEPS__")?.strip_suffix("__QUEUE_URL"))
            .map(|k| k.to_lowercase().replace('_', "-"))
            .collect();
        assert_eq!(sent_to, readers, "{name}: queue URLs of its readers");
        for reader in &readers {
            let r = answers.step(reader).unwrap();
            let key = format!(
                "ETL__STEPS__{}__QUEUE_URL",
                reader.to_uppercase().replace('-', "_")
            );
            assert_eq!(
                vars[&key],
                queues[&queue_name(r, false)]["Url"],
                "{name}: {key}"
            );
        }
        if step.kind == "notifier" {
            let key = format!(
                "ETL__STEPS__{}__TOPIC_ARN",
                step.name.as_str().to_uppercase().replace('-', "_")
            );
            assert!(
                vars[&key]
                    .as_str()
                    .is_some_and(|t| t.ends_with(&format!(":{name}"))),
                "{name}: {key}"
            );
        }
        let catalog = Catalog::builtin();
        if catalog.kind(&step.kind).unwrap().calls_qualtrics {
            assert_eq!(
                vars["ETL__QUALTRICS__SECRET_ID"],
                format!("{client}/local/qualtrics")
            );
        }

        // Its own role, with its one inline policy.
        assert_eq!(
            roles.get(&name),
            Some(&serde_json::json!(["step"])),
            "{name}: role"
        );
        check_policy(answers, step, &name, &listed["policies"][&name], queues);

        // The event source mapping, with the answers' settings.
        let mappings: Vec<&Value> = listed["mappings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["FunctionArn"] == f["FunctionArn"])
            .collect();
        assert_eq!(mappings.len(), 1, "{name}: mappings {mappings:?}");
        let m = mappings[0];
        assert_eq!(m["EventSourceArn"], q["QueueArn"], "{name}");
        assert_eq!(m["BatchSize"], s.batch_size, "{name}");
        assert_eq!(
            m["FunctionResponseTypes"],
            serde_json::json!(["ReportBatchItemFailures"])
        );
        assert_eq!(
            m["ScalingConfig"]["MaximumConcurrency"], s.max_concurrency,
            "{name}"
        );
        if !s.fifo {
            assert_eq!(
                m["MaximumBatchingWindowInSeconds"].as_u64().unwrap_or(0),
                u64::from(s.batching_window_seconds),
                "{name}"
            );
        }

        // Both alarms, on the on-call topic.
        for (alarm, metric, queue) in [
            (
                format!("{name}-dlq-not-empty"),
                "ApproximateNumberOfMessagesVisible",
                &dlq,
            ),
            (
                format!("{name}-queue-stalled"),
                "ApproximateAgeOfOldestMessage",
                &queue,
            ),
        ] {
            let a = alarms
                .get(&alarm)
                .unwrap_or_else(|| panic!("{client}: no alarm {alarm}"));
            assert_eq!(a["metric"], metric, "{alarm}");
            assert_eq!(a["dimensions"][0]["Value"], queue.as_str(), "{alarm}");
            assert!(
                a["actions"][0]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!(":{prefix}-oncall"))
            );
        }
    }
    let listed_queues: BTreeSet<String> = queues.keys().cloned().collect();
    assert_eq!(listed_queues, expected_queues, "{client}: queues");
    assert_eq!(functions.len(), answers.steps.len(), "{client}: functions");

    // Buckets: versioned; the source's bucket notifies the validator.
    let buckets = listed["buckets"].as_object().unwrap();
    let mut expected_buckets: BTreeSet<String> = ["data", "logs"]
        .iter()
        .map(|b| format!("{prefix}-{b}"))
        .collect();
    if answers.source == "s3" {
        expected_buckets.insert(format!("{prefix}-drop"));
    }
    let listed_buckets: BTreeSet<String> = buckets.keys().cloned().collect();
    assert_eq!(listed_buckets, expected_buckets, "{client}: buckets");
    for (name, bucket) in buckets {
        assert_eq!(bucket["versioning"], "Enabled", "{name}");
    }
    let validator = input_step.expect("every pipeline validates its input");
    let validator_arn = &queues[&queue_name(validator, false)]["QueueArn"];
    let notifying = match answers.source.as_str() {
        "s3" => Some(format!("{prefix}-drop")),
        "sftp" => Some(format!("{prefix}-data")),
        _ => None,
    };
    for (name, bucket) in buckets {
        let targets: Vec<&Value> = bucket["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| &q[0])
            .collect();
        if Some(name) == notifying.as_ref() {
            assert_eq!(
                targets,
                vec![validator_arn],
                "{name} notifies the validator"
            );
        } else {
            assert!(targets.is_empty(), "{name} notifies {targets:?}");
        }
    }

    // The secrets exist, and Terraform gave none of them a value.
    let uses_qualtrics = answers
        .steps
        .iter()
        .any(|s| Catalog::builtin().kind(&s.kind).unwrap().calls_qualtrics);
    if uses_qualtrics {
        assert_eq!(
            listed["secrets"][format!("{client}/local/qualtrics")],
            "no value",
            "{client}: {}",
            listed["secrets"]
        );
    }
    for (name, value) in listed["secrets"].as_object().unwrap() {
        assert_eq!(value, "no value", "{name}");
    }

    // The source: the schedule for SFTP, the API route for HTTP.
    let schedules = listed["schedules"].as_object().unwrap();
    match &answers.schedule {
        Some(expression) => {
            let poller = answers
                .steps
                .iter()
                .find(|s| s.kind == "sftp-poller")
                .unwrap();
            let s = &schedules[&format!("{prefix}-poll")];
            assert_eq!(s["expression"], expression.as_str(), "{client}");
            assert_eq!(s["timezone"], "UTC", "{client}");
            assert_eq!(s["target"], queues[&queue_name(poller, false)]["QueueArn"]);
            let input: Value = serde_json::from_str(s["input"].as_str().unwrap()).unwrap();
            assert_eq!(
                input["scheduled_time"], "<aws.scheduler.scheduled-time>",
                "{client}"
            );
        }
        None => assert!(schedules.is_empty(), "{client}: {schedules:?}"),
    }
    let apis = listed["apis"].as_object().unwrap();
    if answers.source == "http" {
        let api = &apis[&prefix];
        assert_eq!(
            api["routes"],
            serde_json::json!([["POST /submissions", "AWS_IAM"]])
        );
        let (subtype, params) = (&api["integrations"][0][0], &api["integrations"][0][1]);
        assert_eq!(subtype, "SQS-SendMessage", "{client}");
        assert_eq!(
            params["QueueUrl"],
            queues[&queue_name(validator, false)]["Url"]
        );
        assert_eq!(params["MessageBody"], "$request.body", "{client}");
    } else {
        assert!(apis.is_empty(), "{client}: {apis:?}");
    }
    check_client_grants(answers, listed);
    eprintln!(
        "{client}: {} queues, {} buckets, {} roles, {} functions, {} mappings, {} alarms listed back",
        queues.len(),
        buckets.len(),
        roles.len(),
        functions.len(),
        listed["mappings"].as_array().unwrap().len(),
        alarms.len()
    );
}

/// The role of the client's account that the apply test grants input to.
const CLIENT_PRINCIPAL: &str = "arn:aws:iam::111122223333:role/client-uploader";

/// The client's principal may put files under `landing/` of the drop bucket and encrypt
/// them with the pipeline's key, through S3, for that bucket only (an S3 source), or
/// assume the submit role (an HTTP source). An SFTP source grants the client nothing.
fn check_client_grants(answers: &Answers, listed: &Value) {
    let client = answers.client.as_str();
    let prefix = format!("{client}-local");
    let granted = |statement: &Value| {
        statement["Principal"]["AWS"] == CLIENT_PRINCIPAL
            || statement["Principal"]["AWS"] == serde_json::json!([CLIENT_PRINCIPAL])
    };
    let statements = |policy: &Value| policy["Statement"].as_array().cloned().unwrap_or_default();
    let drop_policy = &listed["buckets"][format!("{prefix}-drop")]["policy"];
    let key_grants: Vec<Value> = statements(&listed["key_policy"])
        .into_iter()
        .filter(granted)
        .collect();
    let submit_role = &listed["trust"][format!("{prefix}-submit")];
    match answers.source.as_str() {
        "s3" => {
            let drops: Vec<Value> = statements(drop_policy)
                .into_iter()
                .filter(granted)
                .collect();
            assert_eq!(
                drops.len(),
                1,
                "{client}: the drop bucket's policy: {drop_policy:#}"
            );
            assert_eq!(
                drops[0]["Resource"],
                format!("arn:aws:s3:::{prefix}-drop/landing/*"),
                "{client}: only landing/ is granted"
            );
            assert_eq!(
                key_grants.len(),
                1,
                "{client}: the key policy: {:#}",
                listed["key_policy"]
            );
            let context = &key_grants[0]["Condition"]["StringEquals"];
            assert_eq!(
                context["kms:EncryptionContext:aws:s3:arn"],
                format!("arn:aws:s3:::{prefix}-drop")
            );
            assert!(
                context["kms:ViaService"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("s3.")),
                "{context}"
            );
            assert!(
                submit_role.is_null(),
                "{client}: no submit role for an S3 source"
            );
        }
        "http" => {
            let trusted: Vec<Value> = statements(&submit_role["assume"])
                .into_iter()
                .filter(granted)
                .collect();
            assert_eq!(
                trusted.len(),
                1,
                "{client}: the submit role: {submit_role:#}"
            );
            assert_eq!(trusted[0]["Action"], "sts:AssumeRole");
            assert_eq!(
                submit_role["attached"],
                serde_json::json!([format!("{prefix}-submit")])
            );
            assert!(key_grants.is_empty(), "{client}: {key_grants:?}");
        }
        _ => {
            assert!(
                key_grants.is_empty() && submit_role.is_null(),
                "{client}: an SFTP source grants nothing"
            );
        }
    }
}

/// The step's policy: the raw zone is denied to every step but the input's reader, and a
/// step may send to the queues of its readers and of the pipeline's notifiers, which it
/// tells when it rejects a run's message.
fn check_policy(
    answers: &Answers,
    step: &etlgen::answers::Step,
    name: &str,
    policy: &Value,
    queues: &serde_json::Map<String, Value>,
) {
    // boto3 decodes the document; a string is the JSON text itself.
    let policy: Value = match policy {
        Value::String(text) => serde_json::from_str(text).unwrap(),
        other => other.clone(),
    };
    let statements = policy["Statement"].as_array().unwrap();
    let sid = |sid: &str| statements.iter().find(|s| s["Sid"] == sid);
    let resources = |s: &Value| -> Vec<String> {
        match &s["Resource"] {
            Value::String(one) => vec![one.clone()],
            Value::Array(many) => many
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect(),
            _ => Vec::new(),
        }
    };
    let catalog = Catalog::builtin();
    let reads_input =
        etlgen::answers::consumes(step, catalog.kind(&step.kind).unwrap()) == Catalog::INPUT;
    if reads_input {
        let actions = sid("ReadWriteDataBucket").map(|s| s["Action"].to_string());
        assert!(
            actions.is_some_and(|a| a.contains("s3:GetObjectVersion")),
            "{name}: copies the version an event names"
        );
    }
    match sid("RawZoneIsTheInputReaders") {
        Some(deny) => {
            assert!(
                !reads_input,
                "{name}: the input's reader is denied the raw zone"
            );
            assert_eq!(deny["Effect"], "Deny", "{name}");
            assert!(
                resources(deny).iter().all(|r| r.ends_with("-data/raw/*")),
                "{name}: {deny}"
            );
        }
        None => assert!(reads_input, "{name}: may write the raw zone"),
    }
    let prefix = format!("{}-local-", answers.client.as_str());
    let sends: Vec<String> = sid("SendToNextSteps").map(resources).unwrap_or_default();
    let notifiers =
        (answers.steps.iter()).filter(|s| s.kind == "notifier" && step.kind != "notifier");
    for target in step
        .feeds
        .iter()
        .map(|f| f.as_str())
        .chain(notifiers.map(|s| s.name.as_str()))
    {
        let reader = answers.step(target).unwrap();
        let reads_landing = etlgen::answers::consumes(reader, catalog.kind(&reader.kind).unwrap())
            == Catalog::INPUT;
        if reads_landing {
            continue;
        }
        let suffix = if reader.settings.step.fifo {
            ".fifo"
        } else {
            ""
        };
        let queue = format!("{prefix}{target}{suffix}");
        let arn = queues[&queue]["QueueArn"].as_str().unwrap();
        assert!(
            sends.iter().any(|r| r == arn),
            "{name} may send to {target}: {sends:?}"
        );
    }
}
