#!/usr/bin/env bash
# Runs the Docker Compose stack in a cloud workspace and opens its console. One script for every
# cloud IDE: GitHub Codespaces and Gitpod Flex/Ona start it from .devcontainer/devcontainer.json,
# Gitpod Classic from .gitpod.yml's tasks.
#   bash .devcontainer/start.sh build   builds the images from this checkout (nothing is
#                                       published); no secrets, nothing started, so prebuilds run it
#   bash .devcontainer/start.sh         generates .env, points the console at this workspace's
#                                       forwarded URLs, starts the stack and prints the login URL
# Forwarded URLs: Gitpod Classic `gp url PORT`; Codespaces
# https://$CODESPACE_NAME-PORT.$GITHUB_CODESPACES_PORT_FORWARDING_DOMAIN; anything else
# http://localhost:PORT (VS Code's port forwarding, Ona's included, or a local dev container).
set -euo pipefail
cd "$(dirname "$0")/.."

wait_for_docker() {
  # The docker-in-docker feature starts dockerd with the container, possibly after this script.
  for _ in $(seq 1 90); do
    docker info >/dev/null 2>&1 && return 0
    sleep 2
  done
  echo "start.sh: the Docker engine did not answer within 3 minutes" >&2
  exit 1
}

# Replaces (or adds) KEY=VALUE in .env; compose-env.sh owns the secrets and never touches these.
set_env() {
  local key=$1 value=$2
  umask 077
  { grep -v "^$key=" .env || true; printf '%s=%s\n' "$key" "$value"; } >.env.new
  mv .env.new .env
}

build() {
  wait_for_docker
  # Compose interpolates the whole file even to build and refuses without the secrets. These
  # throwaway ones stay outside the checkout: a prebuild is shared by every workspace started
  # from it, so it must not carry the secrets of one.
  local env_file
  env_file=$(mktemp)
  OBSERVASTACK_ENV_FILE="$env_file" bash scripts/compose-env.sh 2>/dev/null
  docker compose --env-file "$env_file" build || { rm -f "$env_file"; exit 1; }
  rm -f "$env_file"
}

up() {
  wait_for_docker
  bash scripts/compose-env.sh
  local ancestors="" preview=""
  if [ -n "${CODESPACE_NAME:-}" ] && [ -n "${GITHUB_CODESPACES_PORT_FORWARDING_DOMAIN:-}" ]; then
    url() { printf 'https://%s-%s.%s' "$CODESPACE_NAME" "$1" "$GITHUB_CODESPACES_PORT_FORWARDING_DOMAIN"; }
    # No frame ancestors: Codespaces' preview (VS Code's Simple Browser) is a webview on
    # *.vscode-cdn.net, another site than *.app.github.dev, where the console's SameSite=Strict
    # session cookie is not sent. The console opens in a browser tab instead.
  elif [ -n "${GITPOD_WORKSPACE_URL:-}" ] && command -v gp >/dev/null 2>&1; then
    url() { gp url "$1"; }
    # Gitpod's preview is a VS Code webview served from a host made per view on the workspace's
    # cluster, https://<hash>.<cluster>, next to the IDE's own https://<workspace-id>.<cluster>
    # ($GITPOD_WORKSPACE_URL); no exact origin names it, so the cluster's subdomains may frame
    # the console (docs/console.md says what that allows).
    local cluster=${GITPOD_WORKSPACE_URL#https://*.}
    case "$cluster" in *.*) ancestors="https://*.$cluster" ;; esac
    preview=gp
    # Gitpod forwards a port only from an address it can reach inside the workspace.
    set_env OBSERVASTACK_BIND 0.0.0.0
  else
    url() { printf 'http://localhost:%s' "$1"; }
  fi
  set_env OBSERVASTACK_CONTROL_URL "$(url 8081)"
  set_env OBSERVASTACK_GRAFANA_URL "$(url 3000)"
  set_env OBSERVASTACK_SERVICE_HEALTH_URL "$(url 8082)/facts/dashboard"
  set_env OBSERVASTACK_FRAME_ANCESTORS "$ancestors"
  export OBSERVASTACK_CONTROL_URL
  OBSERVASTACK_CONTROL_URL=$(url 8081)

  docker compose up -d --wait

  local login login_url
  login=$(bash scripts/compose-env.sh login)
  printf '%s\n' "$login"
  login_url=$(grep -oE 'https?://[^[:space:]]+/console/login\?code=[^[:space:]]+' <<<"$login" | head -n 1 || true)
  echo "A new login URL (each works once): bash scripts/compose-env.sh login"
  if [ -n "$login_url" ] && [ "$preview" = gp ]; then
    gp preview "$login_url"
  fi
}

case "${1:-up}" in
  build) build ;;
  up) up ;;
  *) echo "usage: $0 [build | up]" >&2; exit 2 ;;
esac
