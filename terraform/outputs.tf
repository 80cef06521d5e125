output "external_ip" {
  description = "The VM's static external address (kept while the VM is stopped)."
  value       = google_compute_address.stack.address
}

output "user_url" {
  description = "User gateway (public): the shop's business routes."
  value       = "${local.user_url}/api/products"
}

output "console_url" {
  description = "The console on the control gateway, reachable from control_allowed_cidrs; sign in with the URL login_command prints."
  value       = "${local.control_url}/console/"
}

output "login_command" {
  description = "Prints a one-time console login URL for this VM's address, the other URLs and a learner token (signed with the secret from Secret Manager)."
  value       = "gcloud compute ssh ${google_compute_instance.stack.name} --zone ${google_compute_instance.stack.zone} --project ${var.project_id} --tunnel-through-iap -- sudo env OBSERVASTACK_CONTROL_URL=${local.control_url} OBSERVASTACK_HOST=${google_compute_address.stack.address} bash /opt/observastack/scripts/compose-env.sh login"
}

output "grafana_url" {
  description = "Grafana as the console embeds it: the VM's address when observability_allowed_cidrs lets you in, otherwise localhost through grafana_tunnel_command."
  value       = local.grafana_url
}

output "service_health_url" {
  description = "The Service Health view, on the observability path like Grafana."
  value       = local.service_health_url
}

output "grafana_tunnel_command" {
  description = "Forwards Grafana (3000), Prometheus (9090) and the observability gateway (8082) to localhost through IAP (the observability path is not public)."
  value       = "gcloud compute ssh ${google_compute_instance.stack.name} --zone ${google_compute_instance.stack.zone} --project ${var.project_id} --tunnel-through-iap -- -N -L 3000:localhost:3000 -L 9090:localhost:9090 -L 8082:localhost:8082"
}

output "startup_log_command" {
  description = "Follows the startup script (Docker install, checkout, image build, docker compose up); the first boot builds for 15-30 minutes."
  value       = "gcloud compute ssh ${google_compute_instance.stack.name} --zone ${google_compute_instance.stack.zone} --project ${var.project_id} --tunnel-through-iap -- sudo journalctl -t observastack-startup -f"
}

output "jwt_private_key_id" {
  description = "Secret Manager secret holding the token signing key (Ed25519, PKCS#8 PEM); only the orchestrator container gets it."
  value       = google_secret_manager_secret.stack["jwt-private-key"].secret_id
}

output "jwt_public_keys_id" {
  description = "Secret Manager secret holding the public keys every service verifies tokens with."
  value       = google_secret_manager_secret.stack["jwt-public-keys"].secret_id
}
