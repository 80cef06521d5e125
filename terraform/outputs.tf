output "user_url" {
  description = "User gateway (public): business routes, e.g. /api/products."
  value       = "http://${google_compute_instance.stack.network_interface[0].access_config[0].nat_ip}:8080"
}

output "control_url" {
  description = "Control gateway and console, reachable from control_allowed_cidrs; needs a token (see login_command)."
  value       = "http://${google_compute_instance.stack.network_interface[0].access_config[0].nat_ip}:8081"
}

output "grafana_url" {
  description = "Grafana when observability_allowed_cidrs lets you in; otherwise open grafana_tunnel_command and use http://localhost:3000."
  value       = "http://${google_compute_instance.stack.network_interface[0].access_config[0].nat_ip}:3000"
}

output "grafana_tunnel_command" {
  description = "Forwards Grafana to localhost:3000 through IAP (the observability path is not public)."
  value       = "gcloud compute ssh ${google_compute_instance.stack.name} --zone ${var.zone} --project ${var.project_id} --tunnel-through-iap -- -N -L 3000:localhost:3000 -L 9090:localhost:9090 -L 8082:localhost:8082"
}

output "login_command" {
  description = "Prints the URLs and a learner token signed with the secret from Secret Manager."
  value       = "gcloud compute ssh ${google_compute_instance.stack.name} --zone ${var.zone} --project ${var.project_id} --tunnel-through-iap -- sudo bash /opt/observastack/scripts/compose-env.sh login"
}

output "jwt_secret_id" {
  description = "Secret Manager secret holding the JWT signing secret."
  value       = google_secret_manager_secret.stack["jwt-secret"].secret_id
}
