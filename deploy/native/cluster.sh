#!/usr/bin/env bash
# A three-node Kafka cluster (KRaft, each node broker and controller) on loopback ports,
# beside the native stack, for `make test-cluster`: brokers 127.0.0.1:29092-29094,
# controllers 29192-29194, state under .cache/cluster/. Uses the Kafka jars stack.sh installs.
#
#   cluster.sh up          formats (first time) and starts the three nodes, waits for them
#   cluster.sh kill N      kills node N (1-3) with SIGKILL, as a crash would
#   cluster.sh start N     starts node N again
#   cluster.sh down        stops every node and removes the cluster's state
#   cluster.sh brokers     prints the bootstrap list
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${NGH_CACHE:-$ROOT/.cache}"
DIR="$CACHE/cluster"
NODES=(1 2 3)
VOTERS="1@127.0.0.1:29192,2@127.0.0.1:29193,3@127.0.0.1:29194"
BROKERS="127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094"
JAVA=(java -Xms128m -Xmx512m -Dlog4j2.configurationFile="$ROOT/deploy/kafka/log4j2.properties" -cp "$CACHE/kafka/libs/*")

log() { printf '\033[1m[cluster]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port() { echo $((29091 + $1)); }

props() { # node
  local n=$1 file="$DIR/node$1/server.properties"
  mkdir -p "$DIR/node$n/data"
  sed -e "s#@NODE_ID@#$n#" -e "s#@PORT@#$(port "$n")#" -e "s#@CONTROLLER_PORT@#$((29191 + n))#" \
      -e "s#@VOTERS@#$VOTERS#" -e "s#@LOG_DIR@#$DIR/node$n/data#" \
      "$ROOT/deploy/kafka/cluster.properties" > "$file"
  echo "$file"
}

format() {
  [ -f "$CACHE/kafka/libs/.complete" ] || die "no Kafka jars: run deploy/native/stack.sh install first"
  local id; id=$("${JAVA[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)
  for n in "${NODES[@]}"; do
    [ -f "$DIR/node$n/data/meta.properties" ] && continue
    "${JAVA[@]}" kafka.tools.StorageTool format -t "$id" -c "$(props "$n")" >>"$DIR/node$n.log" 2>&1 \
      || die "formatting node $n failed (see $DIR/node$n.log)"
  done
}

start() { # node
  local n=$1 file; file=$(props "$n")
  if [ -f "$DIR/node$n.pid" ] && kill -0 "$(cat "$DIR/node$n.pid")" 2>/dev/null; then return; fi
  setsid "${JAVA[@]}" kafka.Kafka "$file" >>"$DIR/node$n.log" 2>&1 < /dev/null &
  echo $! > "$DIR/node$n.pid"
}

wait_up() { # node...
  for n in "$@"; do
    for _ in $(seq 1 120); do port_open "$(port "$n")" && break; sleep 0.5; done
    port_open "$(port "$n")" || die "node $n did not open port $(port "$n") within 60 s (see $DIR/node$n.log)"
  done
}

kill_node() { # node
  local pid; pid=$(cat "$DIR/node$1.pid" 2>/dev/null) || die "node $1 is not running"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$DIR/node$1.pid"
}

case "${1:-}" in
  up) mkdir -p "$DIR"; format; for n in "${NODES[@]}"; do start "$n"; done; wait_up "${NODES[@]}"; log "up: $BROKERS" ;;
  kill) kill_node "${2:?node}" ;;
  start) start "${2:?node}"; wait_up "$2" ;;
  down) for n in "${NODES[@]}"; do [ -f "$DIR/node$n.pid" ] && kill_node "$n"; done; rm -rf "$DIR" ;;
  brokers) echo "$BROKERS" ;;
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
