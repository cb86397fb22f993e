variable "environment" {
  description = "The environment (dev, prod, …, or local for the emulator). Every resource name carries it."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9]*(-[a-z0-9]+)*$", var.environment))
    error_message = "An environment name is lowercase letters, digits and single hyphens, starting with a letter."
  }
}

variable "personal" {
  description = "Whether the environment is personal (dev): each developer deploys their own stack from their own Terraform workspace, and every name carries the workspace."
  type        = bool
  default     = false
}

variable "workspace" {
  description = "The Terraform workspace (terraform.workspace). A personal environment takes it as the developer's name; any other environment runs only in the default workspace."
  type        = string
  default     = "default"

  # Checked by terraform_data.workspace (main.tf), not here: a variable's
  # validation would also refuse `terraform destroy`, and with it the way
  # out of a stack applied from the wrong workspace.
}

variable "artifacts" {
  description = <<-EOT
    Where the Lambda packages come from: a release in the artifacts bucket
    (bucket, prefix, version: s3://<bucket>/<prefix>/<version>/<step>.zip),
    or a local directory of <step>.zip files (dir: what `cargo xtask package`
    writes to dist/).
  EOT
  type = object({
    bucket  = optional(string)
    prefix  = optional(string)
    version = optional(string)
    dir     = optional(string)
  })

  validation {
    condition     = var.artifacts.dir != null || (var.artifacts.bucket != null && var.artifacts.prefix != null && var.artifacts.version != null)
    error_message = "Give artifacts either as bucket, prefix and version (a release) or as dir (local packages)."
  }
}

variable "architecture" {
  description = "The Lambdas' instruction set: arm64 (what releases build) or x86_64."
  type        = string
  default     = "arm64"
}

variable "aws_endpoint" {
  description = "The AWS emulator the Lambdas talk to (the local environment); null in AWS."
  type        = string
  default     = null
}

variable "require_tls" {
  description = "Deny every bucket request that is not over TLS. Only the local environment turns it off: its emulator speaks plain HTTP on loopback, and enforces bucket policies."
  type        = bool
  default     = true
}

variable "force_destroy" {
  description = "Let terraform destroy delete non-empty buckets and secrets at once (the local environment only)."
  type        = bool
  default     = false
}

variable "client_principals" {
  description = "The client's IAM principals, in any AWS account (role, user or account root ARNs), that deliver the input: an S3 source lets them put files under landing/ of the drop bucket, an HTTP source lets them assume the submit role. An SFTP source polls the client and uses none. The client's own IAM must allow the same actions."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for p in var.client_principals : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(root|role/.+|user/.+)$", p))])
    error_message = "Each client principal is an IAM ARN: arn:aws:iam::<12-digit account id>:root, …:role/<name> or …:user/<name>."
  }
}

variable "oncall_emails" {
  description = "E-mail addresses subscribed to the on-call topic (each confirms its subscription)."
  type        = list(string)
  default     = []
}

variable "log_retention_days" {
  description = "Retention of every log group."
  type        = number
  default     = 365
}

variable "oldest_message_alarm_seconds" {
  description = "Alarm when a step's oldest queued message is older than this."
  type        = number
  default     = 3600
}

variable "raw_retention_days" {
  description = "How long raw input (raw/ in the data bucket) is kept: runs can be replayed from it until then."
  type        = number
  default     = 730
}

variable "report_retention_days" {
  description = "How long reports and exports (reports/, exports/) are kept."
  type        = number
  default     = 400
}

variable "state_retention_days" {
  description = "How long run state and the redelivery ledger (runs/, state/) are kept; far longer than SQS keeps a message (14 days at most)."
  type        = number
  default     = 90
}

variable "landing_retention_days" {
  description = "How long landed files (landing/) are kept; the validator copies each one into raw/ first."
  type        = number
  default     = 30
}

variable "noncurrent_version_retention_days" {
  description = "How long overwritten or deleted object versions are kept."
  type        = number
  default     = 30
}

variable "api_rate_limit" {
  description = "Steady-state requests per second the submission API accepts (an HTTP source only)."
  type        = number
  default     = 10
}

variable "api_burst_limit" {
  description = "Burst of requests the submission API accepts (an HTTP source only)."
  type        = number
  default     = 20
}
