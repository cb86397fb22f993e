locals {
  # FIFO queue names must end in .fifo; the dead-letter queue of a FIFO
  # queue must be FIFO too.
  suffix = var.fifo ? ".fifo" : ""

  # The framework reads ETL__SECTION__KEY variables over its compiled-in
  # configuration; in a step segment an underscore stands for a hyphen
  # (ETL__STEPS__CONTACT_IMPORTER__QUEUE_URL sets
  # steps.contact-importer.queue_url).
  step_key = upper(replace(var.step, "-", "_"))

  variables = merge(
    {
      ETL_ENV                         = var.environment
      ETL__PIPELINE__DATA_BUCKET      = var.data_bucket.name
      ETL__RUNTIME__FAILURE_TOPIC_ARN = var.alarm_topic_arn
      # A once-per-run claim must outlive the invocation that holds it.
      ETL__RUNTIME__CLAIM_LEASE_SECONDS = tostring(max(300, var.timeout_seconds))
    },
    { for r in var.readers : "ETL__STEPS__${upper(replace(r.step, "-", "_"))}__QUEUE_URL" => r.url },
    { for section, secret in var.secrets : "ETL__${upper(section)}__SECRET_ID" => secret.name },
    var.topic_arn == null ? {} : { "ETL__STEPS__${local.step_key}__TOPIC_ARN" = var.topic_arn },
    var.variables,
  )

  publish_topic_arns = compact([var.alarm_topic_arn, var.topic_arn])
}

# The queue and its dead-letter queue.

resource "aws_sqs_queue" "dlq" {
  name                        = "${var.name}-dlq${local.suffix}"
  fifo_queue                  = var.fifo
  content_based_deduplication = var.fifo
  message_retention_seconds   = var.dlq_retention_seconds
  sqs_managed_sse_enabled     = true
}

resource "aws_sqs_queue" "queue" {
  name       = "${var.name}${local.suffix}"
  fifo_queue = var.fifo
  # The framework sets a deduplication id on everything it sends; content
  # deduplication covers the schedule's ticks, which carry none.
  content_based_deduplication = var.fifo
  # Lambda requires at least the function timeout; AWS recommends six times
  # it, plus the batching window, so a retried batch is not seen twice.
  visibility_timeout_seconds = min(43200, 6 * var.timeout_seconds + var.batching_window_seconds)
  message_retention_seconds  = var.message_retention_seconds
  sqs_managed_sse_enabled    = true

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq.arn
    maxReceiveCount     = var.max_receive_count
  })
}

