#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (the README's test command):
#   lints → a real Cassandra 5 node, the code_interpreter sandbox's Python environment and a
#   Jupyter Kernel Gateway → Rust unit, integration and store-contract tests on SQLite and
#   Cassandra, each code_interpreter test on both executors → the official OpenAI Python
#   SDKs (and the Node SDK) against the running proxy → a three-node Cassandra cluster and
#   the cluster suite (node loss, replicas under contention).
# Everything the tests need is installed or started here; anything missing fails the run
# (a green run that skipped the database or SDK tests would be a lie).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '\n== %s\n' "$*" >&2; }
die() { echo "test.sh: ERROR: $*" >&2; exit 1; }

for tool in cargo java mvn python3 node npm; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required and not on PATH"
done

export CASSANDRA_PORT="${CASSANDRA_PORT:-9042}"
export ASSISTANTS_PROXY_TEST_CASSANDRA="127.0.0.1:${CASSANDRA_PORT}"
# Test runs start from an empty node unless asked otherwise: shared test keyspaces
# would otherwise grow run after run.
export CASSANDRA_FRESH="${CASSANDRA_FRESH:-1}"

# A second node with password authentication, for the login tests (user/password URLs and
# Astra-style token roles). Small heap: it holds one tiny keyspace.
export CASSANDRA_AUTH_PORT="${CASSANDRA_AUTH_PORT:-9043}"
export ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH="127.0.0.1:${CASSANDRA_AUTH_PORT}"
# A made-up token in Astra's format: the login test makes a role with it as the password.
export AP_TEST_ASTRA_TOKEN="${AP_TEST_ASTRA_TOKEN:-AstraCS:test:$(date +%s%N | sha256sum | cut -c1-40)}"
auth_node() {
  CASSANDRA_AUTH=password CASSANDRA_PORT="$CASSANDRA_AUTH_PORT" CASSANDRA_STORAGE_PORT=7001 \
    CASSANDRA_HEAP=512M CASSANDRA_DIRECT_MEMORY=256M scripts/cassandra.sh "$@"
}

# The three-node cluster of the cluster suite: 127.0.0.1-3, CQL on its own port (the single
# nodes keep 9042/9043), started last, after the single nodes are stopped.
export CASSANDRA_CLUSTER_PORT="${CASSANDRA_CLUSTER_PORT:-9044}"
export ASSISTANTS_PROXY_TEST_CLUSTER="127.0.0.1:${CASSANDRA_CLUSTER_PORT},127.0.0.2:${CASSANDRA_CLUSTER_PORT},127.0.0.3:${CASSANDRA_CLUSTER_PORT}"

stop_services() {
  scripts/cassandra.sh stop >/dev/null 2>&1 || true
  auth_node stop >/dev/null 2>&1 || true
  scripts/kernel-gateway.sh stop >/dev/null 2>&1 || true
  scripts/cassandra-cluster.sh stop >/dev/null 2>&1 || true
}
trap stop_services EXIT

log "lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# code_interpreter: bubblewrap and the sandbox's Python (numpy, pandas, matplotlib) for the
# local executor, a Kernel Gateway for the jupyter executor. Both fail the run when they
# cannot be had.
log "code_interpreter: the sandbox's Python environment (scripts/interpreter-env.sh)"
export ASSISTANTS_PROXY_PYTHON="${ASSISTANTS_PROXY_PYTHON:-/opt/assistants-proxy/python/bin/python3}"
scripts/interpreter-env.sh "$(dirname "$(dirname "$ASSISTANTS_PROXY_PYTHON")")"
log "code_interpreter: a Jupyter Kernel Gateway (scripts/kernel-gateway.sh)"
export KG_PORT="${KG_PORT:-8899}"
export KG_TOKEN="${KG_TOKEN:-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export ASSISTANTS_PROXY_TEST_JUPYTER="http://127.0.0.1:${KG_PORT}"
scripts/kernel-gateway.sh start

log "starting Cassandra 5 (127.0.0.1:${CASSANDRA_PORT})"
scripts/cassandra.sh start
log "starting a password-authenticated Cassandra 5 (127.0.0.1:${CASSANDRA_AUTH_PORT})"
auth_node start

# Two test threads: the machines are 2-core, and the Cassandra node shares them.
log "Rust tests (unit, proxy, API, runs, store contract; the test rigs' own) on SQLite and Cassandra"
# The Cassandra tests are #[ignore]d so that a plain `cargo test` needs no services;
# --include-ignored runs them here, where a missing node fails them. (RUST_TEST_THREADS, not
# --test-threads, and the benches on their own: the Criterion benches, which run once each as
# smoke tests, refuse libtest's flags.) --workspace adds the test rigs under crates/ (the fake
# upstream's self-tests) to the proxy's own targets; the rigs have no benches.
# The cluster suite (tests/cluster, every test named *_on_the_cluster) runs in its own phase
# at the end, on its own cluster.
RUST_TEST_THREADS="${TEST_THREADS:-2}" cargo test --locked --workspace --lib --bins --tests --examples -- --include-ignored --skip _on_the_cluster
RUST_TEST_THREADS="${TEST_THREADS:-2}" cargo test --locked --benches

if [ -x scripts/sdk-tests.sh ]; then
  log "official OpenAI Python SDKs against the running proxy"
  scripts/sdk-tests.sh
else
  die "scripts/sdk-tests.sh is missing"
fi

# Last, so the SDK tests above still have the 9042 node: the single nodes and the gateway
# make room (two cores, three more JVMs), then the cluster starts fresh. About 4 minutes:
# ~45 s to start, ~3 min of tests (each killed node takes ~30 s to come back).
log "a three-node Cassandra 5 cluster (127.0.0.1-3:${CASSANDRA_CLUSTER_PORT}) and the cluster suite"
scripts/cassandra.sh stop
auth_node stop
scripts/kernel-gateway.sh stop
CASSANDRA_CLUSTER_FRESH=1 scripts/cassandra-cluster.sh start
# One test at a time (they kill nodes); --nocapture prints the figures (acknowledged writes,
# errors, recovery times).
RUST_TEST_THREADS=1 cargo test --locked --test cluster -- --include-ignored --nocapture
scripts/cassandra-cluster.sh stop

log "all tests passed"
