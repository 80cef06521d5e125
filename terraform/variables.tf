variable "project_id" {
  description = "GCP project to deploy into (billing enabled; the APIs the module uses are enabled by it, see local.apis in main.tf)."
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
  description = "Boot disk size in GB: the Docker build (its Rust build layers take several GB), images, PostgreSQL, Prometheus, Loki and Tempo data."
  type        = number
  default     = 50
}

variable "subnet_cidr" {
  description = "CIDR of the subnet the VM lives in."
  type        = string
  default     = "10.42.0.0/24"
}

variable "repo_url" {
  description = "Git repository the VM checks out and builds the stack from (docker-compose.yml, deploy/Dockerfile, the Prometheus/Grafana configuration)."
  type        = string
  default     = "https://github.com/observastack/observastack.git"

  validation {
    condition     = can(regex("^https://[^\\s'\"]+$", var.repo_url))
    error_message = "repo_url must be an https:// Git URL."
  }
}

variable "git_ref" {
  description = "Branch, tag or commit of repo_url to build and run. Changing it takes effect at the VM's next boot (the startup script fetches it again)."
  type        = string
  default     = "main"

  validation {
    condition     = can(regex("^[A-Za-z0-9._/-]+$", var.git_ref))
    error_message = "git_ref must be a branch, tag or commit (letters, digits, '.', '_', '/', '-')."
  }
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

variable "domain" {
  description = "A DNS name pointed at the VM's static address (output external_ip), e.g. \"sre.example.org\". When set, Caddy (Ubuntu's package) serves the control path over HTTPS on :443 with a Let's Encrypt certificate (port 80 opens to everyone for the ACME challenge and the redirect only) and the console's cookie is Secure. Empty: the control path is plain HTTP on :8081."
  type        = string
  default     = ""

  validation {
    condition     = var.domain == "" || can(regex("^([a-z0-9]([a-z0-9-]*[a-z0-9])?\\.)+[a-z]{2,}$", var.domain))
    error_message = "domain must be a lowercase DNS name such as sre.example.org, or empty."
  }
}

variable "jwt_retired_public_keys" {
  description = "Public keys rotated out and still accepted until their cut-off, in the public keys format: for each, `# not-after: <RFC 3339>` and its PEM block (see README.md, Rotating the token key). Empty: only the current key is accepted."
  type        = string
  default     = ""
}
