#!/usr/bin/env bash
# Run-engine benchmark (issue 5), with the fake upstream answering instantly, on SQLite (and
# Cassandra when ASSISTANTS_PROXY_TEST_CASSANDRA=HOST:PORT is set):
#
# - sustained runs/s: BENCH_CONNS clients, closed loop, each doing create-thread-and-run
#   (stream: false) and polling the run every BENCH_POLL_US µs until `completed` (latency at
#   that saturation is mostly queueing: clients ÷ throughput);
# - run overhead, one run at a time (1 client): create-thread-and-run → `completed` seen by
#   polling, minus a direct non-streamed chat completion measured in the same round (p50 − p50,
#   p99 − p99); and POST run (stream: true) → `thread.run.completed`, minus a direct streamed
#   completion read to its end;
# - time to the first SSE event: POST of a `stream: true` run → `thread.run.created`, at
#   BENCH_STREAM_CONNS clients, beside time to first byte of a direct streamed chat completion.
#
# The proxy is pinned to CPU 1 (1 worker thread); runbench and the fake upstream share CPU 0. A
# Cassandra node cannot be pinned away, so its CPU is not in the proxy CPU column. Median of
# ROUNDS interleaved rounds, BENCH_SECONDS (default 5) per measurement.
#
# usage: scripts/bench-runs.sh [ROUNDS]   (env: BENCH_SECONDS, BENCH_CONNS, BENCH_STREAM_CONNS,
#        BENCH_POLL_US; PROXY_BIN=PATH measures another build; results also in bench-results/)
set -euo pipefail

