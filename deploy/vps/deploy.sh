#!/usr/bin/env bash
# `make deploy`: the Compose stack on a VPS over SSH (README, "Deploy to a VPS").
#
#   deploy.sh deploy       preflight, ship, `docker compose up -d --wait`, post-check, summary
#   deploy.sh files        preflight without the Docker checks, then ship only (prepare a
#                          VPS before Docker is installed; `deploy` ships again anyway)
#   deploy.sh test-alert   one test alert through the deployed Alertmanager to Discord
#   deploy.sh secrets      create the generated secrets a VPS needs (passwords, basic auth)
#
# Settings (make variables or environment): VPS=user@host (required), DOMAIN, ACME_EMAIL,
# ADMIN_ACCESS=auth|tunnel, IMAGES=remote|local, SSH_PORT, REMOTE_DIR, MIN_FREE_GB,
# DEPLOY_SSH_OPTS (extra ssh options, e.g. -i key).
#
# On the VPS, under REMOTE_DIR (default ~/nghenhan): releases/<time>-<commit>/ (one per
# deploy, the last five kept), current -> the release that runs, secrets/ (0700; each file
# 0400, owned by the user its container runs as). Volumes are Docker's and survive updates.
# No secret is ever printed: they travel inside tar over SSH and are read by no command line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VPS="${VPS:-}"
DOMAIN="${DOMAIN:-}"
ACME_EMAIL="${ACME_EMAIL:-}"
ADMIN_ACCESS="${ADMIN_ACCESS:-auth}"
IMAGES="${IMAGES:-remote}"
SSH_PORT="${SSH_PORT:-22}"
REMOTE_DIR="${REMOTE_DIR:-nghenhan}"
MIN_FREE_GB="${MIN_FREE_GB:-10}"
MIN_COMPOSE="2.24.0" # `!reset` in deploy/vps/compose.yml
SECRETS="${NGH_SECRETS:-$ROOT/secrets}" # NGH_SECRETS: the deploy test keeps its own
KEEP_RELEASES=5

# The secrets the VPS stack mounts, and the uid of the process that reads each one
# (file secrets are bind mounts: the owner on the VPS is the owner in the container).
declare -A SECRET_OWNER=(
  [discord_webhook_url]=65534      # alertmanager (nobody)
  [deadmans_switch_url]=65534
  [deadmans_switch_fail_url]=65534
  [grafana_admin_password]=472     # grafana
  [postgres_password]=10001        # sync-verifier (deploy/Dockerfile); postgres reads it as root
  [admin_basic_auth]=0             # caddy
)
URL_SECRETS=(discord_webhook_url deadmans_switch_url deadmans_switch_fail_url)

log() { printf '\033[1m[deploy]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  cat >&2 <<'EOF'
usage: make deploy VPS=user@host [DOMAIN=monitor.example.com] [ACME_EMAIL=you@example.com]
                   [ADMIN_ACCESS=auth|tunnel] [IMAGES=remote|local] [SSH_PORT=22]
                   [REMOTE_DIR=nghenhan]
       make deploy-test-alert VPS=user@host      one test alert to Discord through the VPS
       make vps-secrets                          create the passwords a VPS needs

  VPS           where to deploy: an SSH destination with Docker Engine and Compose v2
  DOMAIN        a domain whose A/AAAA record points at the VPS: HTTPS from Let's Encrypt;
                without one, https://<host> with a certificate from Caddy's own CA
  ADMIN_ACCESS  auth (default): Prometheus and Alertmanager at /prometheus/ and
                /alertmanager/ behind basic auth; tunnel: not served publicly, reach them
                with ssh -L 9090:127.0.0.1:9090 -L 9093:127.0.0.1:9093 <vps>
  IMAGES        remote (default): build the service image on the VPS; local: build here
                and ship it with docker save | docker load (for VPSes with little memory)
EOF
  exit 2
}

