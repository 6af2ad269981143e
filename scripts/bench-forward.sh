#!/usr/bin/env bash
# Forwarding benchmarks on a 2-core box: assistants-proxy beside nginx as a keep-alive reverse
# proxy (proxy_buffering off). The systems under test sit on CPU 1; the load generators (wrk,
# examples/loadgen) and the upstreams share CPU 0: nginx answering fixed JSON (the fast
# upstream), and the fake upstream (crates/fake-upstream) for SSE streams and idle
# connections. Every figure is measured in one run beside its baseline, in rounds that
# interleave every system, so a noisy spell hits each alike; medians of the rounds are
# reported. Tables go to stdout and bench-results/forward-MODE-*.md; per-round lines to stderr.
#
# usage: scripts/bench-forward.sh cpu|latency|memory|all [ROUNDS] [NAME=PROXY_BINARY[@KEY=VALUE] ...]
#
#   cpu      Throughput, p50 / p99 at saturation and CPU µs per forwarded request (utime+stime
#            of the system under test from /proc/PID/stat), wrk -c50 for BENCH_SECONDS
#            (default 4) after a 2 s warm-up, each beside nginx: the ratio of the medians and
#            the median of each round's ratio (the box's speed drifts between rounds far more
#            than within one). Builds: this tree's release build with its HTTP/1 relay (the
#            default), the same build with the relay off (hyper's server and client forward),
#            and the hyper floor (examples/hyper_floor.rs: hyper's HTTP/1 server and client
#            with nothing else).
#   latency  Added latency over direct, open loop (loadgen rate, 64 connections, latency from
#            each request's scheduled time) for BENCH_SECONDS (default 6), at RATES (default
#            1000, then a quarter and a half of nginx's wrk -c50 throughput; BENCH_RATE=N
#            makes N the half), for the machine's floor (examples/tcp_floor.rs, a byte relay
#            with no HTTP: what any proxy adds at the least), nginx, this tree's build, and
#            the same with busy polling (`busy_poll_us = BUSY_POLL_US`, default 1000: its
#            event loop keeps polling between requests instead of letting its vCPU halt, at
#            the price of that core). "CPU 0 busy, direct" is how much of that core the rig
#            itself (generator and upstream, interrupts not counted) takes at each rate with
#            no proxy: near 100 % the rate is more than the rig can present, and that row
#            measures queueing on CPU 0 rather than the proxies.
#            A proxy's added latency on an otherwise idle core is mostly the cost of waking
#            that core, twice per request. On a KVM guest with the haltpoll cpuidle driver,
#            BENCH_HALT_POLL_NS=N (root) repeats the table with guest halt-polling at N ns
#            (an idle vCPU polls that long before it halts; the kernel's default is 200000,
#            some clouds set 0), then puts the machine's value back: the difference between
#            the two tables is what the machine charges for waking a halted vCPU.
#   memory   RSS of a fresh process (each round starts every build anew) idle, with
#            BENCH_CONNS (default 2,000) idle keep-alive connections held 15 s, then with as
#            many live SSE streams (one event a second) held 20 s, as KB per connection over
#            idle; then the SSE inter-chunk gap p99 of 50 streams of events 20 ms apart (4 s),
#            against a direct connection to the fake. Beside nginx (one daemon for the run).
#            Builds: this tree's release build.
#   all      cpu, latency (at a quarter and a half of the rate cpu measured, and 1000) and
#            memory, in that order, into one file.
#
# NAME=PROXY_BINARY[@KEY=VALUE] replaces the default builds with the ones named (an A/B of
# several builds; the latency table then has no busy-polling column unless one is named with
# `@busy_poll_us = N`); a `@KEY=VALUE` suffix adds that line to the build's [server]
# configuration, and NAME=floor is the hyper floor. PROXY_BIN=PATH makes another binary "this
# tree's build". ROUNDS defaults to 3.
set -euo pipefail