ROUNDS="${1:-3}"
CONNS="${BENCH_CONNS:-8}"
SCONNS="${BENCH_STREAM_CONNS:-1}"
POLL_US="${BENCH_POLL_US:-1000}"
NAME=bench-runs.sh EXAMPLES="fake_upstream runbench"
# shellcheck source=bench-setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"
api_rig 19201 19220 19221
RUNBENCH="$EXAMPLES_DIR/runbench"
declare -A ASST
for b in "${BACKENDS[@]}"; do
  ASST[$b]=$(curl -sf "${AUTH[@]}" -d '{"model":"gpt-4o-bench","instructions":"You are a benchmark."}' \
    "${BASE[$b]}/v1/assistants" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
done


# runbench prints "per_s first_p50 first_p99 done_p50 done_p99 count errors polls_per_run";
# this appends "cpu_us_per_item" of PID (or 0 without one) and stores every field under KEY.
declare -A R
FIELDS=(per_s first_p50 first_p99 done_p50 done_p99 count errors polls cpu)
measure() { # key pid runbench-args... (SECS stands for the duration)
  local key="$1" pid="$2" c0=0 c1=0 out
  shift 2
  taskset -c 0 "$RUNBENCH" "${@/#SECS/1}" >/dev/null # 1 s warm-up: pools, caches
  [ "$pid" != 0 ] && c0=$(cpu "$pid")
  out=$(taskset -c 0 "$RUNBENCH" "${@/#SECS/$DURATION}")
  [ "$pid" != 0 ] && c1=$(cpu "$pid")
  local -a v; read -r -a v <<<"$out"
  v+=("$(awk -v d=$((c1 - c0)) -v hz="$HZ" -v n="${v[5]}" 'BEGIN{printf "%.0f", n ? d*1000000/hz/n : 0}')")
  [ "${v[6]}" = 0 ] || echo "bench-runs.sh: $key: ${v[6]} errors" >&2
  for i in "${!FIELDS[@]}"; do R[$key,${FIELDS[$i]}]+="${v[$i]}"$'\n'; done
}
for _ in $(seq "$ROUNDS"); do
  measure chat 0 chat "$UP" "$CONNS" SECS 0
  measure chat1 0 chat "$UP" 1 SECS 0
  measure ttfb 0 chat "$UP" "$SCONNS" SECS 1
  for b in "${BACKENDS[@]}"; do
    # The one-client latencies go before the saturating loop: a Cassandra node spends the
    # seconds after a burst flushing and compacting, which would land in them otherwise.
    measure "$b,solo" "${PID[$b]}" poll "${BASE[$b]}" "${ASST[$b]}" 1 SECS "$POLL_US"
    measure "$b,stream" "${PID[$b]}" stream "${BASE[$b]}" "${ASST[$b]}" "$SCONNS" SECS
    measure "$b,poll" "${PID[$b]}" poll "${BASE[$b]}" "${ASST[$b]}" "$CONNS" SECS "$POLL_US"
  done
done
m() { printf '%s' "${R[$1,$2]}" | median; }
ms() { awk -v u="$1" 'BEGIN{printf "%.2f", u/1000}'; }

mkdir -p bench-results
OUT="bench-results/runs-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "## Runs through assistants-proxy, fake upstream answering instantly (median of $ROUNDS rounds, ${DURATION}s each)"
  echo
  echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; proxy ($PROXY_BIN) on CPU 1 (1 worker thread), load + fake upstream on CPU 0."
  echo
  echo "Upstream, direct: non-streamed chat completion, 1 client, p50 / p99 $(ms "$(m chat1 done_p50)") / $(ms "$(m chat1 done_p99)") ms; $CONNS clients $(ms "$(m chat done_p50)") / $(ms "$(m chat done_p99)") ms ($(m chat per_s)/s); streamed, $SCONNS client(s), to the end: $(ms "$(m ttfb done_p50)") / $(ms "$(m ttfb done_p99)") ms."
  echo
  echo "### Run overhead, one run at a time (time to \`completed\` minus the upstream time)"
  echo
  echo "| backend | create-thread-and-run → completed (polled every ${POLL_US} µs) p50 / p99 (ms) | overhead p50 / p99 (ms) | POST run (stream) → thread.run.completed p50 / p99 (ms) | overhead p50 / p99 (ms) | proxy CPU µs per run (streamed) |"
  echo "|---|---|---|---|---|---|"
  for b in "${BACKENDS[@]}"; do
    o50=$(( $(m "$b,solo" done_p50) - $(m chat1 done_p50) )); o99=$(( $(m "$b,solo" done_p99) - $(m chat1 done_p99) ))
    s50=$(( $(m "$b,stream" done_p50) - $(m ttfb done_p50) )); s99=$(( $(m "$b,stream" done_p99) - $(m ttfb done_p99) ))
    echo "| $b | $(ms "$(m "$b,solo" done_p50)") / $(ms "$(m "$b,solo" done_p99)") | $(ms "$o50") / $(ms "$o99") | $(ms "$(m "$b,stream" done_p50)") / $(ms "$(m "$b,stream" done_p99)") | $(ms "$s50") / $(ms "$s99") | $(m "$b,stream" cpu) |"
  done
  echo
  echo "### Sustained runs ($CONNS clients, closed loop: create-thread-and-run, poll every ${POLL_US} µs)"
  echo
  echo "| backend | runs/s | create → completed p50 / p99 at saturation (ms) | polls per run | proxy CPU µs per run (incl. polls) |"
  echo "|---|---|---|---|---|"
  for b in "${BACKENDS[@]}"; do
    echo "| $b | $(m "$b,poll" per_s) | $(ms "$(m "$b,poll" done_p50)") / $(ms "$(m "$b,poll" done_p99)") | $(m "$b,poll" polls) | $(m "$b,poll" cpu) |"
  done
  echo
  echo "### Time to first SSE event ($SCONNS client(s), closed loop: POST run with stream: true → thread.run.created)"
  echo
  echo "Direct streamed chat completion, time to first byte p50 / p99: $(ms "$(m ttfb first_p50)") / $(ms "$(m ttfb first_p99)") ms."
  echo
  echo "| backend | first event p50 / p99 (ms) | p50 ÷ direct TTFB p50 | p99 ÷ direct TTFB p99 | thread.run.completed p50 / p99 (ms) | streamed runs/s | proxy CPU µs per run (no polls) |"
  echo "|---|---|---|---|---|---|---|"
  for b in "${BACKENDS[@]}"; do
    echo "| $b | $(ms "$(m "$b,stream" first_p50)") / $(ms "$(m "$b,stream" first_p99)") | $(ratio "$(m "$b,stream" first_p50)" "$(m ttfb first_p50)" %.1f) | $(ratio "$(m "$b,stream" first_p99)" "$(m ttfb first_p99)" %.1f) | $(ms "$(m "$b,stream" done_p50)") / $(ms "$(m "$b,stream" done_p99)") | $(m "$b,stream" per_s) | $(m "$b,stream" cpu) |"
  done
  echo
  [ -n "$CASS" ] && echo "Cassandra: node at $CASS (keyspace assistants_bench); its own CPU is not in the proxy CPU column." \
    || echo "Cassandra: not measured (set ASSISTANTS_PROXY_TEST_CASSANDRA=HOST:PORT to include it)."
} | tee "$OUT"
