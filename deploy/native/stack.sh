#!/usr/bin/env bash
# The Nghenhan stack as native processes, for machines without a Docker engine.
# Same configuration files as docker-compose.yml; see "render" below for what differs.
#
#   stack.sh install        install what is missing (idempotent, cached under .cache/)
#   stack.sh up             install, then start every part not running and wait for health
#   stack.sh down           stop exactly what this script started (its pid files)
#   stack.sh status         each part: pid, health
#   stack.sh start NAME     start one part (or release one held down), wait until healthy
#   stack.sh stop NAME      stop one part (its supervisor too: it stays down)
#   stack.sh kill NAME [SIG] send SIG (default KILL) to a service's process: its supervisor
#                           restarts it, as Docker's `restart: unless-stopped` would
#   stack.sh hold NAME      keep a service down after its process next exits (until start)
#
# The three services (collector, sync-verifier, restart-watcher) run under a supervisor
# that restarts them like Docker's restart policy: after 100 ms, doubling up to 1 min,
# back to 100 ms once a run lasted 10 s. So a service that exits non-zero on a failure
# is restarted, a crash loop backs off, and restart-watcher sees both, as under Compose.
#
# BINANCE=sim points the collector at the bundled exchange-sim instead of the real Binance.
# Layout: binaries in .cache/bin, Kafka jars in .cache/kafka/libs, state, logs and pid
# files in .cache/run/{data,logs,pids}. Everything is bound to 127.0.0.1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${NGH_CACHE:-$ROOT/.cache}"
BIN="$CACHE/bin"
RUN="${NGH_RUN:-$CACHE/run}" # `make test` runs a stack of its own in .cache/test-run
PIDS="$RUN/pids"
LOGS="$RUN/logs"
DATA="$RUN/data"
# Release builds, as shipped; `make test` sets PROFILE=debug (cargo test builds debug anyway).
PROFILE="${PROFILE:-release}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"

# Versions: keep equal to the image tags in docker-compose.yml.
PROMETHEUS_MODULE_VERSION="v0.315.1"   # Prometheus v3.15.1 (Go module v0.3xx.y = v3.xx.y)
ALERTMANAGER_VERSION="v0.35.0"
NODE_EXPORTER_VERSION="v1.9.1"
JMX_EXPORTER_VERSION="1.0.1" # io.prometheus.jmx:jmx_prometheus_javaagent, Kafka's metrics
JMX_EXPORTER_SHA256="7d61f737fd661610ccc14aea79764faa1ea94a340cbc8f0029b3d2edea3d80c1"
JMX_AGENT="$CACHE/kafka/agent/jmx_prometheus_javaagent-$JMX_EXPORTER_VERSION.jar"
KAFKA_JMX_PORT=9404
# The VPS profile's parts, checked here: Caddy (deploy/vps/Caddyfile, deploy/docker-proxy/
# Caddyfile) and the Compose loader (docker-compose ... config). Keep CADDY_VERSION equal to
# the caddy image tags in docker-compose.yml and deploy/vps/compose.yml.
CADDY_VERSION="v2.11.9"
COMPOSE_VERSION="v2.40.3"

PG_PORT="${PG_PORT:-5432}"
SINK_PORT="${SINK_PORT:-9199}"
DB_URL="postgres://nghenhan:nghenhan@127.0.0.1:$PG_PORT/nghenhan"

# Start order; `down` stops in reverse.
PARTS=(postgres kafka discord-sink exchange-sim alertmanager prometheus node-exporter collector sync-verifier restart-watcher)

