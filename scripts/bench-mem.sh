#!/usr/bin/env bash
# The memory part of bench-proxy.sh alone, for quick A/B comparisons of proxy builds (about 40 s
# per round and binary): the same set-up (fake SSE upstream on CPU 0, the proxy with one worker
# thread on CPU 1, loadgen on CPU 0) and the same sequence on one fresh proxy process as
# bench-proxy.sh — RSS idle, with 2,000 idle keep-alive connections, then with 2,000 live SSE
# streams (one event a second) — and the same per-connection arithmetic.
#
# usage: scripts/bench-mem.sh [ROUNDS] [PROXY_BIN...]
#   With no binaries, builds and measures this tree's release proxy. With several, the rounds
#   interleave them (A B A B ...) so a noisy box affects each alike. Prints one line per
#   measurement and a median per binary.
set -euo pipefail

ROUNDS="${1:-3}"
shift || true
CONNS="${BENCH_CONNS:-2000}"
NAME=bench-mem.sh EXAMPLE=loadgen
# shellcheck source=bench-setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"
LOADGEN="$LOAD_BIN"
BINS=("$@")
[ "${#BINS[@]}" -eq 0 ] && BINS=("$PROXY_BIN")

SSE_PORT=19130 PROXY_PORT=19121
taskset -c 0 "$FAKE_BIN" --listen "127.0.0.1:$SSE_PORT" > "$WORK/fake.out" & PIDS+=($!)
cat > "$WORK/proxy.toml" <<EOF
[server]
worker_threads = 1
access_log = false
EOF

per() { awk -v a="$1" -v b="$2" -v n="$CONNS" 'BEGIN{printf "%.1f", (a-b)/n}'; }
# loadgen MODE URL SECONDS, held until it prints "ready"; then the proxy's RSS.
held_rss() {
  local fifo="$WORK/lg.fifo"; rm -f "$fifo"; mkfifo "$fifo"
  taskset -c 0 "$LOADGEN" "$1" "$2" "$CONNS" "$3" > "$fifo" & local lg=$!
  read -r _ < "$fifo"; sleep 1; rss_kb "$PROXY"; kill "$lg" 2>/dev/null || true; wait "$lg" 2>/dev/null || true
}

declare -A R
for round in $(seq "$ROUNDS"); do
  for i in "${!BINS[@]}"; do
    bin="${BINS[$i]}"
    rm -f "$WORK"/bench.db*
    RUST_LOG=warn taskset -c 1 "$bin" serve --listen "127.0.0.1:$PROXY_PORT" \
      --upstream "http://127.0.0.1:$SSE_PORT" --store "sqlite://$WORK/bench.db" \
      --config "$WORK/proxy.toml" & PROXY=$!; PIDS+=("$PROXY")
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PROXY_PORT/healthz" >/dev/null && break; sleep 0.1; done
    sleep 1
    idle=$(rss_kb "$PROXY")
    conns=$(held_rss idle "http://127.0.0.1:$PROXY_PORT/echo/idle" 15)
    sleep 2
    streams=$(held_rss sse "http://127.0.0.1:$PROXY_PORT/sse?n=100000&interval_ms=1000" 20)
    kill "$PROXY"; wait "$PROXY" 2>/dev/null || true
    echo "round $round bin $i ($bin): idle ${idle} KB, per idle conn $(per "$conns" "$idle") KB, per SSE stream $(per "$streams" "$idle") KB"
    R[$i,idle]+="$idle"$'\n'; R[$i,conn]+="$(per "$conns" "$idle")"$'\n'; R[$i,sse]+="$(per "$streams" "$idle")"$'\n'
  done
done
for i in "${!BINS[@]}"; do
  m() { printf '%s' "${R[$i,$1]}" | median; }
  echo "median bin $i (${BINS[$i]}): idle $(m idle) KB, per idle conn $(m conn) KB, per SSE stream $(m sse) KB"
done
