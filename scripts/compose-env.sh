#!/usr/bin/env bash
# Secrets for the Docker Compose stack, generated on this machine, never shipped:
#   bash scripts/compose-env.sh            creates .env (mode 0600), adding only what is missing:
#                                          the Ed25519 token keys, a `service` token for the fact
#                                          emitters (renewed when it nears expiry), the Grafana
#                                          admin, PostgreSQL and facts-reader passwords
#   bash scripts/compose-env.sh token [learner|instructor|service] [hours]
#                                          prints a token signed with .env's private key (EdDSA,
#                                          the claims `observastack token` writes)
#   bash scripts/compose-env.sh login      prints the console's one-time login URL (valid 24 h,
#                                          usable once), the other URLs and a learner token
#   bash scripts/compose-env.sh rotate [hours]
#                                          replaces the private key; the old public key stays
#                                          accepted for [hours] (default 24), then tokens it
#                                          signed are refused. Then `docker compose up -d`.
# The keys in .env (each `base64:` + the PEM text base64-encoded, one line):
#   OBSERVASTACK_JWT_PRIVATE_KEY   PKCS#8 private key; docker-compose.yml gives it to the
#                                  orchestrator alone (it mints console sessions and its own
#                                  instructor tokens)
#   OBSERVASTACK_JWT_PUBLIC_KEYS   the public keys every service verifies with: `# kid:` and,
#                                  for a rotated-out key, `# not-after:` before each PEM block
#   OBSERVASTACK_SERVICE_TOKEN     the fact emitters' token (role `service`: facts only)
# OBSERVASTACK_ENV_FILE overrides the path of .env; OBSERVASTACK_CONTROL_URL (default
# http://localhost:8081) is the control gateway as the browser reaches it, and
# OBSERVASTACK_HOST (default localhost) the host of the other printed URLs.
set -euo pipefail
cd "$(dirname "$0")/.."
env_file="${OBSERVASTACK_ENV_FILE:-.env}"

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# Passwords .env must hold, with how many random bytes (hex-encoded) each gets.
passwords="GRAFANA_ADMIN_PASSWORD:16 POSTGRES_PASSWORD:16 FACTS_DB_PASSWORD:16"
# A service token is renewed when it has less than this left (seconds), and lasts a year.
renew_within=$((30 * 24 * 3600))
service_token_hours=$((365 * 24))

# Scratch space for key files (openssl signs from files only); mode 0700, removed on exit.
scratch=$(umask 077 && mktemp -d "${TMPDIR:-/tmp}/observastack-keys.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

value_of() { sed -n "s/^$1=//p" "$env_file" | tail -n 1; }
b64() { openssl base64 -A; }
unb64() { openssl base64 -d -A; }
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# Replaces (or adds) KEY=VALUE in .env, keeping its mode.
set_env() {
  local tmp
  tmp=$(umask 077 && mktemp "$env_file.XXXXXX")
  { grep -v "^$1=" "$env_file" || true; printf '%s=%s\n' "$1" "$2"; } >"$tmp"
  chmod 600 "$tmp"
  mv "$tmp" "$env_file"
}

# `kid` of the public key PEM on stdin: the first 16 hex digits of SHA-256 over its DER (as
# service-kit computes it).
kid_of() { openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | od -An -tx1 | tr -d ' \n' | cut -c1-16; }

# The private key PEM (decoded from .env) into a file of the scratch dir; prints its path.
private_key_file() {
  [ -r "$env_file" ] || { echo "$env_file is missing: run bash scripts/compose-env.sh first" >&2; exit 1; }
  local value
  value=$(value_of OBSERVASTACK_JWT_PRIVATE_KEY)
  [ -n "$value" ] || { echo "OBSERVASTACK_JWT_PRIVATE_KEY is missing from $env_file: run bash scripts/compose-env.sh" >&2; exit 1; }
  printf '%s' "${value#base64:}" | unb64 >"$scratch/private.pem"
  openssl pkey -in "$scratch/private.pem" -noout 2>/dev/null \
    || { echo "OBSERVASTACK_JWT_PRIVATE_KEY in $env_file is not a PKCS#8 private key" >&2; exit 1; }
  printf '%s' "$scratch/private.pem"
}

# A JWT of the given claims (JSON), EdDSA-signed with .env's private key under its kid.
sign() {
  local key kid header payload signature
  key=$(private_key_file)
  kid=$(openssl pkey -in "$key" -pubout | kid_of)
  header=$(printf '{"typ":"JWT","alg":"EdDSA","kid":"%s"}' "$kid" | b64url)
  payload=$(printf '%s' "$1" | b64url)
  printf '%s.%s' "$header" "$payload" >"$scratch/message"
  signature=$(openssl pkeyutl -sign -rawin -inkey "$key" -in "$scratch/message" | b64url)
  printf '%s.%s.%s\n' "$header" "$payload" "$signature"
}

# Same claims as service-kit's JwtSigner::mint: issuer and audience `observastack`, a role.
mint() {
  local role="$1" hours="$2" subject="${3:-$1}" now exp
  case "$role" in learner|instructor|service) ;; *) echo "role must be learner, instructor or service, not '$role'" >&2; exit 2 ;; esac
  case "$hours" in ''|*[!0-9]*) echo "hours must be a whole number, not '$hours'" >&2; exit 2 ;; esac
  now=$(date +%s)
  exp=$((now + hours * 3600))
  sign "$(printf '{"sub":"%s","role":"%s","aud":"observastack","iss":"observastack","iat":%d,"nbf":%d,"exp":%d}' \
    "$subject" "$role" "$now" "$now" "$exp")"
}