log() { printf '\033[1m[stack]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# ---------------------------------------------------------------- install

apt_install() {
  log "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null \
    || { as_root apt-get update -q >/dev/null && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
}

pg_bindir() {
  local d
  # shellcheck disable=SC2012 # version-sorted directory names, no spaces in them
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/postgres" ] && { echo "$d"; return; }
  done
}

install_system() {
  local java_major
  java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1 || true)
  if [ -z "$java_major" ] || [ "$java_major" -lt 17 ]; then apt_install openjdk-17-jre-headless; fi
  command -v mvn >/dev/null || apt_install maven
  command -v shellcheck >/dev/null || apt_install shellcheck
  [ -n "$(pg_bindir)" ] || apt_install postgresql
  command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || die "Go is needed to build Prometheus and Alertmanager (https://go.dev/dl); none found"
  command -v cargo >/dev/null || die "Rust (cargo) is needed; install it with rustup"
}

gocmd() { if command -v go >/dev/null; then go "$@"; else /usr/local/go/bin/go "$@"; fi; }

install_kafka() {
  if [ ! -f "$CACHE/kafka/libs/.complete" ]; then
    log "fetching Kafka jars from Maven Central (deploy/kafka/pom.xml)"
    rm -rf "$CACHE/kafka/libs"
    mvn -q -B -f "$ROOT/deploy/kafka/pom.xml" dependency:copy-dependencies -DoutputDirectory="$CACHE/kafka/libs"
    touch "$CACHE/kafka/libs/.complete"
  fi
  # The JMX exporter agent stays off the broker's classpath, in a folder of its own.
  [ -f "$JMX_AGENT" ] && return
  log "fetching the Prometheus JMX exporter agent $JMX_EXPORTER_VERSION from Maven Central"
  mvn -q -B dependency:copy -Dartifact="io.prometheus.jmx:jmx_prometheus_javaagent:$JMX_EXPORTER_VERSION" \
    -DoutputDirectory="$CACHE/kafka/agent"
  echo "$JMX_EXPORTER_SHA256  $JMX_AGENT" | sha256sum -c --quiet || { rm -f "$JMX_AGENT"; die "JMX exporter agent: checksum mismatch"; }
}

# `go install` refuses Prometheus (its go.mod has replace directives), so build it from the
# module source. The web UI assets are not embedded this way; the HTTP API is complete.
# Only static_configs are used, so every service-discovery plugin is left out (plugins/:
# `remove_all_sd`): the build needs a fraction of the modules and minutes.
PROMETHEUS_TAGS="remove_all_sd"
install_prometheus() {
  local stamp="$PROMETHEUS_MODULE_VERSION tags=$PROMETHEUS_TAGS"
  [ -x "$BIN/prometheus" ] && [ -x "$BIN/promtool" ] && [ "$(cat "$BIN/.prometheus-version" 2>/dev/null)" = "$stamp" ] && return
  log "building Prometheus $PROMETHEUS_MODULE_VERSION and promtool (first time only, several minutes)"
  local src
  src=$(cd /tmp && gocmd mod download -json "github.com/prometheus/prometheus@$PROMETHEUS_MODULE_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$src" ] || die "could not download the Prometheus module"
  rm -rf "$CACHE/src/prometheus" && mkdir -p "$CACHE/src" "$BIN"
  cp -r "$src" "$CACHE/src/prometheus" && chmod -R u+w "$CACHE/src/prometheus"
  (cd "$CACHE/src/prometheus" && GOWORK=off gocmd build -tags "$PROMETHEUS_TAGS" -o "$BIN/" ./cmd/prometheus ./cmd/promtool)
  echo "$stamp" > "$BIN/.prometheus-version"
}

install_go_tool() { # name version package...
  local name=$1 version=$2; shift 2
  [ -x "$BIN/$name" ] && [ "$(cat "$BIN/.$name-version" 2>/dev/null)" = "$version" ] && return
  log "building $name $version"
  mkdir -p "$BIN"
  (cd /tmp && GOBIN="$BIN" gocmd install "${@/%/@$version}")
  echo "$version" > "$BIN/.$name-version"
}

