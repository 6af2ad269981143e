#!/usr/bin/env bash
# A real three-node Apache Cassandra 5.0 cluster for the cluster suite (tests/cluster), one
# JVM per loopback address (127.0.0.1, .2, .3: Linux routes all of 127/8 to lo), each node
# run by scripts/cassandra.sh (same jars, same config template).
#
# usage: scripts/cassandra-cluster.sh start|stop|status|kill N|start-node N
#
#   start         start all three nodes (in parallel) and wait until each answers CQL and
#                 sees the other two up. No-op for nodes already running.
#   stop          stop all three nodes.
#   status        one line per node; exit 0 only if all three are running.
#   kill N        SIGKILL node N (1..3): a crash, for node-loss tests.
#   start-node N  start node N again (after kill) and wait until it answers CQL.
#
# Ports differ from the single nodes' (9042/7000, 9043/7001 on 127.0.0.1) so the cluster can
# run beside them: every member uses CQL CASSANDRA_CLUSTER_PORT and storage
# CASSANDRA_CLUSTER_STORAGE_PORT on its own address.
#
# Environment (all optional):
#   CASSANDRA_CLUSTER_PORT          CQL port on each address        (default 9044)
#   CASSANDRA_CLUSTER_STORAGE_PORT  internode port on each address  (default 7002)
#   CASSANDRA_CLUSTER_HEAP          -Xms/-Xmx per node              (default 640M)
#   CASSANDRA_CLUSTER_FRESH=1       start: wipe every node's data first (a new cluster)
#   CASSANDRA_CLUSTER_SEQUENTIAL=1  start nodes one after the other instead of at once
#   CASSANDRA_VERSION, CASSANDRA_CACHE_DIR, CASSANDRA_START_TIMEOUT, CASSANDRA_JAVA as in
#   scripts/cassandra.sh.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
CACHE_DIR="${CASSANDRA_CACHE_DIR:-$REPO_ROOT/.cache/cassandra}"
CQL_PORT="${CASSANDRA_CLUSTER_PORT:-9044}"
STORAGE_PORT="${CASSANDRA_CLUSTER_STORAGE_PORT:-7002}"
HEAP="${CASSANDRA_CLUSTER_HEAP:-640M}"
START_TIMEOUT="${CASSANDRA_START_TIMEOUT:-240}"
NODES=(1 2 3)
# Evenly spaced Murmur3 tokens, one per node: with fixed tokens and every node a seed the
# nodes join at once, with no bootstrap streaming and no token negotiation.
TOKENS=(-9223372036854775808 -3074457345618258603 3074457345618258602)
SEEDS="127.0.0.1:$STORAGE_PORT,127.0.0.2:$STORAGE_PORT,127.0.0.3:$STORAGE_PORT"

log() { echo "cassandra-cluster.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

node_env() {
  local n="$1"
  case "$n" in 1 | 2 | 3) ;; *) die "node must be 1, 2 or 3, got '$n'" ;; esac
  NODE_ENV=(
    CASSANDRA_AUTH=none
    "CASSANDRA_HOST=127.0.0.$n"
    "CASSANDRA_NODE_DIR=$CACHE_DIR/cluster/node$n"
    "CASSANDRA_PORT=$CQL_PORT"
    "CASSANDRA_STORAGE_PORT=$STORAGE_PORT"
    "CASSANDRA_SEEDS=$SEEDS"
    "CASSANDRA_INITIAL_TOKEN=${TOKENS[$((n - 1))]}"
    CASSANDRA_CLUSTER_NAME=assistants-proxy-cluster
    "CASSANDRA_HEAP=$HEAP"
    CASSANDRA_DIRECT_MEMORY=256M
    # Node-loss tests kill two replicas at once and then count every acknowledged write.
    CASSANDRA_COMMITLOG_SYNC=group
    CASSANDRA_UNSAFE_SYSTEM=0
    # The suite's "exactly one active run" rests on LWTs and LOCAL_SERIAL reads agreeing.
    CASSANDRA_PAXOS_VARIANT=v2
    "CASSANDRA_START_TIMEOUT=$START_TIMEOUT"
    CASSANDRA_JMX_PORT=
    CASSANDRA_FRESH="${CASSANDRA_CLUSTER_FRESH:-0}"
  )
}

node() {
  local n="$1"
  shift
  node_env "$n"
  env "${NODE_ENV[@]}" "$SCRIPT_DIR/cassandra.sh" "$@"
}

# A fresh node lists a peer in system.peers once gossip has reached it: every node answering
# CQL and listing two peers means the ring has formed. (After a restart the list is already
# full; start-node waits for CQL only, the suite checks the ring at consistency ALL.)
peers_up() {
  python3 "$SCRIPT_DIR/cassandra/cql_check.py" "127.0.0.$1" "$CQL_PORT" --peers 2 --quiet
}

wait_for_ring() {
  local deadline=$(( $(date +%s) + START_TIMEOUT )) n ok
  while :; do
    ok=1
    for n in "$@"; do
      peers_up "$n" || ok=0
    done
    [ "$ok" = 1 ] && return 0
    [ "$(date +%s)" -ge "$deadline" ] && die "nodes $* did not all see their peers within ${START_TIMEOUT}s"
    sleep 1
  done
}

loopback_usable() {
  local n
  for n in 2 3; do
    python3 - "127.0.0.$n" <<'PY' || die "cannot bind 127.0.0.$n (the cluster needs 127.0.0.1-3 routed to lo)"
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.close()
PY
  done
}

cmd_start() {
  loopback_usable
  "$SCRIPT_DIR/cassandra.sh" fetch
  local start_ts n pids=() failed=0
  start_ts="$(date +%s)"
  if [ "${CASSANDRA_CLUSTER_SEQUENTIAL:-0}" = 1 ]; then
    for n in "${NODES[@]}"; do node "$n" start; done
  else
    for n in "${NODES[@]}"; do
      node "$n" start &
      pids+=($!)
    done
    for n in "${pids[@]}"; do wait "$n" || failed=1; done
    [ "$failed" = 0 ] || die "a node did not start (logs under $CACHE_DIR/cluster/node*/logs)"
  fi
  wait_for_ring "${NODES[@]}"
  log "cluster up on 127.0.0.1-3:$CQL_PORT after $(( $(date +%s) - start_ts ))s"
}

cmd_stop() {
  local n pids=()
  for n in "${NODES[@]}"; do
    node "$n" stop &
    pids+=($!)
  done
  for n in "${pids[@]}"; do wait "$n" || true; done
}

cmd_status() {
  local n rc=0
  for n in "${NODES[@]}"; do
    printf 'node %s (127.0.0.%s:%s): ' "$n" "$n" "$CQL_PORT"
    node "$n" status || rc=1
  done
  return "$rc"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  kill) [ $# -eq 2 ] || die "usage: $0 kill N"; node "$2" kill ;;
  start-node)
    [ $# -eq 2 ] || die "usage: $0 start-node N"
    CASSANDRA_CLUSTER_FRESH=0 node "$2" start
    ;;
  *)
    echo "usage: $0 start|stop|status|kill N|start-node N   (see header of $0 for env vars)" >&2
    exit 2
    ;;
esac