# The Lambda's role: only this step's queue, log group, buckets, secrets,
# topics and the queues of the steps it feeds.

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "lambda" {
  name               = var.name
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

data "aws_iam_policy_document" "lambda" {
  statement {
    sid = "ConsumeOwnQueue"
    actions = [
      "sqs:ChangeMessageVisibility",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
      "sqs:ReceiveMessage",
    ]
    resources = [aws_sqs_queue.queue.arn]
  }

  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.lambda.arn}:*"]
  }

  # The raw zone is the run's input as it arrived: only the step that reads the input
  # writes it, so no other step's code, or hook, can change what a replay reads.
  dynamic "statement" {
    for_each = var.writes_raw ? [] : [1]

    content {
      sid       = "RawZoneIsTheInputReaders"
      effect    = "Deny"
      actions   = ["s3:PutObject"]
      resources = ["${var.data_bucket.arn}/raw/*"]
    }
  }

  statement {
    sid       = "ListDataBucket"
    actions   = ["s3:ListBucket"]
    resources = [var.data_bucket.arn]
  }

  # AbortMultipartUpload: a streamed upload that fails part-way leaves no billed parts.
  # GetObjectVersion: the validator copies the version an S3 event names.
  statement {
    sid       = "ReadWriteDataBucket"
    actions   = ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${var.data_bucket.arn}/*"]
  }

  dynamic "statement" {
    for_each = length(var.read_bucket_arns) > 0 ? [1] : []

    content {
      sid       = "ReadInputBuckets"
      actions   = ["s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket"]
      resources = concat(var.read_bucket_arns, [for arn in var.read_bucket_arns : "${arn}/*"])
    }
  }

  dynamic "statement" {
    for_each = length(var.readers) > 0 ? [1] : []

    content {
      sid       = "SendToNextSteps"
      actions   = ["sqs:SendMessage"]
      resources = [for r in var.readers : r.arn]
    }
  }

  dynamic "statement" {
    for_each = length(var.secrets) > 0 ? [1] : []

    content {
      sid       = "ReadOwnSecrets"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [for s in values(var.secrets) : s.arn]
    }
  }

  statement {
    sid       = "PublishNotifications"
    actions   = ["sns:Publish"]
    resources = local.publish_topic_arns
  }

  statement {
    sid       = "UsePipelineKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
  }

  # X-Ray's write actions have no resource-level permissions.
  statement {
    sid       = "WriteTraces"
    actions   = ["xray:PutTelemetryRecords", "xray:PutTraceSegments"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "lambda" {
  name   = "step"
  role   = aws_iam_role.lambda.id
  policy = data.aws_iam_policy_document.lambda.json
}

resource "aws_cloudwatch_log_group" "lambda" {
  name              = "/aws/lambda/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

# The Lambda: lambdas/<step>, built as bootstrap for provided.al2023.

resource "aws_lambda_function" "step" {
  #checkov:skip=CKV_AWS_116:A dead-letter queue on the function only catches asynchronous invocations; this function is invoked by its SQS event source mapping, whose queue has a dead-letter queue with an alarm.
  #checkov:skip=CKV_AWS_115:Concurrency is capped by the event source mapping's maximum concurrency, as AWS recommends for SQS triggers; a reserved concurrency below it throttles the queue and one above it only takes capacity from the account.
  #checkov:skip=CKV_AWS_117:The step calls only public endpoints (the Qualtrics API, the client's SFTP server, AWS APIs) and reaches no private resource; a VPC would add a NAT gateway and no isolation.
  #checkov:skip=CKV_AWS_272:Releases are verified by the SHA-256 checksums of their manifest and deployed by artifact key; there is no AWS Signer profile in this pipeline.
  function_name = var.name
  description   = "The ${var.step} step (lambdas/${var.step})."
  role          = aws_iam_role.lambda.arn
  runtime       = "provided.al2023"
  handler       = "bootstrap"
  architectures = [var.architecture]
  memory_size   = var.memory_mb
  timeout       = var.timeout_seconds
  kms_key_arn   = var.kms_key_arn

  ephemeral_storage {
    size = var.ephemeral_storage_mb
  }

  s3_bucket        = var.package.s3_bucket
  s3_key           = var.package.s3_key
  filename         = var.package.filename
  source_code_hash = var.package.filename != null && fileexists(coalesce(var.package.filename, "-")) ? filebase64sha256(var.package.filename) : null

  environment {
    variables = local.variables
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [
    aws_cloudwatch_log_group.lambda,
    aws_iam_role_policy.lambda,
  ]

  lifecycle {
    precondition {
      condition     = var.package.filename == null || fileexists(coalesce(var.package.filename, "-"))
      error_message = "The Lambda package ${coalesce(var.package.filename, "-")} is missing: run `cargo xtask package` at the repository root first."
    }
  }
}

resource "aws_lambda_event_source_mapping" "queue" {
  event_source_arn                   = aws_sqs_queue.queue.arn
  function_name                      = aws_lambda_function.step.arn
  batch_size                         = var.batch_size
  maximum_batching_window_in_seconds = var.fifo ? null : var.batching_window_seconds
  function_response_types            = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = var.max_concurrency
  }

  lifecycle {
    precondition {
      condition     = !var.fifo || (var.batch_size <= 10 && var.batching_window_seconds == 0)
      error_message = "A FIFO queue takes at most 10 messages per batch and no batching window."
    }
  }
}

# Alarms, to the on-call topic.

resource "aws_cloudwatch_metric_alarm" "dlq" {
  alarm_name          = "${var.name}-dlq-not-empty"
  alarm_description   = "Messages of step ${var.step} failed ${var.max_receive_count} times and wait in ${aws_sqs_queue.dlq.name}. RUNBOOK.md: inspect them, fix the cause, redrive."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dlq.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
  ok_actions          = [var.alarm_topic_arn]
}

resource "aws_cloudwatch_metric_alarm" "oldest_message" {
  alarm_name          = "${var.name}-queue-stalled"
  alarm_description   = "The oldest message of step ${var.step} has waited more than ${var.oldest_message_alarm_seconds} seconds in ${aws_sqs_queue.queue.name}: the step is failing, throttled or too slow. See RUNBOOK.md."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = aws_sqs_queue.queue.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.oldest_message_alarm_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
  ok_actions          = [var.alarm_topic_arn]
}