ssh_opts() { echo "-p $SSH_PORT -o BatchMode=yes -o ConnectTimeout=10 ${DEPLOY_SSH_OPTS:-}"; }
# The options are words on purpose (SC2046); remote commands are built here, on purpose (SC2029).
# shellcheck disable=SC2046,SC2029
remote() { ssh $(ssh_opts) "$VPS" "$@"; }
# The host ssh connects to (an alias in ~/.ssh/config resolved by ssh itself).
host_of() {
  local h
  # shellcheck disable=SC2046
  h=$(ssh $(ssh_opts) -G "$VPS" 2>/dev/null | awk '$1 == "hostname" {print $2; exit}')
  [ -n "$h" ] || { h="${VPS#*@}"; h="${h%%:*}"; }
  echo "$h"
}

site_host() { if [ -n "$DOMAIN" ]; then echo "$DOMAIN"; else host_of; fi; }
tls_mode() { if [ -n "$DOMAIN" ]; then echo acme; else echo internal; fi; }

# ---------------------------------------------------------------- preflight

check_settings() {
  [ -n "$VPS" ] || usage
  case "$ADMIN_ACCESS" in auth | tunnel) ;; *) die "ADMIN_ACCESS must be auth or tunnel, not '$ADMIN_ACCESS'" ;; esac
  case "$IMAGES" in remote | local) ;; *) die "IMAGES must be remote or local, not '$IMAGES'" ;; esac
  [[ "$SSH_PORT" =~ ^[0-9]+$ ]] || die "SSH_PORT must be a number, not '$SSH_PORT'"
  [[ "$REMOTE_DIR" =~ ^[A-Za-z0-9._/-]+$ ]] || die "REMOTE_DIR (relative to the remote home, or absolute) may hold letters, digits and ._/- only"
  if [ -n "$DOMAIN" ] && ! [[ "$DOMAIN" =~ ^[A-Za-z0-9.-]+$ ]]; then die "DOMAIN '$DOMAIN' is not a host name"; fi
  if [ -n "$ACME_EMAIL" ] && ! [[ "$ACME_EMAIL" =~ ^[^[:space:]@]+@[A-Za-z0-9.-]+$ ]]; then die "ACME_EMAIL '$ACME_EMAIL' is not an address"; fi
}

needed_secrets() {
  local s
  for s in "${!SECRET_OWNER[@]}"; do
    [ "$s" = admin_basic_auth ] && [ "$ADMIN_ACCESS" != auth ] && continue
    echo "$s"
  done | sort
}