usage() { sed -n '10,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
MODE="${1:-}"; [ $# -gt 0 ] && shift
ROUNDS="${1:-3}"; [ $# -gt 0 ] && shift
case "$MODE" in cpu|latency|memory|all) ;; *) usage ;; esac
case "$ROUNDS" in ''|*[!0-9]*) usage ;; esac
SPECS=("$@")

NAME=bench-forward.sh NEEDS="nginx wrk" EXAMPLES="fake_upstream loadgen hyper_floor tcp_floor"
# shellcheck source=bench-setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"
LOADGEN="$EXAMPLES_DIR/loadgen"
for spec in "${SPECS[@]}"; do # a typo fails now, not after minutes of other rounds
  case "$spec" in
    *=floor) ;;
    ?*=?*) bin="$(abs_path "${spec#*=}")"; bin="${bin%%@*}"
           [ -x "$bin" ] || { echo "$NAME: $bin (in $spec) is not an executable" >&2; exit 1; } ;;
    *) usage ;;
  esac
done
CONNS="${BENCH_CONNS:-2000}"
BUSY_POLL_US="${BUSY_POLL_US:-1000}"

HALT_POLL=/sys/module/haltpoll/parameters/guest_halt_poll_ns
HALT_POLL_WAS=""
if [ -n "${BENCH_HALT_POLL_NS:-}" ] && [[ $MODE == latency || $MODE == all ]]; then
  [ -w "$HALT_POLL" ] || { echo "$NAME: BENCH_HALT_POLL_NS needs a writable $HALT_POLL (root, haltpoll cpuidle)" >&2; exit 1; }
  HALT_POLL_WAS="$(cat "$HALT_POLL")"
fi
restore_halt_poll() { if [ -n "$HALT_POLL_WAS" ]; then echo "$HALT_POLL_WAS" > "$HALT_POLL"; fi; }
trap 'restore_halt_poll; cleanup' EXIT

# The rig every mode shares. nginx routes /sse to the fake (for the memory mode's streams).
UP_PORT=19101 SSE_PORT=19102 NGINX_PORT=19110 FLOOR_PORT=19111
UP_PID="$(fast_upstream "$UP_PORT")"
start_fake "$SSE_PORT"
NGINX_PID="$(nginx_reverse_proxy "$NGINX_PORT" "$UP_PORT" \
  "upstream sse { server 127.0.0.1:$SSE_PORT; keepalive 64; }" \
  "location /sse { proxy_pass http://sse; $NGINX_PROXYING }")"
NEXT_PORT=19120 # each started build takes the next

# The builds under test: LABELS[i] is how tables name build i, BUILDS[i] its
# PROXY_BINARY[@KEY=VALUE] (or `floor` for examples/hyper_floor.rs).
set_builds() { # section
  LABELS=() BUILDS=()
  if [ "${#SPECS[@]}" -gt 0 ]; then
    local spec build
    for spec in "${SPECS[@]}"; do
      build="${spec#*=}"
      [ "$build" = floor ] || build="$(abs_path "$build")"
      LABELS+=("${spec%%=*}"); BUILDS+=("$build")
    done
    return
  fi
  case $1 in
    cpu) LABELS=(proxy proxy-hyper hyper-floor)
         BUILDS=("$PROXY_BIN" "$PROXY_BIN@http1_fast_path = false" floor) ;;
    latency) LABELS=(assistants-proxy "busy polling ($BUSY_POLL_US µs)")
             BUILDS=("$PROXY_BIN" "$PROXY_BIN@busy_poll_us = $BUSY_POLL_US") ;;
    memory) LABELS=(assistants-proxy); BUILDS=("$PROXY_BIN") ;;
  esac
}

# Starts build SPEC in front of UPSTREAM_PORT on the next free port (each build its own store):
# sets STARTED_PID and STARTED_PORT.
start_build() { # spec upstream_port
  STARTED_PORT=$NEXT_PORT; NEXT_PORT=$((NEXT_PORT + 1))
  if [ "$1" = floor ]; then
    taskset -c 1 "$EXAMPLES_DIR/hyper_floor" "127.0.0.1:$STARTED_PORT" "127.0.0.1:$2" pool & PIDS+=($!)
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$STARTED_PORT/" && break; sleep 0.1; done
  else
    start_proxy "$STARTED_PORT" "http://127.0.0.1:$2" "$1"
  fi
  STARTED_PID="${PIDS[-1]}"
}

