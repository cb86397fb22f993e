# One pipeline step: its queue and dead-letter queue, its Lambda, the event
# source mapping between them, its IAM role and log group, and its alarms.
# The pipeline module calls it once per step; every value comes from the
# step's settings in .etlgen/answers.toml or from the pipeline's shared
# resources.

variable "step" {
  description = "The step's name, as in config/default.toml ([steps.<step>]) and lambdas/<step>."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9]*(-[a-z0-9]+)*$", var.step))
    error_message = "A step name is lowercase letters, digits and single hyphens, starting with a letter."
  }
}

variable "name" {
  description = "The name of every resource of the step: <client>-<environment>-<step>."
  type        = string

  validation {
    condition     = length(var.name) <= 64
    error_message = "Lambda function and IAM role names are at most 64 characters."
  }
}

variable "environment" {
  description = "The deployment environment, passed to the Lambda as ETL_ENV to select config/<environment>.toml."
  type        = string
}

variable "package" {
  description = "The Lambda's zip: an object in the artifacts bucket (s3_bucket, s3_key), or a local file (filename)."
  type = object({
    s3_bucket = optional(string)
    s3_key    = optional(string)
    filename  = optional(string)
  })

  validation {
    condition     = (var.package.filename == null) != (var.package.s3_bucket == null || var.package.s3_key == null)
    error_message = "Give the package either as s3_bucket and s3_key, or as filename."
  }
}

variable "architecture" {
  description = "The Lambda's instruction set: arm64 (what releases build) or x86_64."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "The architecture is arm64 or x86_64."
  }
}

variable "fifo" {
  description = "A FIFO queue (and FIFO dead-letter queue): messages are handled one at a time per message group, in order."
  type        = bool
  default     = false
}

variable "timeout_seconds" {
  description = "The Lambda's timeout; the queue's visibility timeout is six times this plus the batching window."
  type        = number

  validation {
    condition     = var.timeout_seconds >= 1 && var.timeout_seconds <= 900
    error_message = "A Lambda timeout is 1 to 900 seconds."
  }
}

variable "memory_mb" {
  description = "The Lambda's memory."
  type        = number

  validation {
    condition     = var.memory_mb >= 128 && var.memory_mb <= 10240
    error_message = "Lambda memory is 128 to 10240 MB."
  }
}

variable "ephemeral_storage_mb" {
  description = "The Lambda's ephemeral storage (/tmp), where the validator's dedup writes past its memory."
  type        = number
  default     = 512

  validation {
    condition     = var.ephemeral_storage_mb >= 512 && var.ephemeral_storage_mb <= 10240
    error_message = "Lambda ephemeral storage is 512 to 10240 MB."
  }
}

variable "batch_size" {
  description = "SQS messages per invocation (BatchSize)."
  type        = number

  validation {
    condition     = var.batch_size >= 1 && var.batch_size <= 10000
    error_message = "The batch size is 1 to 10000 (10 for a FIFO queue)."
  }
}

variable "batching_window_seconds" {
  description = "MaximumBatchingWindowInSeconds; 0 for a FIFO queue."
  type        = number

  validation {
    condition     = var.batching_window_seconds >= 0 && var.batching_window_seconds <= 300
    error_message = "The batching window is 0 to 300 seconds."
  }
}

variable "max_concurrency" {
  description = "ScalingConfig.MaximumConcurrency of the event source mapping: at most this many concurrent invocations."
  type        = number

  validation {
    condition     = var.max_concurrency >= 2 && var.max_concurrency <= 1000
    error_message = "Lambda allows a maximum concurrency of 2 to 1000 for SQS event sources."
  }
}

variable "max_receive_count" {
  description = "Receives before a message moves to the dead-letter queue (maxReceiveCount)."
  type        = number

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000
    error_message = "maxReceiveCount is 1 to 1000."
  }
}

variable "message_retention_seconds" {
  description = "How long the queue keeps a message."
  type        = number
  default     = 345600
}

variable "dlq_retention_seconds" {
  description = "How long the dead-letter queue keeps a message: the most SQS allows, so on-call has time to redrive."
  type        = number
  default     = 1209600
}

variable "data_bucket" {
  description = "The pipeline's data bucket (raw zone, reports, run state, ledger): name and ARN."
  type = object({
    name = string
    arn  = string
  })
}

variable "writes_raw" {
  description = "Whether the step reads the pipeline's input and so writes the raw zone (raw/ of the data bucket); every other step is denied it."
  type        = bool
  default     = false
}

variable "read_bucket_arns" {
  description = "Other buckets the step reads objects from (the validator: the client's landing bucket)."
  type        = list(string)
  default     = []
}

variable "readers" {
  description = "The steps that read this step's output (next_steps in config/default.toml), from their modules' queue output."
  type = list(object({
    step = string
    url  = string
    arn  = string
  }))
  default = []
}

variable "secrets" {
  description = "Secrets Manager secrets the step reads, by config section (qualtrics, sftp): their names and ARNs."
  type = map(object({
    name = string
    arn  = string
  }))
  default = {}
}

variable "topic_arn" {
  description = "The SNS topic a notifier step publishes to (steps.<step>.topic_arn), or null."
  type        = string
  default     = null
}

variable "alarm_topic_arn" {
  description = "The on-call SNS topic: alarms notify it, and the framework publishes every rejected message to it."
  type        = string
}

variable "kms_key_arn" {
  description = "The pipeline's KMS key: encrypts the log group and the Lambda's environment, and the buckets, topics and secrets the step uses."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the Lambda's log group."
  type        = number
  default     = 365
}

variable "oldest_message_alarm_seconds" {
  description = "Alarm when the oldest message in the queue is older than this."
  type        = number
  default     = 3600
}

variable "variables" {
  description = "More environment variables of the Lambda (ETL__SECTION__KEY overrides of the configuration files)."
  type        = map(string)
  default     = {}
}