# Every secret present and not empty; the URLs real (the bundled sink is not deployed).
check_local_secrets() {
  local s missing=() local_urls=()
  for s in $(needed_secrets); do
    [ -s "$SECRETS/$s" ] || missing+=("secrets/$s")
  done
  for s in "${URL_SECRETS[@]}"; do
    [ -s "$SECRETS/$s" ] || continue
    if grep -qE '^(https?://)?(discord-sink|127\.0\.0\.1|localhost)[:/]' "$SECRETS/$s"; then local_urls+=("secrets/$s"); fi
    grep -qE '^https://' "$SECRETS/$s" || [[ " ${local_urls[*]} " == *" secrets/$s "* ]] \
      || die "secrets/$s: not an https:// URL (its content is not shown)"
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "missing secrets: ${missing[*]}"
    log "  passwords and basic auth: make vps-secrets"
    log "  discord_webhook_url: a Discord channel's webhook URL (Channel settings > Integrations)"
    log "  deadmans_switch_url, deadmans_switch_fail_url: a healthchecks.io check's ping URL and that URL + /fail (README, \"Discord\")"
    die "create them, then run make deploy again"
  fi
  [ ${#local_urls[@]} -eq 0 ] || die "${local_urls[*]}: still the bundled discord-sink's URL; on a VPS nobody would see the alerts (README, \"Discord\")"
}

# Prints key=value lines about the VPS: free disk, Docker Engine and Compose versions.
remote_facts() {
  remote "REMOTE_DIR=$REMOTE_DIR sh -s" <<'EOF'
mkdir -p "$REMOTE_DIR" 2>/dev/null || true
echo "user=$(id -un)"
echo "uid=$(id -u)"
if [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then echo "chown=yes"; else echo "chown=no"; fi
echo "free_kb=$(df -Pk "$REMOTE_DIR" 2>/dev/null | awk 'NR==2 {print $4}')"
if ! command -v docker >/dev/null 2>&1; then echo "engine=none"; echo "engine_error=no docker command"
elif out=$(docker version --format '{{.Server.Version}}' 2>&1); then echo "engine=$out"
else echo "engine=none"; echo "engine_error=$(echo "$out" | tail -n 1)"; fi
echo "compose=$(docker compose version --short 2>/dev/null || echo none)"
echo "arch=$(uname -m)"
EOF
}

fact() { sed -n "s/^$1=//p" <<<"$FACTS" | head -n 1; }

version_at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }

preflight() { # with_docker: yes|no
  check_settings
  check_local_secrets
  log "preflight: ssh $VPS (port $SSH_PORT)"
  local err
  err=$(remote true 2>&1) || die "cannot reach $VPS over SSH: ${err:-ssh failed} (check the address, SSH_PORT and that your key is authorised)"
  FACTS=$(remote_facts) || die "could not read the VPS's facts over SSH"
  local free_kb
  free_kb=$(fact free_kb)
  [[ "$free_kb" =~ ^[0-9]+$ ]] || die "could not read the free disk space on $VPS"
  log "preflight: $((free_kb / 1048576)) GB free on $VPS (need $MIN_FREE_GB GB: Kafka, PostgreSQL and Prometheus keep data there)"
  [ "$free_kb" -ge $((MIN_FREE_GB * 1048576)) ] || die "only $((free_kb / 1048576)) GB free on $VPS under ~/$REMOTE_DIR; free some or set MIN_FREE_GB"
  [ "$1" = yes ] || return 0
  local engine compose
  engine=$(fact engine)
  compose=$(fact compose)
  if [ "$engine" = none ]; then
    die "no Docker Engine answers on $VPS ($(fact engine_error)). Install Docker Engine (https://docs.docker.com/engine/install/), start it (systemctl enable --now docker) and add $(fact user) to the docker group; then run make deploy again. Nothing was started."
  fi
  [ "$compose" != none ] || die "Docker Compose v2 is missing on $VPS (the docker-compose-plugin package); need $MIN_COMPOSE or later"
  version_at_least "${compose#v}" "$MIN_COMPOSE" || die "Docker Compose ${compose} on $VPS is older than $MIN_COMPOSE (needed for deploy/vps/compose.yml)"
  log "preflight: Docker Engine $engine, Compose ${compose#v} on $VPS"
}

# ---------------------------------------------------------------- ship

# What the stack needs on the VPS: compose files, configs and, to build there, the sources.
shipped_files() {
  local paths=(docker-compose.yml deploy prometheus alertmanager grafana)
  [ "$IMAGES" = remote ] && paths+=(Cargo.toml Cargo.lock crates)
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard -- "${paths[@]}" ':!deploy/native')
}

compose_files() {
  local files="docker-compose.yml:deploy/vps/compose.yml"
  [ "$ADMIN_ACCESS" = auth ] && files+=":deploy/vps/admin-auth.yml"
  echo "$files"
}

env_file() { # release secrets-dir
  local host scheme_host prom am
  host=$(site_host)
  scheme_host="https://$host"
  prom="$scheme_host/prometheus/" am="$scheme_host/alertmanager/"
  # In tunnel mode the links in Discord messages open through the tunnel.
  [ "$ADMIN_ACCESS" = tunnel ] && prom="http://localhost:9090/" am="http://localhost:9093/"
  cat <<EOF
# Written by make deploy for release $1; no secrets here.
COMPOSE_FILE=$(compose_files)
SERVICES_TAG=$1
SECRETS_DIR=$2
SITE_ADDRESS=$scheme_host
SITE_HOST=$host
TLS_MODE=$(tls_mode)
ADMIN_ACCESS=$ADMIN_ACCESS
ACME_EMAIL_OPTION=${ACME_EMAIL:+email $ACME_EMAIL}
GRAFANA_URL=$scheme_host/
PROMETHEUS_URL=$prom
ALERTMANAGER_URL=$am
EOF
}

ship() { # release
  local release=$1 dir="$REMOTE_DIR/releases/$1"
  log "shipping release $release to $VPS:$dir"
  shipped_files | tar -C "$ROOT" --null -T - -czf - \
    | remote "set -e; umask 022; mkdir -p '$dir'; tar -xzf - -C '$dir' --no-same-owner" \
    || die "copying the files to $VPS failed"
  local secrets_dir
  secrets_dir=$(remote "mkdir -p '$REMOTE_DIR/secrets' && cd '$REMOTE_DIR/secrets' && pwd") || die "could not make $REMOTE_DIR/secrets on $VPS"
  env_file "$release" "$secrets_dir" | remote "cat > '$dir/.env'"
  remote "ln -sfn ../../secrets '$dir/secrets'"
  ship_secrets "$release"
}

# tar over SSH (contents never on a command line); deploy/vps/install-secrets.sh, shipped
# with the release, sets owner and mode on the VPS.
ship_secrets() { # release
  local names=() owners=() s
  for s in $(needed_secrets); do names+=("$s"); owners+=("$s:${SECRET_OWNER[$s]}"); done
  log "shipping secrets: ${names[*]} (mode 0400, owned by the reading container's user)"
  tar -C "$SECRETS" -cf - "${names[@]}" \
    | remote "sh '$REMOTE_DIR/releases/$1/deploy/vps/install-secrets.sh' '$REMOTE_DIR/secrets' ${owners[*]}" \
    || die "installing the secrets on $VPS failed"
}

# ---------------------------------------------------------------- images, up, check

ship_images() { # release
  local platform
  case "$(fact arch)" in
    x86_64 | amd64) platform=linux/amd64 ;;
    aarch64 | arm64) platform=linux/arm64 ;;
    *) die "IMAGES=local: no image platform known for the VPS's $(fact arch)" ;;
  esac
  log "building nghenhan/services:$1 for $platform here and shipping it (docker save | ssh docker load)"
  docker info >/dev/null 2>&1 || die "IMAGES=local needs a Docker engine on this machine"
  docker build --platform "$platform" -t "nghenhan/services:$1" -f "$ROOT/deploy/Dockerfile" "$ROOT"
  docker save "nghenhan/services:$1" | gzip | remote "gunzip | docker load" || die "shipping the image failed"
}