# A new key pair into .env: the private key, and the public keys with the new key first,
# followed by `$1` (earlier keys, already in the public keys format) if given.
new_key_pair() {
  local kid public
  rm -f "$scratch/new.pem"
  openssl genpkey -algorithm ed25519 -out "$scratch/new.pem" 2>/dev/null
  public=$(openssl pkey -in "$scratch/new.pem" -pubout)
  kid=$(printf '%s\n' "$public" | kid_of)
  set_env OBSERVASTACK_JWT_PRIVATE_KEY "base64:$(b64 <"$scratch/new.pem")"
  set_env OBSERVASTACK_JWT_PUBLIC_KEYS "base64:$(printf '# kid: %s\n%s\n%s' "$kid" "$public" "${1:-}" | b64)"
  printf '%s' "$kid"
}

# Field `$2` (a number) of a JWT's payload `$1`; empty when absent.
claim() {
  local payload=${1#*.}
  payload=${payload%%.*}
  payload=$(printf '%s' "$payload" | tr -- '-_' '+/')
  case $((${#payload} % 4)) in 2) payload="$payload==" ;; 3) payload="$payload=" ;; esac
  printf '%s' "$payload" | unb64 2>/dev/null | sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p"
}

# The service token, minted again when missing, near expiry or signed by another key.
ensure_service_token() {
  local token kid header_kid exp
  token=$(value_of OBSERVASTACK_SERVICE_TOKEN)
  kid=$(openssl pkey -in "$(private_key_file)" -pubout | kid_of)
  if [ -n "$token" ]; then
    header_kid=$(claim "x.${token%%.*}" kid)
    exp=$(claim "$token" exp)
    if [ "$header_kid" = "$kid" ] && [ -n "$exp" ] && [ "$exp" -gt $(($(date +%s) + renew_within)) ]; then
      return 1
    fi
  fi
  set_env OBSERVASTACK_SERVICE_TOKEN "$(mint service "$service_token_hours" fact-emitter)"
}

create_env() {
  umask 077
  if [ ! -e "$env_file" ]; then
    printf '# Generated by scripts/compose-env.sh on %s. Keep it private; never commit it.\n' \
      "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$env_file"
  fi
  chmod 600 "$env_file"
  # Only missing values are added: an existing password is never replaced (PostgreSQL's
  # volume depends on it), nor an existing key (issued tokens depend on it).
  local added="" entry key
  for entry in $passwords; do
    key=${entry%%:*}
    if ! grep -q "^$key=" "$env_file"; then
      printf '%s=%s\n' "$key" "$(random_hex "${entry##*:}")" >>"$env_file"
      added="$added $key"
    fi
  done
  if grep -q '^OBSERVASTACK_JWT_SECRET=' "$env_file"; then
    # Earlier versions shared one HS256 secret with every service; tokens it signed could
    # never be accepted again, so it simply goes.
    grep -v '^OBSERVASTACK_JWT_SECRET=' "$env_file" >"$env_file.new" || true
    chmod 600 "$env_file.new"
    mv "$env_file.new" "$env_file"
    echo "$env_file: removed the shared OBSERVASTACK_JWT_SECRET of an earlier version (replaced by the key pair)" >&2
  fi
  if [ -z "$(value_of OBSERVASTACK_JWT_PRIVATE_KEY)" ]; then
    new_key_pair >/dev/null
    added="$added OBSERVASTACK_JWT_PRIVATE_KEY OBSERVASTACK_JWT_PUBLIC_KEYS"
  else
    check_keys
  fi
  if ensure_service_token; then
    added="$added OBSERVASTACK_SERVICE_TOKEN"
  fi
  if [ -n "$added" ]; then
    echo "$env_file: generated$added" >&2
  else
    echo "$env_file: every secret exists; nothing changed" >&2
  fi
}

# The private key's public half must be a current key of OBSERVASTACK_JWT_PUBLIC_KEYS, or
# every token the orchestrator mints would be refused.
check_keys() {
  local kid public
  kid=$(openssl pkey -in "$(private_key_file)" -pubout | kid_of)
  public=$(value_of OBSERVASTACK_JWT_PUBLIC_KEYS)
  if ! printf '%s' "${public#base64:}" | unb64 2>/dev/null | grep -q "^# kid: $kid\$"; then
    echo "OBSERVASTACK_JWT_PUBLIC_KEYS in $env_file does not hold the private key's public half ($kid);" \
      "remove both keys from $env_file to start afresh (every issued token stops working)" >&2
    exit 1
  fi
}

# RFC 3339 (UTC) of a Unix time, with GNU or BSD date.
rfc3339() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -r "$1" +%Y-%m-%dT%H:%M:%SZ; }

rotate() {
  local hours="$1" old_public old_kid cut_off kept="" new_kid
  case "$hours" in ''|*[!0-9]*) echo "hours must be a whole number, not '$hours'" >&2; exit 2 ;; esac
  old_public=$(openssl pkey -in "$(private_key_file)" -pubout)
  old_kid=$(printf '%s\n' "$old_public" | kid_of)
  cut_off=$(rfc3339 $(($(date +%s) + hours * 3600)))
  # Keys rotated out before and still in their grace period stay; the current one joins them.
  kept=$(printf '%s' "$(value_of OBSERVASTACK_JWT_PUBLIC_KEYS | sed 's/^base64://')" | unb64 \
    | awk -v old="$old_kid" -v now="$(rfc3339 "$(date +%s)")" '
        /^# kid: /      { kid = $3; next }
        /^# not-after: / { after = $3; next }
        /BEGIN PUBLIC KEY/ { block = $0 "\n"; inblock = 1; next }
        inblock         { block = block $0 "\n"; if ($0 ~ /END PUBLIC KEY/) {
                            if (kid != old && after != "" && after > now)
                              printf "# kid: %s\n# not-after: %s\n%s", kid, after, block
                            inblock = 0; kid = ""; after = "" } }')
  new_kid=$(new_key_pair "$(printf '# kid: %s\n# not-after: %s\n%s\n%s' "$old_kid" "$cut_off" "$old_public" "$kept")")
  ensure_service_token || true
  echo "$env_file: new key $new_kid; the old key $old_kid is accepted until $cut_off, then refused." >&2
  echo "Recreate the containers so they read the new keys: docker compose up -d" >&2
}

login_code() {
  local now
  now=$(date +%s)
  sign "$(printf '{"sub":"learner","aud":"observastack-console-login","iss":"observastack","iat":%d,"nbf":%d,"exp":%d,"jti":"%s"}' \
    "$now" "$now" $((now + 24 * 3600)) "$(uuid4)")"
}

# A random UUID (version 4 layout), for a login code's single-use `jti`.
uuid4() {
  local h
  h=$(random_hex 16)
  printf '%s-%s-4%s-%x%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" $((0x${h:16:1} & 3 | 8)) "${h:17:3}" "${h:20:12}"
}

case "${1:-create}" in
  create) create_env ;;
  token) mint "${2:-learner}" "${3:-12}" ;;
  rotate) rotate "${2:-24}" ;;
  login)
    token=$(mint learner 12)
    # Same claims as orchestrator::console::mint_login_code: the console's own audience
    # (never an API token), 24 hours, a `jti` the orchestrator records on first use.
    code=$(login_code)
    host="${OBSERVASTACK_HOST:-localhost}"
    control="${OBSERVASTACK_CONTROL_URL:-http://$host:8081}"
    cat <<MSG
ObservaStack (Docker Compose)
  console (one-time login link; it works once, then the browser keeps a cookie):
  ${control%/}/console/login?code=$code
  user gateway           http://$host:8080/api/products
  control gateway        ${control%/}   (Authorization: Bearer <token below>)
  observability gateway  http://$host:8082/api/services
  service health         http://$host:8082/facts/dashboard
  Grafana                http://$host:3000   (anonymous read-only; admin password in $env_file)
  learner token (12 h):
  $token
MSG
    ;;
  *) echo "usage: $0 [create | token [learner|instructor|service] [hours] | login | rotate [hours]]" >&2; exit 2 ;;
esac
