#!/usr/bin/env bash
# Assistants API benchmark (issue 4): create-message and list-messages through the release
# proxy on SQLite (and Cassandra when ASSISTANTS_PROXY_TEST_CASSANDRA=HOST:PORT is set), each
# beside plain pass-through of a same-size request through the same proxy process, in the same
# run. The proxy is pinned to CPU 1; loadgen and the fake upstream share CPU 0 (a Cassandra node
# cannot be pinned away: its CPU use is outside the proxy's figures).
#
# Reports per operation: req/s, p50/p99 latency (closed loop, CONNS connections) and proxy CPU
# µs per request (utime+stime from /proc/PID/stat), each also as a ratio to pass-through.
# Median of ROUNDS interleaved rounds, BENCH_SECONDS (default 5) per measurement.
#
# With Cassandra, each round also measures the node's own limit: the CQL statements the proxy
# issues for one create or one list, sent directly by a minimal client (examples/cql_floor.rs)
# from the proxy's CPU, with the same connections and threads; the proxy's figure is then
# also given as a ratio to that floor.
#
# usage: scripts/bench-api.sh [ROUNDS]    (env: BENCH_SECONDS, BENCH_CONNS; PROXY_BIN=PATH
#        measures another build; results also in bench-results/)
set -euo pipefail

ROUNDS="${1:-3}"
CONNS="${BENCH_CONNS:-16}"
NAME=bench-api.sh EXAMPLES="fake_upstream loadgen cql_floor"
# shellcheck source=bench-setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"
api_rig 19101 19120 19121
LOADGEN="$EXAMPLES_DIR/loadgen"
# A typical short user turn; the pass-through POST carries exactly these bytes.
BODY='{"role":"user","content":"A short benchmark message, about the size of a typical chat turn from a user."}'
json_id() { python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
# CONNS threads for create-message, one per connection (one conversation has one writer at a
# time; on Cassandra, many writers on one thread would contend on its lock row's Paxos reads),
# and one thread holding 25 messages for list.
setup_threads() { # base_url → "create_urls list_thread"
  local base="$1" urls="" t t_list
  for _ in $(seq "$CONNS"); do
    t=$(curl -sf "${AUTH[@]}" -d '{}' "$base/v1/threads" | json_id)
    urls+="${urls:+,}$base/v1/threads/$t/messages"
  done
  t_list=$(curl -sf "${AUTH[@]}" -d '{}' "$base/v1/threads" | json_id)
  for _ in $(seq 25); do
    curl -sf "${AUTH[@]}" -d "$BODY" "$base/v1/threads/$t_list/messages" >/dev/null
  done
  echo "$urls $t_list"
}

declare -A CREATE_URLS THREAD_L
for b in "${BACKENDS[@]}"; do
  read -r CREATE_URLS[$b] THREAD_L[$b] < <(setup_threads "${BASE[$b]}")
  # The list answer must really hold 20 messages, or the comparison is meaningless.
  n=$(curl -sf "${AUTH[@]}" "${BASE[$b]}/v1/threads/${THREAD_L[$b]}/messages?limit=20" |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]))')
  [ "$n" = 20 ] || { echo "bench-api.sh: list on $b returned $n messages, not 20" >&2; exit 1; }
done


# One measurement: "rps p50_us p99_us cpu_us_per_req errors".
measure() { # pid method url [body]
  local pid="$1" c0 c1 out
  shift
  taskset -c 0 "$LOADGEN" closed "$1" "$2" "$CONNS" 1 ${3:+"$3"} >/dev/null # warm pools/caches
  c0=$(cpu "$pid")
  out=$(taskset -c 0 "$LOADGEN" closed "$1" "$2" "$CONNS" "$DURATION" ${3:+"$3"})
  c1=$(cpu "$pid")
  read -r rps p50 p99 n err <<<"$out"
  echo "$rps $p50 $p99 $(awk -v d=$((c1 - c0)) -v hz="$HZ" -v n="$n" 'BEGIN{printf "%.1f", n ? d*1000000/hz/n : 0}') $err"
}

# The node's floor: "rps p50_us p99_us operations errors", like loadgen.
floor() { # create|list
  local threads
  if [ "$1" = create ]; then
    threads=$(printf '%s' "${CREATE_URLS[cassandra]}" | sed -E 's#[^,]*/threads/([^/,]*)/messages#\1#g')
  else threads="${THREAD_L[cassandra]}"; fi
  taskset -c 1 "$EXAMPLES_DIR/cql_floor" "$CASS" assistants_bench "$1" "$CONNS" 1 "$threads" >/dev/null
  taskset -c 1 "$EXAMPLES_DIR/cql_floor" "$CASS" assistants_bench "$1" "$CONNS" "$DURATION" "$threads"
}

