//! The AWS resources `terraform apply` creates in one environment.
//!
//! Derived from the answers by the same conditions `templates/infra` renders
//! them under (`modules/step` once per step; `modules/pipeline`'s key,
//! topics, secrets, buckets and source pieces by source and kinds). Each entry
//! is one Terraform resource address, so the integration tests can count the
//! rendered `resource` blocks and fail when the templates and this list drift.

use serde::Serialize;

use super::ENV;
use crate::answers::Answers;
use crate::catalog::Catalog;

/// Where a resource is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Module {
    /// `infra/modules/step`, instantiated once per step.
    Step,
    /// `infra/modules/pipeline`, once per environment.
    Pipeline,
}

/// One Terraform resource of the pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct Resource {
    /// What it is, for people.
    pub what: String,
    /// Its address inside its module, `<type>.<name>`.
    pub terraform: String,
    /// The module that declares it.
    pub module: Module,
    /// How many one environment gets.
    pub count: u32,
    /// Its AWS names, `<env>` for the environment; empty when unnamed.
    pub names: Vec<String>,
    /// For per-step resources, the name with `<step>` for the step.
    pub pattern: Option<String>,
    /// The main resources (queues, functions, buckets, …) as opposed to the
    /// settings and policies attached to them.
    pub primary: bool,
}

/// The resources of one environment.
#[derive(Debug, Clone, Serialize)]
pub struct Resources {
    /// Every resource address with its count.
    pub items: Vec<Resource>,
    /// The sum of the counts: Terraform resources per environment.
    pub total_per_environment: u32,
}

/// `infra/modules/step`'s resources: primary, what, address, and the name
/// pattern (`{prefix}` is `<client>-<env>`, `{step}` the step, `{fifo}`
/// `.fifo` for a FIFO queue).
const STEP_RESOURCES: &[(bool, &str, &str, &str)] = &[
    (
        true,
        "SQS queue",
        "aws_sqs_queue.queue",
        "{prefix}-{step}{fifo}",
    ),
    (
        true,
        "SQS dead-letter queue",
        "aws_sqs_queue.dlq",
        "{prefix}-{step}-dlq{fifo}",
    ),
    (
        true,
        "Lambda function",
        "aws_lambda_function.step",
        "{prefix}-{step}",
    ),
    (
        true,
        "IAM role of a Lambda",
        "aws_iam_role.lambda",
        "{prefix}-{step}",
    ),
    (
        false,
        "IAM inline policy of a Lambda's role",
        "aws_iam_role_policy.lambda",
        "",
    ),
    (
        true,
        "CloudWatch log group",
        "aws_cloudwatch_log_group.lambda",
        "/aws/lambda/{prefix}-{step}",
    ),
    (
        true,
        "SQS event source mapping",
        "aws_lambda_event_source_mapping.queue",
        "",
    ),
    (
        true,
        "CloudWatch alarm: DLQ not empty",
        "aws_cloudwatch_metric_alarm.dlq",
        "{prefix}-{step}-dlq-not-empty",
    ),
    (
        true,
        "CloudWatch alarm: queue stalled",
        "aws_cloudwatch_metric_alarm.oldest_message",
        "{prefix}-{step}-queue-stalled",
    ),
];

/// The S3 bucket settings every bucket has, each its own Terraform resource.
const BUCKET_SETTINGS: &[(&str, &str)] = &[
    ("aws_s3_bucket_ownership_controls", "ownership controls"),
    ("aws_s3_bucket_public_access_block", "public access block"),
    ("aws_s3_bucket_versioning", "versioning"),
    (
        "aws_s3_bucket_server_side_encryption_configuration",
        "encryption",
    ),
    ("aws_s3_bucket_logging", "access logging"),
    ("aws_s3_bucket_policy", "TLS-only policy"),
    ("aws_s3_bucket_lifecycle_configuration", "lifecycle rules"),
    ("aws_s3_bucket_notification", "notifications"),
];

struct Builder {
    items: Vec<Resource>,
    module: Module,
}

impl Builder {
    fn add(&mut self, primary: bool, what: &str, terraform: &str, count: u32, names: Vec<String>) {
        if count > 0 {
            self.items.push(Resource {
                what: what.to_string(),
                terraform: terraform.to_string(),
                module: self.module,
                count,
                names,
                pattern: None,
                primary,
            });
        }
    }
}

