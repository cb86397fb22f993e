output "queue" {
  description = "What a step that feeds this one needs: pass it in that step's readers."
  value = {
    step = var.step
    url  = aws_sqs_queue.queue.url
    arn  = aws_sqs_queue.queue.arn
  }
}

output "queue_url" {
  description = "The step's queue."
  value       = aws_sqs_queue.queue.url
}

output "queue_arn" {
  description = "The step's queue."
  value       = aws_sqs_queue.queue.arn
}

output "queue_name" {
  description = "The step's queue."
  value       = aws_sqs_queue.queue.name
}

output "dlq_url" {
  description = "The step's dead-letter queue."
  value       = aws_sqs_queue.dlq.url
}

output "dlq_arn" {
  description = "The step's dead-letter queue."
  value       = aws_sqs_queue.dlq.arn
}

output "function_name" {
  description = "The step's Lambda."
  value       = aws_lambda_function.step.function_name
}

output "function_arn" {
  description = "The step's Lambda."
  value       = aws_lambda_function.step.arn
}

output "role_name" {
  description = "The Lambda's IAM role."
  value       = aws_iam_role.lambda.name
}

output "log_group_name" {
  description = "The Lambda's log group."
  value       = aws_cloudwatch_log_group.lambda.name
}

output "event_source_mapping_uuid" {
  description = "The mapping from the queue to the Lambda (disable it to pause the step)."
  value       = aws_lambda_event_source_mapping.queue.uuid
}