compose_up() { # release
  local dir="$REMOTE_DIR/releases/$1" build=--build
  PREVIOUS=$(remote "readlink '$REMOTE_DIR/current' 2>/dev/null" | sed 's|^releases/||') || PREVIOUS=""
  [ "$IMAGES" = local ] && build=--no-build
  log "docker compose up -d --wait on $VPS ($([ "$IMAGES" = local ] && echo "image shipped" || echo "building the image there: several minutes the first time"))"
  if ! remote "cd '$dir' && docker compose up -d $build --wait --wait-timeout 600 --remove-orphans"; then
    log "the new release did not come up healthy; what runs now:"
    remote "cd '$dir' && docker compose ps --all" >&2 || true
    rollback_note "$1"
    die "deploy of $1 failed"
  fi
  remote "cd '$REMOTE_DIR' && ln -sfn 'releases/$1' current && ls -1d releases/*/ | sort | head -n -$KEEP_RELEASES | xargs -r rm -rf"
}

rollback_note() { # release
  local prev="${PREVIOUS:-}" # what `current` named before this deploy: the last release that ran
  if [ -n "$prev" ] && [ "$prev" != "$1" ]; then
    log "to roll back to $prev (volumes are kept):"
    log "  ssh $VPS 'cd $REMOTE_DIR && ln -sfn releases/$prev current && cd current && docker compose up -d --wait --remove-orphans'"
  else
    log "no earlier release on $VPS to roll back to; stop with: ssh $VPS 'cd $REMOTE_DIR/releases/$1 && docker compose down'"
  fi
}

