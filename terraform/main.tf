# ObservaStack on one GCP VM running the Docker Compose stack, built on the VM from a checkout of
# var.repo_url at var.git_ref, with the three paths kept apart by firewall rules: user traffic
# public, control restricted to allowed addresses, observability not public (IAP tunnel or
# allowed addresses only).

locals {
  tag = var.name
  # Every API a resource or an output's command here needs (deploy/checks/terraform.py maps each
  # resource type to its API). Service Usage itself, which enables them, is on in every project.
  apis = [
    "compute.googleapis.com",              # network, firewall rules, address, VM
    "secretmanager.googleapis.com",        # the stack's secrets and their IAM bindings
    "iam.googleapis.com",                  # the VM's service account
    "cloudresourcemanager.googleapis.com", # the project-level IAM binding (log writer)
    "iap.googleapis.com",                  # `gcloud compute ssh --tunnel-through-iap` in the outputs
  ]
  # Google's IAP TCP-forwarding range: SSH (and tunnels to Grafana) only through IAP.
  iap_range = "35.235.240.0/20"

  # The stack's URLs as a browser reaches them. Grafana and the Service Health view are on the
  # observability path: direct only when observability_allowed_cidrs lets someone in, otherwise
  # through the IAP tunnel (grafana_tunnel_command) on localhost.
  address            = google_compute_address.stack.address
  observability_host = length(var.observability_allowed_cidrs) > 0 ? local.address : "localhost"
  user_url           = "http://${local.address}:8080"
  # With a domain, the control path is HTTPS through Caddy on :443; without, plain :8081.
  https              = var.domain != ""
  control_url        = local.https ? "https://${var.domain}" : "http://${local.address}:8081"
  grafana_url        = "http://${local.observability_host}:3000"
  service_health_url = "http://${local.observability_host}:8082/facts/dashboard"
}

resource "google_project_service" "apis" {
  for_each           = toset(local.apis)
  service            = each.value
  disable_on_destroy = false
}

# --- Network ---------------------------------------------------------------------------------

resource "google_compute_network" "vpc" {
  name                    = "${var.name}-vpc"
  auto_create_subnetworks = false
  depends_on              = [google_project_service.apis]
}

resource "google_compute_subnetwork" "subnet" {
  name                     = "${var.name}-subnet"
  network                  = google_compute_network.vpc.id
  region                   = var.region
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true
}

resource "google_compute_firewall" "user" {
  name          = "${var.name}-user-path"
  description   = "User path: the user gateway (business routes only)."
  network       = google_compute_network.vpc.id
  direction     = "INGRESS"
  source_ranges = var.user_allowed_cidrs
  target_tags   = [local.tag]

  allow {
    protocol = "tcp"
    ports    = ["8080"]
  }
}

resource "google_compute_firewall" "control" {
  name          = "${var.name}-control-path"
  description   = "Control path: the control gateway (console, orchestrator API, /config; JWT)."
  network       = google_compute_network.vpc.id
  direction     = "INGRESS"
  source_ranges = var.control_allowed_cidrs
  target_tags   = [local.tag]

  allow {
    protocol = "tcp"
    ports    = ["8081"]
  }
}

resource "google_compute_firewall" "control_https" {
  count         = local.https ? 1 : 0
  name          = "${var.name}-control-https"
  description   = "Control path over HTTPS: Caddy on :443 in front of the control gateway."
  network       = google_compute_network.vpc.id
  direction     = "INGRESS"
  source_ranges = var.control_allowed_cidrs
  target_tags   = [local.tag]

  allow {
    protocol = "tcp"
    ports    = ["443"]
  }
}

# Let's Encrypt's HTTP-01 challenge comes from anywhere; Caddy answers it on :80 and redirects
# everything else to HTTPS, which stays restricted to control_allowed_cidrs.
resource "google_compute_firewall" "acme" {
  count         = local.https ? 1 : 0
  name          = "${var.name}-acme"
  description   = "ACME HTTP-01 challenge and the redirect to HTTPS (Caddy on :80); nothing else is served there."
  network       = google_compute_network.vpc.id
  direction     = "INGRESS"
  source_ranges = ["0.0.0.0/0"]
  target_tags   = [local.tag]

  allow {
    protocol = "tcp"
    ports    = ["80"]
  }
}

