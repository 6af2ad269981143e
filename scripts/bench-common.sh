# Shared set-up of bench-api.sh and bench-runs.sh (sourced, not run), on top of
# bench-setup.sh (the build, the work directory, the cleanup): starts the fake upstream on
# CPU 0 and one proxy per backend on CPU 1 (SQLite always, Cassandra when
# ASSISTANTS_PROXY_TEST_CASSANDRA is set).
#
# The sourcing script sets, before sourcing: NAME (for messages), EXAMPLE (load generator
# example to build), UP_PORT, SQLITE_PORT, CASS_PORT. Afterwards it has what bench-setup.sh
# gives (including the helpers cpu, HZ and median), and DURATION, CASS, UP, AUTH, BACKENDS,
# BASE[backend] and PID[backend].

# shellcheck source=bench-setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"
DURATION="${BENCH_SECONDS:-5}"
CASS="${ASSISTANTS_PROXY_TEST_CASSANDRA:-}"

UP="http://127.0.0.1:$UP_PORT"
AUTH=(-H 'Authorization: Bearer sk-bench' -H 'OpenAI-Beta: assistants=v2' -H 'Content-Type: application/json')

# The fake's chunk delay defaults to 0 and the model name selects no pacing: instant answers.
taskset -c 0 "$FAKE_BIN" --listen "127.0.0.1:$UP_PORT" > "$WORK/fake.out" & PIDS+=($!)

# Same server settings as bench-proxy.sh: one worker thread, access log off.
cat > "$WORK/proxy.toml" <<TOML
[server]
worker_threads = 1
access_log = false
TOML
start_proxy() { # port store_url
  RUST_LOG=warn taskset -c 1 "$PROXY_BIN" serve --listen "127.0.0.1:$1" --upstream "$UP" \
    --store "$2" --config "$WORK/proxy.toml" > "$WORK/proxy-$1.log" 2>&1 & PIDS+=($!)
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "proxy on $1 did not start:" >&2; cat "$WORK/proxy-$1.log" >&2; exit 1
}

BACKENDS=(sqlite)
declare -A BASE PID
start_proxy "$SQLITE_PORT" "sqlite://$WORK/bench.db"
BASE[sqlite]="http://127.0.0.1:$SQLITE_PORT"; PID[sqlite]="${PIDS[-1]}"
if [ -n "$CASS" ]; then
  # A fixed keyspace, so repeated runs do not pile keyspaces up on a shared node.
  start_proxy "$CASS_PORT" "cassandra://$CASS/assistants_bench?replication=1"
  BASE[cassandra]="http://127.0.0.1:$CASS_PORT"; PID[cassandra]="${PIDS[-1]}"
  BACKENDS+=(cassandra)
fi