# Grafana's health over HTTPS through Caddy; Prometheus's targets through the
# authenticated route (auth) or inside the VPS (tunnel).
post_check() { # release
  local host url cacert=() targets
  host=$(site_host)
  url="https://$host"
  if [ "$(tls_mode)" = internal ]; then
    mkdir -p "$ROOT/.cache/deploy"
    local ca="$ROOT/.cache/deploy/$host-root.crt"
    remote "cd '$REMOTE_DIR/current' && docker compose exec -T caddy cat /data/caddy/pki/authorities/local/root.crt" > "$ca" \
      || die "could not read Caddy's root certificate"
    cacert=(--cacert "$ca")
    log "Caddy's own CA signs $url: its root is in $ca (import it in your browser to drop the warning)"
  fi
  curl -fsS --max-time 20 "${cacert[@]}" "$url/api/health" | grep -q '"database": *"ok"' \
    || die "Grafana is not healthy at $url/api/health (DNS for $host pointing at the VPS? ports 80/443 open in its firewall?)"
  log "post-check: Grafana healthy at $url"
  if [ "$ADMIN_ACCESS" = auth ]; then
    [ -s "$SECRETS/admin_password" ] || die "secrets/admin_password is missing: cannot check the authenticated route"
    targets=$(printf 'user = "admin:%s"\n' "$(cat "$SECRETS/admin_password")" \
      | curl -fsS --max-time 20 "${cacert[@]}" -K - "$url/prometheus/api/v1/targets") \
      || die "Prometheus is not reachable at $url/prometheus/ with the admin password"
  else
    targets=$(remote "cd '$REMOTE_DIR/current' && docker compose exec -T prometheus wget -qO- http://127.0.0.1:9090/api/v1/targets") \
      || die "could not read Prometheus's targets on $VPS"
  fi
  # One target a line; the simulator's job is down by design on a VPS that talks to Binance.
  local lines up down
  # shellcheck disable=SC2001 # a newline before each target object: sed says it plainest
  lines=$(sed 's/{"discoveredLabels"/\n&/g' <<<"$targets" | grep '"health":"' | grep -v '"job":"exchange-sim"' || true)
  up=$({ grep -o '"health":"up"' <<<"$lines" || true; } | wc -l)
  down=$({ grep -o '"health":"down"' <<<"$lines" || true; } | wc -l)
  log "post-check: Prometheus targets: $up up, $down down (exchange-sim's job not counted)"
  [ "$down" -eq 0 ] || log "warning: $down target(s) down; see Prometheus's /targets (they may still be starting)"
}

summary() {
  local host
  host=$(site_host)
  remote "cd '$REMOTE_DIR/current' && docker compose ps --format 'table {{.Service}}\t{{.State}}\t{{.Status}}'" >&2 || true
  log "Grafana:      https://$host/ (user admin, password in secrets/grafana_admin_password)"
  if [ "$ADMIN_ACCESS" = auth ]; then
    log "Prometheus:   https://$host/prometheus/   Alertmanager: https://$host/alertmanager/ (user admin, password in secrets/admin_password)"
  else
    log "Prometheus, Alertmanager: ssh -L 9090:127.0.0.1:9090 -L 9093:127.0.0.1:9093 $VPS, then http://localhost:9090 and :9093"
  fi
  log "public: ports 80 (redirect to HTTPS) and 443 only; everything else listens on the VPS's 127.0.0.1 or inside Docker"
}

deploy() {
  preflight yes
  local release
  release="$(date -u +%Y%m%dT%H%M%SZ)-$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo nogit)"
  ship "$release"
  [ "$IMAGES" = local ] && ship_images "$release"
  compose_up "$release"
  post_check "$release"
  summary
  rollback_note "$release"
  log "deployed $release; run make deploy again to update (volumes are kept)"
}