resource "google_compute_firewall" "observability" {
  count         = length(var.observability_allowed_cidrs) > 0 ? 1 : 0
  name          = "${var.name}-observability-path"
  description   = "Observability path: Grafana, Prometheus and the observability gateway (read-only)."
  network       = google_compute_network.vpc.id
  direction     = "INGRESS"
  source_ranges = var.observability_allowed_cidrs
  target_tags   = [local.tag]

  allow {
    protocol = "tcp"
    ports    = ["3000", "8082", "9090"]
  }
}

resource "google_compute_firewall" "iap" {
  name          = "${var.name}-iap"
  description   = "SSH and port tunnels through Identity-Aware Proxy only."
  network       = google_compute_network.vpc.id
  direction     = "INGRESS"
  source_ranges = [local.iap_range]
  target_tags   = [local.tag]

  allow {
    protocol = "tcp"
    ports    = ["22", "3000", "8082", "9090"]
  }
}

# --- Secrets (generated here, kept in Secret Manager; never defaults) ------------------------

# The stack's token keys: the orchestrator alone mints with the private key, every service
# verifies with the public keys (docker-compose.yml hands them out).
resource "tls_private_key" "jwt" {
  algorithm = "ED25519"
}

resource "random_password" "grafana_admin" {
  length  = 32
  special = false
}

resource "random_password" "postgres" {
  length  = 32
  special = false
}

resource "random_password" "facts_db" {
  length  = 32
  special = false
}

locals {
  # Secret Manager id suffix => value; startup.sh.tftpl writes each into .env under its key.
  secrets = {
    jwt-private-key = tls_private_key.jwt.private_key_pem
    # The current public key, then keys rotated out and still in their grace period.
    jwt-public-keys = join("\n", compact([tls_private_key.jwt.public_key_pem, var.jwt_retired_public_keys]))
    grafana-admin   = random_password.grafana_admin.result
    postgres        = random_password.postgres.result
    facts-db        = random_password.facts_db.result
  }
}

resource "google_secret_manager_secret" "stack" {
  for_each  = local.secrets
  secret_id = "${var.name}-${each.key}"

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "stack" {
  for_each    = local.secrets
  secret      = google_secret_manager_secret.stack[each.key].id
  secret_data = each.value
}

# --- VM ----------------------------------------------------------------------------------------

resource "google_service_account" "vm" {
  account_id   = "${var.name}-vm"
  display_name = "ObservaStack VM"
  depends_on   = [google_project_service.apis]
}

resource "google_secret_manager_secret_iam_member" "vm" {
  for_each  = local.secrets
  secret_id = google_secret_manager_secret.stack[each.key].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.vm.email}"
}

resource "google_project_iam_member" "vm_logging" {
  project    = var.project_id
  role       = "roles/logging.logWriter"
  member     = "serviceAccount:${google_service_account.vm.email}"
  depends_on = [google_project_service.apis]
}

# A static address: the URLs in .env and in the outputs survive stopping and starting the VM.
resource "google_compute_address" "stack" {
  name       = "${var.name}-ip"
  region     = var.region
  depends_on = [google_project_service.apis]
}

resource "google_compute_instance" "stack" {
  name         = "${var.name}-vm"
  machine_type = var.machine_type
  zone         = var.zone
  tags         = [local.tag]

  boot_disk {
    initialize_params {
      image = "ubuntu-os-cloud/ubuntu-2404-lts-amd64"
      size  = var.disk_size_gb
      type  = "pd-balanced"
    }
  }

  network_interface {
    subnetwork = google_compute_subnetwork.subnet.id
    access_config {
      nat_ip = google_compute_address.stack.address
    }
  }

  service_account {
    email  = google_service_account.vm.email
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  metadata = {
    enable-oslogin = "TRUE"
    startup-script = templatefile("${path.module}/startup.sh.tftpl", {
      repo_url           = var.repo_url
      git_ref            = var.git_ref
      secret_prefix      = var.name
      control_url        = local.control_url
      domain             = var.domain
      grafana_url        = local.grafana_url
      service_health_url = local.service_health_url
    })
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_version.stack,
    google_secret_manager_secret_iam_member.vm,
  ]
}
