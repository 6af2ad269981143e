#!/usr/bin/env bash
# Forwarding benchmark on a 2-core box: assistants-proxy against nginx as a keep-alive reverse
# proxy (proxy_buffering off), both pinned to CPU 1, driven from CPU 0 (wrk / loadgen, with
# the upstream also on CPU 0). Every figure is measured in this one run, beside its baseline.
#
# Reports: throughput and p50/p99 (wrk -c50), CPU µs per forwarded request (utime+stime of the
# system under test from /proc/PID/stat), added latency over direct at half load (open loop),
# RSS idle / with 2,000 idle keep-alive connections / with 2,000 live SSE streams, and the SSE
# inter-chunk gap p99 against a direct connection.
#
# usage: scripts/bench-proxy.sh [ROUNDS]        (results also written to bench-results/)
#        BENCH_RATE=N sets the open-loop rate (default: half of nginx's measured throughput; a
#        second measurement runs at half of that)
set -euo pipefail

ROUNDS="${1:-3}"
DURATION="${BENCH_SECONDS:-8}"

NAME=bench-proxy.sh NEEDS="nginx wrk" EXAMPLE=loadgen
# shellcheck source=bench-setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"
LOADGEN="$LOAD_BIN"

UP_PORT=19001 SSE_PORT=19030 NGINX_PORT=19010 PROXY_PORT=19020 PROXY_SSE_PORT=19021


# The fast upstream: nginx returning fixed JSON, on CPU 0.
fast_upstream "$UP_PORT" >/dev/null
# A streaming upstream (SSE) for the stream measurements, on CPU 0.
taskset -c 0 "$FAKE_BIN" --listen "127.0.0.1:$SSE_PORT" > "$WORK/fake.out" & PIDS+=($!)

# nginx as the reference reverse proxy, on CPU 1, with a route to the streaming upstream.
NGINX_PID="$(nginx_reverse_proxy "$NGINX_PORT" "$UP_PORT" \
  "upstream sse { server 127.0.0.1:$SSE_PORT; keepalive 64; }" \
  "location /sse { proxy_pass http://sse; $NGINX_PROXYING }")"

start_proxy "$PROXY_PORT" "http://127.0.0.1:$UP_PORT"
PROXY_PID="${PIDS[-1]}"

declare -A R
for _ in $(seq "$ROUNDS"); do
  for sut in nginx proxy; do
    if [ "$sut" = nginx ]; then line=$(wrk_round "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" "$NGINX_PID")
    else line=$(wrk_round "http://127.0.0.1:$PROXY_PORT/v1/chat/completions" "$PROXY_PID"); fi
    R[$sut,rps]+="$(echo "$line" | cut -d' ' -f1)"$'\n'
    R[$sut,p50]+="$(echo "$line" | cut -d' ' -f2)"$'\n'
    R[$sut,p99]+="$(echo "$line" | cut -d' ' -f3)"$'\n'
    R[$sut,cpu]+="$(echo "$line" | cut -d' ' -f4)"$'\n'
  done
done
m() { printf '%s' "${R[$1,$2]}" | median; }

# Open-loop latency at half of nginx's measured rate, direct vs through each proxy, and at a
# quarter of it: on a 2-core box the core that runs the load generator and the upstream
# saturates near half load, and the quarter-rate rows show the proxies without that queue.
HALF=${BENCH_RATE:-$(awk -v r="$(m nginx rps)" 'BEGIN{printf "%d", r/2}')}
QUARTER=$((HALF / 2))
lat() { taskset -c 0 "$LOADGEN" rate "$1" "$2" "$DURATION" 64; }
declare -A L
for _ in $(seq "$ROUNDS"); do
  for rate in "$HALF" "$QUARTER"; do
    for who in direct nginx proxy; do
      case $who in
        direct) url="http://127.0.0.1:$UP_PORT/v1/chat/completions" ;;
        nginx) url="http://127.0.0.1:$NGINX_PORT/v1/chat/completions" ;;
        proxy) url="http://127.0.0.1:$PROXY_PORT/v1/chat/completions" ;;
      esac
      read -r p50 p99 _sent _err < <(lat "$url" "$rate")
      L[$rate,$who,p50]+="$p50"$'\n'; L[$rate,$who,p99]+="$p99"$'\n'
    done
  done
done
lm() { printf '%s' "${L[$1,$2,$3]}" | median; }
added() { echo $(( $(lm "$1" "$2" "$3") - $(lm "$1" direct "$3") )); } # rate who p50|p99