/// The resources `answers` deploy to one environment; names start `prefix`
/// (`<client>-<env>`).
pub fn resources(answers: &Answers, catalog: &Catalog, prefix: &str, uses_sftp: bool) -> Resources {
    let steps = u32::try_from(answers.steps.len()).expect("a handful of steps");
    let mut b = Builder {
        items: Vec::new(),
        module: Module::Step,
    };
    let fifo_any = answers.steps.iter().any(|s| s.settings.step.fifo);
    for (primary, what, terraform, pattern) in STEP_RESOURCES {
        let names: Vec<String> = answers
            .steps
            .iter()
            .filter(|_| !pattern.is_empty())
            .map(|s| {
                let fifo = if s.settings.step.fifo { ".fifo" } else { "" };
                pattern
                    .replace("{prefix}", prefix)
                    .replace("{step}", s.name.as_str())
                    .replace("{fifo}", fifo)
            })
            .collect();
        b.add(*primary, what, terraform, steps, names);
        if let Some(last) = b.items.last_mut().filter(|_| !pattern.is_empty()) {
            let generic = pattern
                .replace("{prefix}", prefix)
                .replace("{step}", "<step>")
                .replace("{fifo}", if fifo_any { "[.fifo]" } else { "" });
            last.pattern = Some(generic);
        }
    }

    b.module = Module::Pipeline;
    b.add(
        false,
        "Workspace check (no AWS resource)",
        "terraform_data.workspace",
        1,
        vec![],
    );
    b.add(true, "KMS key", "aws_kms_key.pipeline", 1, vec![]);
    b.add(
        false,
        "KMS key alias",
        "aws_kms_alias.pipeline",
        1,
        vec![format!("alias/{prefix}")],
    );
    b.add(
        true,
        "SNS topic: on-call",
        "aws_sns_topic.oncall",
        1,
        vec![format!("{prefix}-oncall")],
    );
    let notifiers: Vec<String> = answers
        .steps
        .iter()
        .filter(|s| s.kind == "notifier")
        .map(|s| format!("{prefix}-{}", s.name))
        .collect();
    let topics = u32::try_from(notifiers.len()).expect("a handful of steps");
    b.add(
        true,
        "SNS topic: notifications",
        "aws_sns_topic.notifications",
        topics,
        notifiers,
    );
    let client = answers.client.as_str();
    let qualtrics = answers
        .steps
        .iter()
        .any(|s| catalog.kind(&s.kind).is_some_and(|k| k.calls_qualtrics));
    let secret = vec![format!("{client}/{ENV}/qualtrics")];
    let qualtrics_secret = "aws_secretsmanager_secret.qualtrics";
    b.add(
        true,
        "Secrets Manager secret: Qualtrics API",
        qualtrics_secret,
        u32::from(qualtrics),
        secret,
    );
    let secret = vec![format!("{client}/{ENV}/sftp")];
    let sftp_secret = "aws_secretsmanager_secret.sftp";
    b.add(
        true,
        "Secrets Manager secret: client SFTP",
        sftp_secret,
        u32::from(uses_sftp),
        secret,
    );

    let landing = answers.source == "s3";
    for (bucket, suffix, present) in [
        ("data", "data", true),
        ("landing", "drop", landing),
        ("logs", "logs", true),
    ] {
        if !present {
            continue;
        }
        let name = vec![format!("{prefix}-{suffix}")];
        b.add(
            true,
            &format!("S3 bucket: {bucket}"),
            &format!("aws_s3_bucket.{bucket}"),
            1,
            name,
        );
        for (kind, what) in BUCKET_SETTINGS {
            // The logs bucket is where access logs go; it does not log itself.
            let count = u32::from(!(bucket == "logs" && *kind == "aws_s3_bucket_logging"));
            b.add(
                false,
                &format!("S3 bucket {what}"),
                &format!("{kind}.{bucket}"),
                count,
                vec![],
            );
        }
    }

    let input = answers.steps.iter().any(|s| {
        let kind = catalog.kind(&s.kind).expect("resolved");
        crate::answers::consumes(s, kind) == Catalog::INPUT
    });
    let scheduled = answers.steps.iter().any(|s| {
        let kind = catalog.kind(&s.kind).expect("resolved");
        crate::answers::consumes(s, kind) == Catalog::SCHEDULE
    });
    let http = answers.source == "http";
    let queue_policy = u32::from(input && !http);
    b.add(
        false,
        "SQS queue policy: S3 may notify the input queue",
        "aws_sqs_queue_policy.input",
        queue_policy,
        vec![],
    );
    let s = u32::from(scheduled);
    b.add(
        true,
        "EventBridge Scheduler schedule",
        "aws_scheduler_schedule.poll",
        s,
        vec![format!("{prefix}-poll")],
    );
    b.add(
        true,
        "IAM role of the schedule",
        "aws_iam_role.scheduler",
        s,
        vec![format!("{prefix}-sched")],
    );
    b.add(
        false,
        "IAM inline policy of the schedule's role",
        "aws_iam_role_policy.scheduler",
        s,
        vec![],
    );
    let h = u32::from(input && http);
    b.add(
        true,
        "API Gateway HTTP API",
        "aws_apigatewayv2_api.submissions",
        h,
        vec![prefix.to_string()],
    );
    b.add(
        false,
        "API Gateway integration: body to the input queue",
        "aws_apigatewayv2_integration.submissions",
        h,
        vec![],
    );
    b.add(
        false,
        "API Gateway route: POST /submissions",
        "aws_apigatewayv2_route.submissions",
        h,
        vec![],
    );
    b.add(
        false,
        "API Gateway stage",
        "aws_apigatewayv2_stage.default",
        h,
        vec![],
    );
    let api_logs = vec![format!("/aws/apigateway/{prefix}")];
    b.add(
        true,
        "CloudWatch log group: API access logs",
        "aws_cloudwatch_log_group.api",
        h,
        api_logs,
    );
    b.add(
        true,
        "IAM role of the API",
        "aws_iam_role.api",
        h,
        vec![format!("{prefix}-api")],
    );
    b.add(
        false,
        "IAM inline policy of the API's role",
        "aws_iam_role_policy.api",
        h,
        vec![],
    );
    b.add(
        true,
        "IAM policy to attach to the client's principal",
        "aws_iam_policy.submit",
        h,
        vec![format!("{prefix}-submit")],
    );

    let total_per_environment = b.items.iter().map(|r| r.count).sum();
    Resources {
        items: b.items,
        total_per_environment,
    }
}