declare -A R
OPS=(pass_post create pass_get list)
for i in $(seq "$ROUNDS"); do
  for b in "${BACKENDS[@]}"; do
    for op in "${OPS[@]}"; do
      case $op in
        pass_post) line=$(measure "${PID[$b]}" POST "${BASE[$b]}/echo/v1/threads/messages" "$BODY") ;;
        create) line=$(measure "${PID[$b]}" POST "${CREATE_URLS[$b]}" "$BODY") ;;
        pass_get) line=$(measure "${PID[$b]}" GET "${BASE[$b]}/echo/v1/threads/messages?limit=20") ;;
        list) line=$(measure "${PID[$b]}" GET "${BASE[$b]}/v1/threads/${THREAD_L[$b]}/messages?limit=20") ;;
      esac
      read -r rps p50 p99 cpu err <<<"$line"
      [ "$err" = 0 ] || echo "bench-api.sh: $b $op round $i: $err errors" >&2
      R[$b,$op,rps]+="$rps"$'\n'; R[$b,$op,p50]+="$p50"$'\n'
      R[$b,$op,p99]+="$p99"$'\n'; R[$b,$op,cpu]+="$cpu"$'\n'
    done
  done
  if [ -n "$CASS" ]; then
    for op in create list; do
      read -r rps p50 p99 _ err <<<"$(floor "$op")"
      [ "$err" = 0 ] || echo "bench-api.sh: cql floor $op round $i: $err errors" >&2
      R[floor,$op,rps]+="$rps"$'\n'; R[floor,$op,p50]+="$p50"$'\n'; R[floor,$op,p99]+="$p99"$'\n'
    done
  fi
done
m() { printf '%s' "${R[$1,$2,$3]}" | median; }

mkdir -p bench-results
OUT="bench-results/api-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "## Assistants API through assistants-proxy vs pass-through (median of $ROUNDS rounds, ${DURATION}s each, $CONNS connections)"
  echo
  echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; proxy ($PROXY_BIN) on CPU 1 (1 worker thread), load + fake upstream on CPU 0."
  echo "Pass-through: the same body POSTed (or a GET) to a forwarded path, answered by the fake upstream's echo route, through the same proxy process."
  echo
  echo "| backend | operation | req/s | p50 / p99 (µs) | proxy CPU µs/req | req/s ÷ pass-through | p50 ÷ pass-through | CPU ÷ pass-through |"
  echo "|---|---|---|---|---|---|---|---|"
  for b in "${BACKENDS[@]}"; do
    for pair in "pass_post:pass-through POST" "create:create message (POST)" "pass_get:pass-through GET" "list:list 20 messages (GET)"; do
      op="${pair%%:*}" label="${pair#*:}"
      case $op in create) base=pass_post ;; list) base=pass_get ;; *) base="" ;; esac
      if [ -n "$base" ]; then
        rr="$(ratio "$(m "$b" "$op" rps)" "$(m "$b" "$base" rps)")"
        pr="$(ratio "$(m "$b" "$op" p50)" "$(m "$b" "$base" p50)")"
        cr="$(ratio "$(m "$b" "$op" cpu)" "$(m "$b" "$base" cpu)")"
      else rr="1" pr="1" cr="1"; fi
      echo "| $b | $label | $(m "$b" "$op" rps) | $(m "$b" "$op" p50) / $(m "$b" "$op" p99) | $(m "$b" "$op" cpu) | $rr | $pr | $cr |"
    done
  done
  if [ -n "$CASS" ]; then
    echo
    echo "Against SQLite and against the node's floor (the same CQL statements from a minimal client on the proxy's CPU):"
    echo
    echo "| operation | Cassandra req/s | ÷ SQLite req/s | CQL floor ops/s (p50 / p99 µs) | proxy ÷ floor |"
    echo "|---|---|---|---|---|"
    for op in create list; do
      echo "| $op | $(m cassandra "$op" rps) | $(ratio "$(m cassandra "$op" rps)" "$(m sqlite "$op" rps)") | $(m floor "$op" rps) ($(m floor "$op" p50) / $(m floor "$op" p99)) | $(ratio "$(m cassandra "$op" rps)" "$(m floor "$op" rps)") |"
    done
  fi
  echo
  [ -n "$CASS" ] && echo "Cassandra: node at $CASS (keyspace assistants_bench); its own CPU is not in the proxy CPU column." \
    || echo "Cassandra: not measured (set ASSISTANTS_PROXY_TEST_CASSANDRA=HOST:PORT to include it)."
} | tee "$OUT"