# Since v0.35 Alertmanager embeds its web UI from ui/app/dist, which the module zip lacks
# (it is built with npm), so `go install` fails. Build from the module source with a
# placeholder page there instead; the HTTP API (/api/v2) and amtool are complete.
install_alertmanager() {
  [ -x "$BIN/alertmanager" ] && [ -x "$BIN/amtool" ] && [ "$(cat "$BIN/.alertmanager-version" 2>/dev/null)" = "$ALERTMANAGER_VERSION" ] && return
  log "building alertmanager $ALERTMANAGER_VERSION and amtool"
  local src dist
  src=$(cd /tmp && gocmd mod download -json "github.com/prometheus/alertmanager@$ALERTMANAGER_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$src" ] || die "could not download the Alertmanager module"
  rm -rf "$CACHE/src/alertmanager" && mkdir -p "$CACHE/src" "$BIN"
  cp -r "$src" "$CACHE/src/alertmanager" && chmod -R u+w "$CACHE/src/alertmanager"
  dist="$CACHE/src/alertmanager/ui/app/dist"
  mkdir -p "$dist/elm" "$dist/mantine"
  for d in elm mantine; do
    echo '<!doctype html><title>Alertmanager</title><p>The web UI is not embedded in this source build; the API is at /api/v2/.' > "$dist/$d/index.html"
  done
  (cd "$CACHE/src/alertmanager" && GOWORK=off gocmd build -o "$BIN/" \
    -ldflags "-X github.com/prometheus/common/version.Version=${ALERTMANAGER_VERSION#v}" ./cmd/alertmanager ./cmd/amtool)
  echo "$ALERTMANAGER_VERSION" > "$BIN/.alertmanager-version"
}

# Compose's go.mod has exclude directives, so `go install` refuses it: build it in the
# downloaded module's folder (../shared/STACK.md). No Docker engine is needed for `config`.
install_compose() {
  [ -x "$BIN/docker-compose" ] && [ "$(cat "$BIN/.docker-compose-version" 2>/dev/null)" = "$COMPOSE_VERSION" ] && return
  log "building docker-compose $COMPOSE_VERSION (first time only, several minutes)"
  local src
  src=$(cd /tmp && gocmd mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$src" ] || die "could not download the Compose module"
  mkdir -p "$BIN"
  (cd "$src" && GOWORK=off GOFLAGS=-mod=mod gocmd build -o "$BIN/docker-compose" ./cmd)
  echo "$COMPOSE_VERSION" > "$BIN/.docker-compose-version"
}

# sshd for the `make deploy` test (a "VPS" on a loopback port): Debian's openssh-server
# unpacked under .cache/sshd, never installed, so no system service starts.
install_sshd() {
  # Run as root, sshd drops privileges to the user `sshd` (the package's postinst makes it).
  if [ "$(id -u)" = 0 ] && ! id sshd >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /run/sshd --shell /usr/sbin/nologin sshd
  fi
  [ -x "$CACHE/sshd/usr/sbin/sshd" ] && return
  log "fetching Debian's openssh-server (unpacked under .cache/sshd, not installed)"
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q openssh-server libwrap0 >/dev/null 2>&1) \
    || { as_root apt-get update -q >/dev/null && (cd "$tmp" && apt-get download -q openssh-server libwrap0 >/dev/null 2>&1); } \
    || die "apt-get download openssh-server libwrap0 failed"
  rm -rf "$CACHE/sshd" && mkdir -p "$CACHE/sshd"
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$CACHE/sshd"; done
  rm -rf "$tmp"
}

install_all() {
  install_system
  install_kafka
  install_prometheus
  install_alertmanager
  install_go_tool node_exporter "$NODE_EXPORTER_VERSION" github.com/prometheus/node_exporter
  install_go_tool caddy "$CADDY_VERSION" github.com/caddyserver/caddy/v2/cmd/caddy
  install_compose
  install_sshd
  log "building the services (cargo, $PROFILE)"
  local flag=""; [ "$PROFILE" = release ] && flag=--release
  (cd "$ROOT" && cargo build -q $flag --bins)
}

