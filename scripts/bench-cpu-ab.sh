#!/usr/bin/env bash
# CPU per forwarded request of several builds side by side, in one rig: nginx returning fixed
# JSON as the upstream (CPU 0), nginx as a keep-alive reverse proxy and every build under test
# on CPU 1, wrk -c50 from CPU 0. Rounds are interleaved, so a noisy spell hits every build.
# It is the quick A/B behind the forwarding figures (bench-proxy.sh measures everything else).
#
# usage: scripts/bench-cpu-ab.sh ROUNDS [NAME=PROXY_BINARY[@KEY=VALUE] ...]
#   Without builds named, it compares this tree's release build with its HTTP/1 relay (the
#   default), the same build with the relay off (hyper's server and client forward), and the
#   hyper floor (examples/hyper_floor.rs: hyper's HTTP/1 server and client with nothing else).
#   A `@KEY=VALUE` suffix adds that line to the build's [server] configuration.
#   BENCH_SECONDS sets the length of each measurement (default 4).
set -euo pipefail

ROUNDS="${1:-3}"; shift || true
DURATION="${BENCH_SECONDS:-4}"
NAME=bench-cpu-ab.sh NEEDS="nginx wrk" EXAMPLE=hyper_floor
# shellcheck source=bench-setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"

UP_PORT=19101 NGINX_PORT=19110
fast_upstream "$UP_PORT" >/dev/null
NGINX_PID="$(nginx_reverse_proxy "$NGINX_PORT" "$UP_PORT")"

declare -A PID PORT
PID[nginx]="$NGINX_PID"; PORT[nginx]=$NGINX_PORT
NAMES=(nginx)
port=19120
start() { # name kind binary[@key=value]
  if [ "$2" = floor ]; then
    taskset -c 1 "$3" "127.0.0.1:$port" "127.0.0.1:$UP_PORT" pool & PIDS+=($!)
  else
    start_proxy "$port" "http://127.0.0.1:$UP_PORT" "$3"
  fi
  PID[$1]=${PIDS[-1]}; PORT[$1]=$port; NAMES+=("$1"); port=$((port + 1))
}
if [ $# -eq 0 ]; then
  start proxy proxy "$PROXY_BIN"
  start proxy-hyper proxy "$PROXY_BIN@http1_fast_path = false"
  start hyper-floor floor "$LOAD_BIN"
else
  for spec in "$@"; do start "${spec%%=*}" proxy "${spec#*=}"; done
fi
for n in "${NAMES[@]}"; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:${PORT[$n]}/" && break; sleep 0.1; done
done

declare -A CPU
for r in $(seq "$ROUNDS"); do
  line="round $r:"
  for n in "${NAMES[@]}"; do
    read -r rps _ _ us < <(wrk_round "http://127.0.0.1:${PORT[$n]}/v1/chat/completions" "${PID[$n]}")
    CPU[$n]+="$us"$'\n'
    line="$line  $n ${us} µs (${rps%.*}/s)"
  done
  echo "$line"
done
base=$(printf '%s' "${CPU[nginx]}" | median)
# The box's speed drifts between rounds far more than within one, so each round's ratio to
# nginx is taken, and their median reported beside the ratio of the medians.
echo "median CPU µs per forwarded request (ratio of medians to nginx's; median of the rounds' ratios):"
for n in "${NAMES[@]}"; do
  m=$(printf '%s' "${CPU[$n]}" | median)
  r=$(paste <(printf '%s' "${CPU[$n]}") <(printf '%s' "${CPU[nginx]}") | awk '{printf "%.4f\n", $1/$2}' | median)
  echo "  $n $m ($(awk -v a="$m" -v b="$base" 'BEGIN{printf "%.2f", a/b}'); $(printf '%.2f' "$r"))"
done