cpu_model() { echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; systems under test on CPU 1, load generator + upstream on CPU 0."; }
builds_line() {
  if [ "${#SPECS[@]}" -gt 0 ]; then echo "Builds: ${SPECS[*]}."; else echo "This tree's build: $PROXY_BIN."; fi
}

# ---- cpu: wrk -c50 rounds over nginx and every build -------------------------------------
NGINX_RPS="" # the median nginx throughput cpu measured (all's latency rates come from it)
section_cpu() {
  local DURATION="${BENCH_SECONDS:-4}" i r line rps p50 p99 us
  set_builds cpu
  local -a names=(nginx) pids=("$NGINX_PID") ports=("$NGINX_PORT") started_pids=()
  for i in "${!BUILDS[@]}"; do
    start_build "${BUILDS[$i]}" "$UP_PORT"
    names+=("${LABELS[$i]}"); pids+=("$STARTED_PID"); ports+=("$STARTED_PORT"); started_pids+=("$STARTED_PID")
  done
  local -A R=()
  for r in $(seq "$ROUNDS"); do
    line="round $r:"
    for i in "${!names[@]}"; do
      read -r rps p50 p99 us < <(wrk_round "http://127.0.0.1:${ports[$i]}/v1/chat/completions" "${pids[$i]}")
      R[$i,rps]+="$rps"$'\n'; R[$i,p50]+="$p50"$'\n'; R[$i,p99]+="$p99"$'\n'; R[$i,cpu]+="$us"$'\n'
      line="$line  ${names[$i]} ${us} µs (${rps%.*}/s)"
    done
    echo "$line" >&2
  done
  for p in "${started_pids[@]}"; do stop_pid "$p"; done
  m() { printf '%s' "${R[$1,$2]}" | median; }
  NGINX_RPS="$(m 0 rps)"
  echo "### CPU per forwarded request and throughput (wrk -c50, median of $ROUNDS interleaved rounds, ${DURATION}s each)"
  echo
  echo "| system | throughput (req/s) | p50 / p99 at saturation (µs) | **CPU µs per forwarded request** | throughput ÷ nginx | CPU ÷ nginx (ratio of medians; median of the rounds' ratios) |"
  echo "|---|---|---|---|---|---|"
  for i in "${!names[@]}"; do
    local per_round
    per_round=$(paste <(printf '%s' "${R[$i,cpu]}") <(printf '%s' "${R[0,cpu]}") | awk '{printf "%.4f\n", $1/$2}' | median)
    echo "| ${names[$i]} | $(m "$i" rps) | $(m "$i" p50) / $(m "$i" p99) | $(m "$i" cpu) | $(ratio "$(m "$i" rps)" "$(m 0 rps)") | $(ratio "$(m "$i" cpu)" "$(m 0 cpu)"); $(printf '%.2f' "$per_round") |"
  done
  echo
}

# ---- latency: open loop at several rates, beside direct, the byte relay and nginx --------
section_latency() {
  local DURATION="${BENCH_SECONDS:-6}" i who
  set_builds latency
  taskset -c 1 "$EXAMPLES_DIR/tcp_floor" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$UP_PORT" & PIDS+=($!)
  local floor_pid="${PIDS[-1]}"
  local -A URL=(
    [direct]="http://127.0.0.1:$UP_PORT/v1/chat/completions"
    [floor]="http://127.0.0.1:$FLOOR_PORT/v1/chat/completions"
    [nginx]="http://127.0.0.1:$NGINX_PORT/v1/chat/completions")
  local -a who=(direct floor nginx) started_pids=()
  for i in "${!BUILDS[@]}"; do
    start_build "${BUILDS[$i]}" "$UP_PORT"
    URL[b$i]="http://127.0.0.1:$STARTED_PORT/v1/chat/completions"; who+=("b$i"); started_pids+=("$STARTED_PID")
  done
  for _ in $(seq 100); do curl -s -o /dev/null "${URL[floor]}" && break; sleep 0.1; done

  local rates="${RATES:-}"
  if [ -z "$rates" ]; then
    local half
    if [ -n "${BENCH_RATE:-}" ]; then half="$BENCH_RATE"
    else
      if [ -z "$NGINX_RPS" ]; then # not measured by cpu in this run: nginx's wrk -c50 rate
        local caps=""
        for _ in 1 2 3; do caps+="$(wrk_round "${URL[nginx]}" "$NGINX_PID" | cut -d' ' -f1)"$'\n'; done
        NGINX_RPS=$(printf '%s' "$caps" | median)
      fi
      half=$(awk -v r="$NGINX_RPS" 'BEGIN{printf "%d", r/2}')
    fi
    rates="1000 $((half / 2)) $half"
  fi
  for w in "${who[@]}"; do taskset -c 0 "$LOADGEN" rate "${URL[$w]}" 1000 1 64 >/dev/null; done # warm

  # The rig's own CPU on CPU 0 for one direct round, in % of the core: the generator's (it
  # prints it) and the upstream's (cpu, in clock ticks of HZ a second).
  table() { # title
    local -A L=()
    local rate w p50 p99 gen_us up_before up_us row
    for _ in $(seq "$ROUNDS"); do
      for rate in $rates; do
        for w in "${who[@]}"; do
          up_before="$(cpu "$UP_PID")"
          read -r p50 p99 _ _ gen_us < <(taskset -c 0 "$LOADGEN" rate "${URL[$w]}" "$rate" "$DURATION" 64)
          if [ "$w" = direct ]; then
            up_us=$(( ($(cpu "$UP_PID") - up_before) * 1000000 / HZ ))
            L[$rate,busy0]+="$(( (gen_us + up_us) / (DURATION * 10000) ))"$'\n'
          fi
          L[$rate,$w,p50]+="$p50"$'\n'; L[$rate,$w,p99]+="$p99"$'\n'
        done
      done
    done
    lm() { printf '%s' "${L[$1,$2,$3]}" | median; }
    echo "#### $1"
    echo
    row="| rate (req/s) | CPU 0 busy, direct | direct p50 / p99 | floor (byte relay) added | nginx added"
    for i in "${!BUILDS[@]}"; do row+=" | ${LABELS[$i]} added"; done
    echo "$row |"
    echo "|---|---|---|---|---$(printf '|---%.0s' "${BUILDS[@]}")|"
    for rate in $rates; do
      row="| $rate | $(printf '%s' "${L[$rate,busy0]}" | median) % | $(lm "$rate" direct p50) / $(lm "$rate" direct p99)"
      for w in "${who[@]:1}"; do
        row+=" | $(( $(lm "$rate" "$w" p50) - $(lm "$rate" direct p50) )) / $(( $(lm "$rate" "$w" p99) - $(lm "$rate" direct p99) ))"
      done
      echo "$row |"
    done
    echo
  }

  echo "### Added latency over direct, p50 / p99 in µs (median of $ROUNDS interleaved rounds, ${DURATION}s each, 64 connections, open loop)"
  echo
  echo "cpuidle: $(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo '?'), guest_halt_poll_ns ${HALT_POLL_WAS:-$(cat "$HALT_POLL" 2>/dev/null || echo '-')}."
  echo
  table "As the machine is"
  if [ -n "$HALT_POLL_WAS" ]; then
    echo "$BENCH_HALT_POLL_NS" > "$HALT_POLL"
    table "Guest halt-polling at $BENCH_HALT_POLL_NS ns"
    restore_halt_poll
  fi
  for p in "$floor_pid" "${started_pids[@]}"; do stop_pid "$p"; done
}

# ---- memory: RSS idle, per idle connection, per SSE stream; SSE gaps ---------------------
section_memory() {
  local r i pid port idle conns streams gap
  set_builds memory
  local SSE_LONG="sse?n=100000&interval_ms=1000" SSE_FAST="sse?n=150&interval_ms=20"
  # 50 streams of events 20 ms apart for 4 s: the inter-chunk gap p99 (µs).
  gap_p99() { taskset -c 0 "$LOADGEN" sse "$1" 50 4 | tail -1 | cut -d' ' -f4; }
  per() { awk -v a="$1" -v b="$2" -v n="$CONNS" 'BEGIN{printf "%.1f", (a-b)/n}'; }
  local -a names=(nginx) ; for i in "${!LABELS[@]}"; do names+=("${LABELS[$i]}"); done
  local -A R=()
  for r in $(seq "$ROUNDS"); do
    R[direct,gap]+="$(gap_p99 "http://127.0.0.1:$SSE_PORT/$SSE_FAST")"$'\n'
    for i in "${!names[@]}"; do
      if [ "$i" = 0 ]; then # nginx: its one daemon; idle connections go to the fast upstream
        pid="$NGINX_PID"; port="$NGINX_PORT"; idle=$(rss_kb "$pid")
        conns=$(held "$pid" "$LOADGEN" idle "http://127.0.0.1:$port/v1/models" "$CONNS" 15)
      else # a fresh process (on a fresh store), in front of the fake
        start_build "${BUILDS[$((i - 1))]}" "$SSE_PORT"; pid="$STARTED_PID"; port="$STARTED_PORT"
        sleep 1
        idle=$(rss_kb "$pid")
        conns=$(held "$pid" "$LOADGEN" idle "http://127.0.0.1:$port/echo/idle" "$CONNS" 15)
      fi
      sleep 2
      streams=$(held "$pid" "$LOADGEN" sse "http://127.0.0.1:$port/$SSE_LONG" "$CONNS" 20)
      sleep 2
      gap=$(gap_p99 "http://127.0.0.1:$port/$SSE_FAST")
      [ "$i" = 0 ] || stop_pid "$pid"
      echo "round $r ${names[$i]}: idle ${idle} KB, per idle conn $(per "$conns" "$idle") KB, per SSE stream $(per "$streams" "$idle") KB, SSE gap p99 ${gap} µs" >&2
      R[$i,idle]+="$idle"$'\n'; R[$i,conn]+="$(per "$conns" "$idle")"$'\n'
      R[$i,sse]+="$(per "$streams" "$idle")"$'\n'; R[$i,gap]+="$gap"$'\n'
    done
  done
  m() { printf '%s' "${R[$1,$2]}" | median; }
  echo "### Memory and SSE streams (median of $ROUNDS interleaved rounds; each build a fresh process per round)"
  echo
  echo "| system | RSS idle (MB) | RSS per idle keep-alive connection, $CONNS held (KB) | RSS per live SSE stream, $CONNS open (KB) | SSE inter-chunk gap p99, 50 streams at 20 ms (µs; direct $(m direct gap)) |"
  echo "|---|---|---|---|---|"
  for i in "${!names[@]}"; do
    echo "| ${names[$i]} | $(awk -v k="$(m "$i" idle)" 'BEGIN{printf "%.1f", k/1024}') | $(m "$i" conn) | $(m "$i" sse) | $(m "$i" gap) |"
  done
  echo
}

# The tables to stdout and OUT. (Through a redirection, not a `{ } | tee` pipeline: the
# sections must run in this shell, so the processes they start are in PIDS for cleanup.)
mkdir -p bench-results
OUT="bench-results/forward-$MODE-$(date -u +%Y%m%dT%H%M%SZ).md"
exec 3>&1 > >(tee "$OUT")
TEE_PID=$!
echo "## Forwarding beside nginx: $MODE ($ROUNDS rounds)"
echo
cpu_model
builds_line
echo
case $MODE in
  cpu) section_cpu ;;
  latency) section_latency ;;
  memory) section_memory ;;
  all) section_cpu; section_latency; section_memory ;;
esac
exec >&3 3>&-
wait "$TEE_PID"
