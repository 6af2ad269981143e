#!/usr/bin/env bash
# Added latency over direct, and where it comes from, on a 2-core box. The systems under test
# sit on CPU 1: nginx as a keep-alive reverse proxy, assistants-proxy, and the machine's floor
# (examples/tcp_floor.rs, a byte relay with no HTTP: what any proxy adds at the least). The
# fast upstream (nginx returning fixed JSON) and the open-loop generator (examples/loadgen:
# one thread, paced by a timerfd) share CPU 0. Rates: RATES (default 1000, then a quarter and
# a half of nginx's throughput as wrk -c50 measures it). Rounds interleave every system;
# medians of the rounds are reported. "CPU 0 busy, direct" is how much of that core the rig
# itself (generator and upstream, interrupts not counted) takes at each rate with no proxy:
# near 100 % the rate is more than the rig can present, and every figure in that row measures
# queueing on CPU 0 rather than the proxies.
#
# A proxy's added latency on an otherwise idle core is mostly the cost of waking that core:
# twice per request (the request arrives; the upstream's answer arrives). The floor row
# measures that on this machine. On a KVM guest with the haltpoll cpuidle driver,
# BENCH_HALT_POLL_NS=N (root) repeats the run with guest halt-polling set to N ns (an idle
# vCPU polls that long before it halts; the kernel's default is 200000, some clouds set 0),
# then puts the machine's value back: the difference between the two tables is what the
# machine charges for waking a halted vCPU. A second assistants-proxy runs with busy polling
# (`busy_poll_us = BUSY_POLL_US`, default 1000): its event loop keeps polling between requests
# instead of letting its vCPU halt, at the price of that core (README, Latency).
#
# usage: scripts/bench-latency.sh [ROUNDS]      (results also written to bench-results/)
set -euo pipefail

ROUNDS="${1:-3}"
DURATION="${BENCH_SECONDS:-6}"

NAME=bench-latency.sh NEEDS="nginx wrk" EXAMPLE=loadgen
# shellcheck source=bench-setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"
LOADGEN="$LOAD_BIN"
cargo build --release --quiet --example tcp_floor
FLOOR_BIN="$TARGET/release/examples/tcp_floor"

UP_PORT=19101 NGINX_PORT=19110 PROXY_PORT=19120 FLOOR_PORT=19130 BUSY_PORT=19140

UP_PID="$(fast_upstream "$UP_PORT")"
NGINX_PID="$(nginx_reverse_proxy "$NGINX_PORT" "$UP_PORT")"

start_proxy "$PROXY_PORT" "http://127.0.0.1:$UP_PORT"
BUSY_POLL_US="${BUSY_POLL_US:-1000}"
start_proxy "$BUSY_PORT" "http://127.0.0.1:$UP_PORT" "$PROXY_BIN@busy_poll_us = $BUSY_POLL_US"
taskset -c 1 "$FLOOR_BIN" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$UP_PORT" & PIDS+=($!)

url_of() {
  case $1 in
    direct) echo "http://127.0.0.1:$UP_PORT/v1/chat/completions" ;;
    nginx) echo "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" ;;
    proxy) echo "http://127.0.0.1:$PROXY_PORT/v1/chat/completions" ;;
    floor) echo "http://127.0.0.1:$FLOOR_PORT/v1/chat/completions" ;;
    busy) echo "http://127.0.0.1:$BUSY_PORT/v1/chat/completions" ;;
  esac
}
WHO="direct floor nginx proxy busy"

if [ -z "${RATES:-}" ]; then
  caps=""
  for _ in 1 2 3; do caps+="$(wrk_round "$(url_of nginx)" "$NGINX_PID" | cut -d' ' -f1)"$'\n'; done
  cap=$(printf '%s' "$caps" | median)
  RATES="1000 $(awk -v r="$cap" 'BEGIN{printf "%d %d", r/4, r/2}')"
fi
for who in $WHO; do taskset -c 0 "$LOADGEN" rate "$(url_of "$who")" 1000 1 64 >/dev/null; done # warm

HALT_POLL=/sys/module/haltpoll/parameters/guest_halt_poll_ns
HALT_POLL_WAS=""
if [ -n "${BENCH_HALT_POLL_NS:-}" ]; then
  [ -w "$HALT_POLL" ] || { echo "bench-latency.sh: BENCH_HALT_POLL_NS needs a writable $HALT_POLL (root, haltpoll cpuidle)" >&2; exit 1; }
  HALT_POLL_WAS="$(cat "$HALT_POLL")"
fi
restore_halt_poll() { if [ -n "$HALT_POLL_WAS" ]; then echo "$HALT_POLL_WAS" > "$HALT_POLL"; fi; }
trap 'restore_halt_poll; cleanup' EXIT

# The rig's own CPU on CPU 0 for one direct round, in % of the core: the generator's (it
# prints it) and the upstream's (bench-setup's `cpu`, in clock ticks of HZ a second).
table() { # title
  declare -A L=()
  for _ in $(seq "$ROUNDS"); do
    for rate in $RATES; do
      for who in $WHO; do
        local up_before; up_before="$(cpu "$UP_PID")"
        read -r p50 p99 _sent _err gen_us < <(taskset -c 0 "$LOADGEN" rate "$(url_of "$who")" "$rate" "$DURATION" 64)
        if [ "$who" = direct ]; then
          local up_us=$(( ($(cpu "$UP_PID") - up_before) * 1000000 / HZ ))
          L[$rate,busy0]+="$(( (gen_us + up_us) / (DURATION * 10000) ))"$'\n'
        fi
        L[$rate,$who,p50]+="$p50"$'\n'; L[$rate,$who,p99]+="$p99"$'\n'
      done
    done
  done
  lm() { printf '%s' "${L[$1,$2,$3]}" | median; }
  echo "### $1"
  echo
  echo "| rate (req/s) | CPU 0 busy, direct | direct p50 / p99 | floor (byte relay) added | nginx added | assistants-proxy added | busy polling ($BUSY_POLL_US µs) added |"
  echo "|---|---|---|---|---|---|---|"
  for rate in $RATES; do
    row="| $rate | $(printf '%s' "${L[$rate,busy0]}" | median) % | $(lm "$rate" direct p50) / $(lm "$rate" direct p99)"
    for who in floor nginx proxy busy; do
      row+=" | $(( $(lm "$rate" "$who" p50) - $(lm "$rate" direct p50) )) / $(( $(lm "$rate" "$who" p99) - $(lm "$rate" direct p99) ))"
    done
    echo "$row |"
  done
  echo
}

mkdir -p bench-results
OUT="bench-results/latency-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "## Added latency over direct, p50 / p99 in µs (median of $ROUNDS interleaved rounds, ${DURATION}s each, 64 connections, open loop)"
  echo
  echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; systems under test on CPU 1, generator + upstream on CPU 0."
  echo "cpuidle: $(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo '?'), guest_halt_poll_ns ${HALT_POLL_WAS:-$(cat "$HALT_POLL" 2>/dev/null || echo '-')}."
  echo
  table "As the machine is"
  if [ -n "$HALT_POLL_WAS" ]; then
    echo "$BENCH_HALT_POLL_NS" > "$HALT_POLL"
    table "Guest halt-polling at $BENCH_HALT_POLL_NS ns"
    restore_halt_poll
  fi
} | tee "$OUT"