# ---------------------------------------------------------------- render
# The only differences from Compose: every `<compose-host>:<port>` becomes
# `127.0.0.1:<port>` (the bundled discord-sink: 127.0.0.1:$SINK_PORT), `/etc/prometheus/`
# and `/etc/alertmanager/` become the repository's folders, and `/run/secrets/` becomes
# .cache/run/secrets/.
HOSTS='collector|sync-verifier|restart-watcher|exchange-sim|alertmanager|prometheus|node-exporter|cadvisor|kafka|postgres|grafana'
SINK_HOST='discord-sink'
render() { # src dst
  mkdir -p "$(dirname "$2")"
  sed -E -e "s#\\b$SINK_HOST:[0-9]+#127.0.0.1:$SINK_PORT#g" \
         -e "s#\\b($HOSTS):([0-9]+)#127.0.0.1:\\2#g" \
         -e "s#/etc/prometheus/#$ROOT/prometheus/#g" \
         -e "s#/etc/alertmanager/#$ROOT/alertmanager/#g" \
         -e "s#/run/secrets/#$RUN/secrets/#g" \
         -e "/^ *# compose-only: begin/,/^ *# compose-only: end/d" "$1" > "$2"
}

# The secret URL files Alertmanager reads (Compose: /run/secrets/<name>; here
# .cache/run/secrets/<name>), each from, in order: its environment variable, the file
# secrets/<name> (`make secrets` writes the sink's Compose URL there, rendered here to
# 127.0.0.1; any other URL is used as it is), the bundled discord-sink.
sink_url() { printf 'http://127.0.0.1:%s' "$SINK_PORT"; }
url_secret() { # name value-from-env default
  local name=$1 value=$2 dst="$RUN/secrets/$1"
  if [ -z "$value" ] && [ -s "$ROOT/secrets/$name" ]; then
    value=$(head -n1 "$ROOT/secrets/$name" | sed -E "s#^(https?://)$SINK_HOST:[0-9]+#\\1127.0.0.1:$SINK_PORT#")
  fi
  printf '%s\n' "${value:-$3}" > "$dst"
  chmod 600 "$dst"
}

