//! `dev` is personal: each developer deploys their own stack from their own
//! Terraform workspace (DESIGN.md, "Environments are separate"). Judged by
//! `terraform plan` of the generated `dev` and `prod` roots against moto
//! server: the default workspace is refused in `dev`, every name a `dev`
//! plan creates carries the workspace, and `prod` refuses any workspace but
//! the default one, where its names carry none.

use std::path::Path;

use serde_json::Value;

use crate::helpers::{Scratch, all_services_doc, write_project};
use crate::terraform::{Moto, Terraform};
use crate::tools::{assert_ok, tool};

/// Points a generated root at moto and keeps its state on disk, through
/// Terraform's override files, leaving the generated files as they are.
fn point_at_moto(dir: &Path, endpoint: &str) {
    let endpoints: String = [
        "apigatewayv2",
        "cloudwatch",
        "iam",
        "kms",
        "lambda",
        "logs",
        "s3",
        "scheduler",
        "secretsmanager",
        "sns",
        "sqs",
        "sts",
    ]
    .iter()
    .map(|s| format!("    {s} = \"{endpoint}\"\n"))
    .collect();
    let text = format!(
        "terraform {{\n  backend \"local\" {{}}\n}}\n\n\
         provider \"aws\" {{\n  access_key = \"test\"\n  secret_key = \"test\"\n  \
         skip_credentials_validation = true\n  skip_metadata_api_check = true\n  \
         s3_use_path_style = true\n  endpoints {{\n{endpoints}  }}\n}}\n"
    );
    fs_err::write(dir.join("moto_override.tf"), text).unwrap();
}

/// Terraform wraps its messages; compare them with single spaces.
fn words(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

const RELEASE: [&str; 4] = [
    "-var",
    "artifacts_bucket=acme-artifacts",
    "-var",
    "artifact_version=v1.0.0",
];

/// `terraform plan` in `dir`, which must fail: what it said, in single spaces.
fn refused_plan(tf: &Terraform, dir: &Path, what: &str) -> String {
    let out = tf
        .command(dir)
        .args(["plan", "-no-color"])
        .args(RELEASE)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{what} must be refused");
    words(&out.stderr)
}

/// `terraform plan` in `dir`, which must pass: every name-like attribute it creates, with
/// its resource's address.
fn planned_names(tf: &Terraform, dir: &Path, what: &str) -> Vec<(String, String)> {
    let planned = tf
        .command(dir)
        .args(["plan", "-no-color", "-out", "test.tfplan"])
        .args(RELEASE)
        .output()
        .unwrap();
    assert_ok(&planned, &format!("terraform plan ({what})"));
    let shown = tf.run(dir, &["show", "-json", "-no-color", "test.tfplan"]);
    assert_ok(&shown, &format!("terraform show -json ({what})"));
    let plan: Value = serde_json::from_slice(&shown.stdout).unwrap();
    let mut names = Vec::new();
    for change in plan["resource_changes"].as_array().unwrap() {
        let after = &change["change"]["after"];
        for key in ["name", "bucket", "function_name", "alarm_name"] {
            if let Some(name) = after[key].as_str() {
                let address = change["address"].as_str().unwrap().to_string();
                names.push((address, name.to_string()));
            }
        }
    }
    names
}

#[test]
fn dev_is_planned_per_workspace_and_prod_only_in_the_default_one() {
    let Some(tf) = Terraform::find() else { return };
    let moto = Moto::start(&tool("moto_server"));
    let scratch = Scratch::new();
    let (_, root) = write_project(&all_services_doc("acme", "sftp"), &scratch);
    let dev = root.join("infra/envs/dev");
    point_at_moto(&dev, &moto.endpoint);
    assert_ok(
        &tf.run(&dev, &["init", "-input=false", "-no-color"]),
        "terraform init (dev)",
    );

    let said = refused_plan(&tf, &dev, "dev in the default workspace");
    assert!(
        said.contains("deploy it from a Terraform workspace named for you")
            && said.contains("terraform workspace select -or-create"),
        "dev in the default workspace must say how to pick one:\n{said}"
    );

    assert_ok(
        &tf.run(&dev, &["workspace", "new", "-no-color", "jdoe"]),
        "terraform workspace new jdoe (dev)",
    );
    let names = planned_names(&tf, &dev, "dev, workspace jdoe");
    let ours: Vec<_> = names.iter().filter(|(_, n)| n.contains("acme")).collect();
    assert!(ours.len() >= 40, "too few names planned: {names:#?}");
    for (address, name) in &ours {
        assert!(
            name.starts_with("acme-dev-jdoe-")
                || name.starts_with("acme/dev-jdoe/")
                || name.starts_with("/aws/lambda/acme-dev-jdoe-")
                || name.starts_with("/aws/apigateway/acme-dev-jdoe")
                || *name == "alias/acme-dev-jdoe",
            "{address} is named {name:?}, without the workspace"
        );
    }
    for secret in ["acme/dev-jdoe/qualtrics", "acme/dev-jdoe/sftp"] {
        assert!(
            ours.iter().any(|(_, n)| n == secret),
            "no secret {secret}: {ours:#?}"
        );
    }

    let prod = root.join("infra/envs/prod");
    point_at_moto(&prod, &moto.endpoint);
    assert_ok(
        &tf.run(&prod, &["init", "-input=false", "-no-color"]),
        "terraform init (prod)",
    );
    assert_ok(
        &tf.run(&prod, &["workspace", "new", "-no-color", "jdoe"]),
        "terraform workspace new jdoe (prod)",
    );
    let said = refused_plan(&tf, &prod, "prod in a developer's workspace");
    assert!(
        said.contains("this one is shared: terraform workspace select default"),
        "prod in a developer's workspace must say to use the default one:\n{said}"
    );

    // In the default workspace prod plans, under names without any workspace.
    assert_ok(
        &tf.run(&prod, &["workspace", "select", "-no-color", "default"]),
        "terraform workspace select default (prod)",
    );
    let names = planned_names(&tf, &prod, "prod, default workspace");
    assert!(
        names.iter().any(|(_, n)| n == "acme-prod-data")
            && names.iter().any(|(_, n)| n == "acme/prod/qualtrics"),
        "{names:#?}"
    );
    assert!(
        names.iter().all(|(_, n)| !n.contains("default")),
        "a shared environment's names carry no workspace: {names:#?}"
    );
}