files() {
  preflight no
  local release
  release="$(date -u +%Y%m%dT%H%M%SZ)-$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo nogit)"
  ship "$release"
  log "shipped $release to $VPS:$REMOTE_DIR/releases/$release (not started)"
}

# One alert straight into the deployed Alertmanager (its API, from inside the VPS), then
# whether its Discord notification went out.
test_alert() {
  check_settings
  # No startsAt/endsAt: Alertmanager stamps it now and resolves it after its
  # resolve_timeout (5 min) unless it is posted again.
  local body sent
  body='[{"labels":{"alertname":"DeployTestAlert","severity":"warning","service":"deploy"},"annotations":{"summary":"Test alert from make deploy-test-alert: if you read this in Discord, alerts reach you."}}]'
  local metric='alertmanager_notifications_total{integration="discord"}'
  local failed='alertmanager_notifications_failed_total{integration="discord"'
  local am="cd '$REMOTE_DIR/current' && docker compose exec -T alertmanager wget -qO-"
  sent=$(remote "$am http://127.0.0.1:9093/metrics" | grep -F "$metric" | awk '{print $2}') || die "Alertmanager does not answer on $VPS"
  remote "$am --header 'Content-Type: application/json' --post-data '$body' http://127.0.0.1:9093/api/v2/alerts" >/dev/null \
    || die "Alertmanager refused the test alert"
  log "test alert DeployTestAlert posted; Alertmanager groups warnings for up to 30 s"
  local now_sent fails
  for _ in $(seq 1 30); do
    sleep 2
    now_sent=$(remote "$am http://127.0.0.1:9093/metrics" | grep -F "$metric" | awk '{print $2}')
    if awk -v a="$now_sent" -v b="$sent" 'BEGIN { exit !(a > b) }'; then
      fails=$(remote "$am http://127.0.0.1:9093/metrics" | grep -F "$failed" | awk '{s += $2} END {print s + 0}')
      log "sent to Discord (failed deliveries so far: $fails); look for DeployTestAlert in the channel. It resolves in 5 minutes."
      return 0
    fi
  done
  die "Alertmanager has not sent the test alert in 60 s; see https://$(site_host)/alertmanager/ and alertmanager_notifications_failed_total"
}

# The admin user's password for Caddy's basic auth, generated once: the plain password
# stays here in secrets/admin_password, only its bcrypt hash goes to the VPS, as
# secrets/admin_basic_auth. (`make vps-secrets` runs `make secrets` first, which makes
# the PostgreSQL and Grafana passwords.)
make_secrets() {
  mkdir -p "$SECRETS"
  chmod 700 "$SECRETS"
  local gen='head -c 24 /dev/urandom | base64 | tr -d "/+=\n"'
  (umask 077
    [ -s "$SECRETS/admin_password" ] || { eval "$gen" > "$SECRETS/admin_password"; log "secrets/admin_password: generated"; }
    if [ ! -s "$SECRETS/admin_basic_auth" ] || [ "$SECRETS/admin_password" -nt "$SECRETS/admin_basic_auth" ]; then
      local hash
      hash=$(caddy_hash < "$SECRETS/admin_password") || die "could not hash the admin password"
      printf 'admin %s\n' "$hash" > "$SECRETS/admin_basic_auth"
      log "secrets/admin_basic_auth: the bcrypt hash of secrets/admin_password (user admin)"
    fi)
}

caddy_hash() { # password on stdin -> bcrypt hash
  local caddy="$ROOT/.cache/bin/caddy"
  if [ -x "$caddy" ]; then "$caddy" hash-password 2>/dev/null | tail -n 1
  elif docker info >/dev/null 2>&1; then docker run --rm -i caddy:2.11.9-alpine caddy hash-password 2>/dev/null | tail -n 1
  else die "need Caddy to hash the password: deploy/native/stack.sh install builds it, or start a Docker engine"
  fi
}

case "${1:-deploy}" in
  deploy) deploy ;;
  files) files ;;
  test-alert) test_alert ;;
  secrets) make_secrets ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