# Memory: fresh, with 2,000 idle keep-alive connections, with 2,000 live SSE streams.
start_proxy "$PROXY_SSE_PORT" "http://127.0.0.1:$SSE_PORT"
PROXY_SSE_PID="${PIDS[-1]}"
sleep 1
idle_kb_proxy=$(rss_kb "$PROXY_SSE_PID"); idle_kb_nginx=$(rss_kb "$NGINX_PID")
hold() { # url pid → rss while 2000 idle conns are held
  local fifo="$WORK/hold.fifo"; rm -f "$fifo"; mkfifo "$fifo"
  taskset -c 0 "$LOADGEN" idle "$1" 2000 15 > "$fifo" & local lg=$!
  read -r _ < "$fifo"; sleep 1; rss_kb "$2"; kill "$lg" 2>/dev/null || true; wait "$lg" 2>/dev/null || true
}
conns_kb_proxy=$(hold "http://127.0.0.1:$PROXY_SSE_PORT/echo/idle" "$PROXY_SSE_PID")
conns_kb_nginx=$(hold "http://127.0.0.1:$NGINX_PORT/v1/models" "$NGINX_PID")
sleep 2
streams() { # url pid → "rss_kb" while 2000 SSE streams are live
  local fifo="$WORK/sse.fifo"; rm -f "$fifo"; mkfifo "$fifo"
  taskset -c 0 "$LOADGEN" sse "$1" 2000 20 > "$fifo" & local lg=$!
  read -r _ < "$fifo"; sleep 1; rss_kb "$2"; kill "$lg" 2>/dev/null || true; wait "$lg" 2>/dev/null || true
}
SSE_LONG="sse?n=100000&interval_ms=1000"
streams_kb_proxy=$(streams "http://127.0.0.1:$PROXY_SSE_PORT/$SSE_LONG" "$PROXY_SSE_PID")
streams_kb_nginx=$(streams "http://127.0.0.1:$NGINX_PORT/$SSE_LONG" "$NGINX_PID")

# SSE inter-chunk gaps: 50 streams of events 20 ms apart, direct vs through each proxy.
gaps() { taskset -c 0 "$LOADGEN" sse "$1" 50 4 | tail -1; }
SSE_FAST="sse?n=150&interval_ms=20"
read -r _ _ _ gap_direct _ _ < <(gaps "http://127.0.0.1:$SSE_PORT/$SSE_FAST")
read -r _ _ _ gap_nginx _ _ < <(gaps "http://127.0.0.1:$NGINX_PORT/$SSE_FAST")
read -r _ _ _ gap_proxy _ _ < <(gaps "http://127.0.0.1:$PROXY_SSE_PORT/$SSE_FAST")

per() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", (a-b)/2000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b==0) print "-"; else printf "%.2f", a/b }'; }
mkdir -p bench-results
OUT="bench-results/proxy-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "## Forwarding: assistants-proxy vs nginx (median of $ROUNDS interleaved rounds, ${DURATION}s each)"
  echo
  echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; SUT on CPU 1, load + upstream on CPU 0."
  echo
  echo "| metric | nginx | assistants-proxy | proxy / nginx |"
  echo "|---|---|---|---|"
  echo "| throughput, wrk -c50 (req/s) | $(m nginx rps) | $(m proxy rps) | $(ratio "$(m proxy rps)" "$(m nginx rps)") |"
  echo "| p50 / p99 at saturation (µs) | $(m nginx p50) / $(m nginx p99) | $(m proxy p50) / $(m proxy p99) | |"
  echo "| **CPU µs per forwarded request** | $(m nginx cpu) | $(m proxy cpu) | $(ratio "$(m proxy cpu)" "$(m nginx cpu)") |"
  for rate in "$HALF" "$QUARTER"; do
    echo "| added p50 / p99 over direct at $rate req/s (µs) | $(added "$rate" nginx p50) / $(added "$rate" nginx p99) | $(added "$rate" proxy p50) / $(added "$rate" proxy p99) | |"
  done
  echo "| RSS idle (MB) | $(awk -v k="$idle_kb_nginx" 'BEGIN{printf "%.1f", k/1024}') | $(awk -v k="$idle_kb_proxy" 'BEGIN{printf "%.1f", k/1024}') | |"
  echo "| RSS per idle keep-alive connection, 2,000 held (KB) | $(per "$conns_kb_nginx" "$idle_kb_nginx") | $(per "$conns_kb_proxy" "$idle_kb_proxy") | |"
  echo "| RSS per live SSE stream, 2,000 open (KB) | $(per "$streams_kb_nginx" "$idle_kb_nginx") | $(per "$streams_kb_proxy" "$idle_kb_proxy") | |"
  echo "| SSE inter-chunk gap p99, 50 streams at 20 ms (µs; direct $gap_direct) | $gap_nginx | $gap_proxy | |"
  echo
  echo "Direct (no proxy) at $HALF req/s: p50 $(lm "$HALF" direct p50) µs, p99 $(lm "$HALF" direct p99) µs; at $QUARTER req/s: p50 $(lm "$QUARTER" direct p50) µs, p99 $(lm "$QUARTER" direct p99) µs."
} | tee "$OUT"