alert_secrets() {
  mkdir -p "$RUN/secrets"
  url_secret discord_webhook_url "${DISCORD_WEBHOOK_URL:-}" "$(sink_url)/api/webhooks/0/local-sink"
  url_secret deadmans_switch_url "${DEADMANS_SWITCH_URL:-}" "$(sink_url)/watchdog"
  # Without a failure URL of its own: healthchecks.io's `<ping URL>/fail`, or the sink's.
  local ping fail
  ping=$(head -n1 "$RUN/secrets/deadmans_switch_url")
  case $ping in "$(sink_url)"/*) fail="$(sink_url)/watchdog/fail" ;; *) fail="${ping%/}/fail" ;; esac
  url_secret deadmans_switch_fail_url "${DEADMANS_SWITCH_FAIL_URL:-}" "$fail"
}

# ---------------------------------------------------------------- processes

pidof_part() { local f="$PIDS/$1.pid"; [ -f "$f" ] && cat "$f"; }
# Running and not a zombie (a killed child of an exited shell may wait a while to be reaped).
alive() {
  local pid state; pid=$(pidof_part "$1") && [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$state" ] && [ "$state" != Z ]
}

spawn() { # name command... : runs in its own session, logs to .cache/run/logs/NAME.log
  local name=$1; shift
  mkdir -p "$PIDS" "$LOGS"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/$name.pid"
}

SUPERVISED=" collector sync-verifier restart-watcher "
supervised() { [[ "$SUPERVISED" == *" $1 "* ]]; }

# Runs `command` again whenever it exits, like Docker's `restart: unless-stopped`: first
# after 100 ms, doubling to 1 min, reset once a run lasted 10 s. NAME.pid is this
# supervisor (the session leader, so `stop` ends both); NAME.child is the service's pid.
# A NAME.hold file keeps the service down after its next exit, until `start` removes it.
supervise() { # name command...
  local name=$1; shift
  local delay_ms=100 child="" rc started up_ms stopping=0
  trap 'stopping=1; if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null || true; fi' TERM INT
  while :; do
    started=$(date +%s%3N)
    "$@" & child=$!
    echo "$child" > "$PIDS/$name.child"
    rc=0; wait "$child" || rc=$?
    while kill -0 "$child" 2>/dev/null; do wait "$child" || rc=$?; done # a trap interrupted wait
    child=""; rm -f "$PIDS/$name.child" # reaped: its pid may be reused
    [ "$stopping" = 1 ] && exit 0
    up_ms=$(( $(date +%s%3N) - started ))
    [ "$up_ms" -ge 10000 ] && delay_ms=100
    if [ ! -f "$PIDS/$name.hold" ]; then
      log "$name exited with status $rc after ${up_ms} ms; restarting in ${delay_ms} ms"
      sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))" || true
      delay_ms=$(( delay_ms * 2 > 60000 ? 60000 : delay_ms * 2 ))
    fi
    if [ -f "$PIDS/$name.hold" ] && [ "$stopping" = 0 ]; then # held, before or during the delay
      log "$name exited with status $rc after ${up_ms} ms; held down until 'stack.sh start $name'"
      while [ -f "$PIDS/$name.hold" ] && [ "$stopping" = 0 ]; do sleep 0.2; done
    fi
    [ "$stopping" = 1 ] && exit 0
  done
}

spawn_supervised() { # name command...
  local name=$1
  rm -f "$PIDS/$name.hold" "$PIDS/$name.child"
  spawn "$name" "$ROOT/deploy/native/stack.sh" supervise "$@"
}

child_pid() { local f="$PIDS/$1.child"; [ -s "$f" ] && cat "$f"; }

kill_part() { # name [signal]
  local name=$1 sig=${2:-KILL} pid
  supervised "$name" || die "kill: only the supervised services ($SUPERVISED) can be killed this way"
  if ! pid=$(child_pid "$name") || ! kill -0 "$pid" 2>/dev/null; then die "kill: $name is not running"; fi
  kill "-$sig" "$pid"
}

hold_part() {
  supervised "$1" || die "hold: only the supervised services ($SUPERVISED) can be held"
  mkdir -p "$PIDS"; touch "$PIDS/$1.hold"
}

http_ok() { curl -fs -o /dev/null --max-time 2 "$1"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

health() { # name -> 0 when healthy
  case $1 in
    postgres) "$(pg_bindir)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" ;;
    kafka) port_open 9092 && grep -q "Kafka Server started" "$LOGS/kafka.log" 2>/dev/null ;;
    discord-sink) http_ok "http://127.0.0.1:$SINK_PORT/healthz" ;;
    exchange-sim) http_ok http://127.0.0.1:9180/healthz ;;
    alertmanager) http_ok http://127.0.0.1:9093/-/ready ;;
    prometheus) http_ok http://127.0.0.1:9090/-/ready ;;
    node-exporter) http_ok http://127.0.0.1:9100/metrics ;;
    collector) http_ok http://127.0.0.1:9101/readyz ;;
    sync-verifier) http_ok http://127.0.0.1:9102/readyz ;;
    restart-watcher) http_ok http://127.0.0.1:9103/readyz ;;
  esac
}

url_of() {
  case $1 in
    postgres) echo "$DB_URL" ;;
    kafka) echo "127.0.0.1:9092" ;;
    discord-sink) echo "http://127.0.0.1:$SINK_PORT/sink/messages" ;;
    exchange-sim) echo "http://127.0.0.1:9180/sim/state" ;;
    alertmanager) echo "http://127.0.0.1:9093" ;;
    prometheus) echo "http://127.0.0.1:9090" ;;
    node-exporter) echo "http://127.0.0.1:9100/metrics" ;;
    collector) echo "http://127.0.0.1:9101/metrics" ;;
    sync-verifier) echo "http://127.0.0.1:9102/metrics" ;;
    restart-watcher) echo "http://127.0.0.1:9103/metrics" ;;
  esac
}

wait_healthy() { # name timeout_s
  local name=$1 limit=$2 waited=0
  printf '\033[1m[stack]\033[0m waiting for %-16s' "$name" >&2
  until health "$name"; do
    if ! alive "$name" && [ "$name" != postgres ]; then
      printf ' exited\n' >&2; tail -n 20 "$LOGS/$name.log" >&2 || true; die "$name exited"
    fi
    [ "$waited" -ge "$limit" ] && { printf ' timed out\n' >&2; tail -n 20 "$LOGS/$name.log" >&2 || true; die "$name not healthy after ${limit}s"; }
    sleep 1; waited=$((waited + 1)); printf '.' >&2
  done
  printf ' healthy (%ss)\n' "$waited" >&2
}

# PostgreSQL refuses to run as root: the server runs as the `postgres` user.
pg_user() { if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_datadir() {
  local dir="$DATA/postgres"; mkdir -p "$DATA"
  # The postgres user must reach the folder; fall back to /var/tmp if the checkout is private.
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$DATA" 2>/dev/null; then
    dir="/var/tmp/nghenhan-pg-$(echo "$ROOT" | md5sum | cut -c1-8)"
  fi
  echo "$dir"
}

start_postgres() {
  local bin dir; bin=$(pg_bindir); dir=$(pg_datadir)
  mkdir -p "$dir" "$LOGS" "$PIDS"; [ "$(id -u)" = 0 ] && chown "$(pg_user)" "$dir" && chmod 700 "$dir"
  if [ ! -f "$dir/PG_VERSION" ]; then
    log "initialising PostgreSQL in $dir"
    as_pg "$bin/initdb" -D "$dir" -U postgres --auth=trust >/dev/null
  fi
  touch "$LOGS/postgres.log"; [ "$(id -u)" = 0 ] && chown "$(pg_user)" "$LOGS/postgres.log"
  if ! as_pg "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    as_pg "$bin/pg_ctl" -D "$dir" -l "$LOGS/postgres.log" -w -t 60 \
      -o "-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
  fi
  head -1 "$dir/postmaster.pid" > "$PIDS/postgres.pid"
  local psql=("$bin/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
  "${psql[@]}" -tc "SELECT 1 FROM pg_roles WHERE rolname='nghenhan'" | grep -q 1 \
    || "${psql[@]}" -c "CREATE ROLE nghenhan LOGIN CREATEDB PASSWORD 'nghenhan'"
  "${psql[@]}" -c "ALTER ROLE nghenhan CREATEDB" >/dev/null # tests create databases of their own
  "${psql[@]}" -tc "SELECT 1 FROM pg_database WHERE datname='nghenhan'" | grep -q 1 \
    || "${psql[@]}" -c "CREATE DATABASE nghenhan OWNER nghenhan"
}

start_kafka() {
  local dir="$DATA/kafka" props="$RUN/kafka/server.properties"
  local java=(java -Xms256m -Xmx1g -Dlog4j2.configurationFile="$ROOT/deploy/kafka/log4j2.properties" -cp "$CACHE/kafka/libs/*")
  local agent="-javaagent:$JMX_AGENT=127.0.0.1:$KAFKA_JMX_PORT:$ROOT/deploy/kafka/jmx-exporter.yml"
  mkdir -p "$dir" "$RUN/kafka"
  sed "s#@LOG_DIR@#$dir#" "$ROOT/deploy/kafka/server.properties" > "$props"
  if [ ! -f "$dir/meta.properties" ]; then
    log "formatting Kafka storage (KRaft, standalone controller)"
    local id; id=$("${java[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)
    "${java[@]}" kafka.tools.StorageTool format -t "$id" -c "$props" --standalone >>"$LOGS/kafka.log" 2>&1
  fi
  : > "$LOGS/kafka.log.start"; mv "$LOGS/kafka.log.start" "$LOGS/kafka.log"
  spawn kafka "${java[0]}" "$agent" "${java[@]:1}" kafka.Kafka "$props"
}

service_env() { # name -> env assignments for a Rust service
  local port=$1
  echo "LISTEN_ADDR=127.0.0.1:$port KAFKA_BROKERS=127.0.0.1:9092 DATABASE_URL=$DB_URL RUST_LOG=${RUST_LOG:-info}"
}

# BINANCE=sim points the collector at exchange-sim (offline demos, tests); the default is
# the real Binance, as in production. STATE_DIR keeps the collector's Binance ban memory
# across restarts (the collector creates it).
collector_env() {
  echo "STATE_DIR=$RUN/state/collector"
  if [ "${BINANCE:-real}" = sim ]; then
    echo "BINANCE_REST_URL=http://127.0.0.1:9180 BINANCE_WS_URL=ws://127.0.0.1:9180"
  fi
}

start_part() {
  local name=$1
  if supervised "$name" && alive "$name"; then
    rm -f "$PIDS/$name.hold" # the supervisor starts it again if it was held down
    wait_healthy "$name" 120; return
  fi
  if [ "$name" != postgres ] && alive "$name"; then return; fi
  # service_env and collector_env print NAME=value words for env: split on purpose.
  # shellcheck disable=SC2046
  case $name in
    postgres) start_postgres ;;
    kafka) start_kafka ;;
    discord-sink) spawn discord-sink env LISTEN_ADDR="127.0.0.1:$SINK_PORT" "$TARGET/discord-sink" ;;
    exchange-sim) spawn exchange-sim env LISTEN_ADDR=127.0.0.1:9180 "$TARGET/exchange-sim" ;;
    alertmanager)
      alert_secrets
      render "$ROOT/alertmanager/alertmanager.yml" "$RUN/alertmanager/alertmanager.yml"
      # Silences are kept, the notification log is not: alerts firing when it stopped were
      # never resolved in its log, and the same alert firing again after the restart would
      # be taken as already sent and held back for repeat_interval (up to 4 h). A restart
      # may send a still-firing alert twice instead, never zero times.
      rm -f "$DATA/alertmanager/nflog"
      spawn alertmanager "$BIN/alertmanager" --config.file="$RUN/alertmanager/alertmanager.yml" \
        --storage.path="$DATA/alertmanager" --web.listen-address=127.0.0.1:9093 --cluster.listen-address= \
        --web.external-url="${ALERTMANAGER_URL:-http://127.0.0.1:9093}" ;;
    prometheus)
      render "$ROOT/prometheus/prometheus.yml" "$RUN/prometheus/prometheus.yml"
      spawn prometheus "$BIN/prometheus" --config.file="$RUN/prometheus/prometheus.yml" \
        --storage.tsdb.path="$DATA/prometheus" --web.listen-address=127.0.0.1:9090 --web.enable-lifecycle \
        --web.external-url="${PROMETHEUS_URL:-http://127.0.0.1:9090}" --web.route-prefix=/ ;;
    node-exporter) spawn node-exporter "$BIN/node_exporter" --web.listen-address=127.0.0.1:9100 ;;
    collector) spawn_supervised collector env $(service_env 9101) $(collector_env) "$TARGET/collector" ;;
    sync-verifier) spawn_supervised sync-verifier env $(service_env 9102) "$TARGET/sync-verifier" ;;
    restart-watcher) spawn_supervised restart-watcher env $(service_env 9103) "$TARGET/restart-watcher" ;;
    *) die "unknown part '$name' (parts: ${PARTS[*]})" ;;
  esac
  wait_healthy "$name" 120
}

stop_part() {
  local name=$1 pid
  if [ "$name" = postgres ]; then
    local dir; dir=$(pg_datadir)
    if [ -f "$dir/postmaster.pid" ]; then as_pg "$(pg_bindir)/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true; fi
    rm -f "$PIDS/postgres.pid"; return
  fi
  pid=$(pidof_part "$name") || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    # 15 s: a service drains for up to SHUTDOWN_GRACE_SECS (10) and flushes Kafka (2 s).
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDS/$name.pid" "$PIDS/$name.child" "$PIDS/$name.hold"
}

status() {
  local name pid state child bad=0
  printf '%-16s %-8s %-9s %s\n' PART PID STATE URL
  for name in "${PARTS[@]}"; do
    pid=$(pidof_part "$name" || true)
    if ! alive "$name"; then state=stopped; bad=1
    elif supervised "$name" && ! { child=$(child_pid "$name") && kill -0 "$child" 2>/dev/null; }; then state=restarting; bad=1
    elif health "$name"; then state=healthy
    else state=unhealthy; bad=1; fi
    printf '%-16s %-8s %-9s %s\n' "$name" "${pid:--}" "$state" "$(url_of "$name")"
  done
  printf '%-16s %-8s %-9s %s\n' grafana - absent "runs under Docker Compose only (no native Grafana build here)"
  return $bad
}

# Stored market data (PostgreSQL, Kafka, the collector's state) belongs to one market. A
# simulator that starts anew is a new market whose trade ids restart: the old data would
# read as thousands of mismatches and a stalled sync. So when the market changes (real
# Binance <-> simulator) or a new simulated market starts, and nothing holds the data,
# the data of the previous market is wiped (logged); real Binance data is never wiped
# by a restart.
fresh_market() {
  local market="${BINANCE:-real}" marker="$DATA/market" old=""
  [ -f "$marker" ] && old=$(cat "$marker")
  if alive postgres || alive kafka || alive collector || alive sync-verifier; then
    [ -n "$old" ] && [ "$old" != "$market" ] && log "warning: the stored data is of market '$old', not '$market' ('make down' first)"
    return 0
  fi
  # (No marker: data from before markers existed; it is kept unless a simulator starts.)
  if { [ -n "$old" ] && [ "$old" != "$market" ]; } || { [ "$market" = sim ] && ! alive exchange-sim; }; then
    if [ -d "$DATA/postgres" ] || [ -d "$DATA/kafka" ]; then
      log "a new market ($market; the stored data was of '${old:-unknown}'): wiping the stored market data"
    fi
    # Prometheus' series of the old market go too: it restores alert state on start and the
    # old market's last samples would stay current for 5 minutes (a clean start alerted).
    rm -rf "$DATA/postgres" "$DATA/kafka" "$DATA/prometheus" "$RUN/state/collector"
  fi
  mkdir -p "$DATA"
  echo "$market" > "$marker"
}

up() {
  install_all
  fresh_market
  local name
  for name in "${PARTS[@]}"; do start_part "$name"; done
  log "stack is up:"
  status || true
}

# Monitoring stops first: a planned stop must not fire ServiceDown on its way down.
# (Alertmanager would remember having sent it and, within repeat_interval, not send it
# again when a real outage follows the next `up`.)
down() {
  local i
  stop_part prometheus
  for ((i=${#PARTS[@]}-1; i>=0; i--)); do stop_part "${PARTS[$i]}"; done
  log "stack is down"
}

case "${1:-}" in
  install) install_all ;;
  up) up ;;
  down) down ;;
  status) status ;;
  start) start_part "${2:?part name}" ;;
  stop) stop_part "${2:?part name}" ;;
  kill) kill_part "${2:?part name}" "${3:-KILL}" ;;
  hold) hold_part "${2:?part name}" ;;
  supervise) shift; supervise "$@" ;;
  render) render "${2:?src}" "${3:?dst}" ;;
  *) sed -n '2,21p' "$0"; exit 2 ;;
esac
