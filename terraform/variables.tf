variable "project_id" {
  description = "GCP project to deploy into (billing enabled; Compute Engine and Secret Manager APIs are enabled by this module)."
  type        = string
}

variable "region" {
  description = "Region of the subnet and the VM."
  type        = string
  default     = "us-central1"
}

variable "zone" {
  description = "Zone of the VM."
  type        = string
  default     = "us-central1-a"
}

variable "name" {
  description = "Prefix of every resource name (lowercase letters, digits, hyphens)."
  type        = string
  default     = "observastack"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name must be 2-21 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "machine_type" {
  description = "VM machine type. e2-standard-2 (2 vCPU, 8 GB) runs the whole stack with a scenario's load; see README.md for its cost."
  type        = string
  default     = "e2-standard-2"
}

variable "disk_size_gb" {
  description = "Boot disk size in GB (images, PostgreSQL, Prometheus, Loki and Tempo data)."
  type        = number
  default     = 30
}

variable "subnet_cidr" {
  description = "CIDR of the subnet the VM lives in."
  type        = string
  default     = "10.42.0.0/24"
}

variable "observastack_version" {
  description = "ObservaStack release to run: the git tag checked out on the VM and the version of the published images (OBSERVASTACK_VERSION)."
  type        = string
  default     = "0.1.0"
}

variable "repository_url" {
  description = "Git repository holding docker-compose.yml and the Prometheus/Grafana configuration."
  type        = string
  default     = "https://github.com/observastack/observastack.git"
}

variable "user_allowed_cidrs" {
  description = "Who may reach the user gateway (:8080), the business routes. Public by default: that is the path users take."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "control_allowed_cidrs" {
  description = "Who may reach the control gateway (:8081: console, orchestrator API, /config), e.g. [\"203.0.113.7/32\"]. Required; the control path is never public."
  type        = list(string)

  validation {
    condition     = length(var.control_allowed_cidrs) > 0 && !contains(var.control_allowed_cidrs, "0.0.0.0/0")
    error_message = "control_allowed_cidrs must list the addresses of the learners/instructors, never 0.0.0.0/0."
  }
}

variable "observability_allowed_cidrs" {
  description = "Who may reach Grafana (:3000), Prometheus (:9090) and the observability gateway (:8082) directly. Empty by default: use an IAP SSH tunnel (see outputs)."
  type        = list(string)
  default     = []

  validation {
    condition     = !contains(var.observability_allowed_cidrs, "0.0.0.0/0")
    error_message = "observability_allowed_cidrs must not be 0.0.0.0/0: the observability path is not public."
  }
}
