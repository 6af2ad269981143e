# shellcheck shell=bash
# The set-up every bench script shares (sourced, not run): builds the release proxy and the
# examples the script needs, makes a work directory that is removed, with every process the
# script started, when it exits, and gives the rigs and measuring helpers below.
#
# The sourcing script sets NAME (for messages), EXAMPLES (the examples to build besides the
# proxy, e.g. "fake_upstream loadgen") and, optionally, NEEDS (further commands it runs) before
# sourcing. Afterwards it has ROOT (and is in it), TARGET, EXAMPLES_DIR (the release examples),
# PROXY_BIN (given, or the release build), WORK, and PIDS (append the pid of every process it
# starts; stop_pid ends one early).
#
# Rigs: nginx daemons started with `-p "$WORK/<dir>"` are stopped through their pid files;
# nginx_conf writes such a daemon's configuration, and BODY is the fixed JSON answer of the
# fast upstream. nginx_start starts one; fast_upstream and nginx_reverse_proxy start the two
# every forwarding bench uses; start_fake starts the fake upstream (examples/fake_upstream, the
# fake-upstream crate); start_proxy starts assistants-proxy; api_rig starts the fake and one
# proxy per store backend for the API benches. Measuring helpers: cpu (a process's CPU ticks),
# rss_kb, median, ratio, to_us, wrk_round and held (RSS while load generator connections are
# held open).
#
# Every pinned rig follows one layout on a 2-core box: the system under test on CPU 1 (one
# worker thread, no access log); load generator and upstream on CPU 0.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# A binary named relative to where the script was started (PROXY_BIN, bench-forward's
# NAME=BINARY) stays that binary after the cd below.
CALLER_DIR="$PWD"
abs_path() { case "$1" in /*) echo "$1" ;; *) echo "$CALLER_DIR/$1" ;; esac; }
if [ -n "${PROXY_BIN:-}" ]; then PROXY_BIN="$(abs_path "$PROXY_BIN")"; fi
cd "$ROOT" || exit 1
for tool in taskset curl cargo python3 ${NEEDS:-}; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$NAME: '$tool' is required (Debian: nginx-light, wrk)" >&2; exit 1; }
done

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
# BENCH_BUILT=DIR measures binaries built earlier (DIR/assistants-proxy and DIR/examples/*,
# e.g. copied out of target/release) without building: a release build takes most of an
# hour on a loaded 2-core box, and the tree may have moved on since.
if [ -n "${BENCH_BUILT:-}" ]; then
  BENCH_BUILT="$(abs_path "$BENCH_BUILT")"
  PROXY_BIN="${PROXY_BIN:-$BENCH_BUILT/assistants-proxy}"
  EXAMPLES_DIR="$BENCH_BUILT/examples"
else
  build_args=(--bin assistants-proxy)
  for ex in ${EXAMPLES:-}; do build_args+=(--example "$ex"); done
  cargo build --release --quiet "${build_args[@]}"
  EXAMPLES_DIR="$TARGET/release/examples"
fi
# PROXY_BIN may name another build of the proxy (an A/B against a copy of an older one).
PROXY_BIN="${PROXY_BIN:-$TARGET/release/assistants-proxy}"
[ -x "$PROXY_BIN" ] || { echo "$NAME: PROXY_BIN $PROXY_BIN is not an executable" >&2; exit 1; }
for ex in ${EXAMPLES:-}; do
  [ -x "$EXAMPLES_DIR/$ex" ] || { echo "$NAME: example $EXAMPLES_DIR/$ex is not built" >&2; exit 1; }
done

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for f in "$WORK"/*/nginx.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
# Ends one started process (its pid stays in PIDS; cleanup's second kill finds nothing).
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

BODY='{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}'

nginx_conf() { # dir listen_block
  mkdir -p "$1/tmp"
  cat > "$1/nginx.conf" <<EOF
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $1/tmp/body; proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fcgi; uwsgi_temp_path $1/tmp/uwsgi; scgi_temp_path $1/tmp/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  $2
}
EOF
}

# Starts the nginx daemon configured in DIR (by nginx_conf) pinned to CPU, and prints the pid
# of its one worker, pinned too (the process whose CPU time is measured).
nginx_start() { # dir cpu
  taskset -c "$2" nginx -p "$1" -c "$1/nginx.conf"
  sleep 0.5
  local worker; worker="$(pgrep -P "$(cat "$1/nginx.pid")" | head -1)"
  taskset -pc "$2" "$worker" >/dev/null
  echo "$worker"
}

# The fast upstream: nginx answering BODY to anything on PORT, pinned to CPU 0.
fast_upstream() { # port   (prints its worker's pid)
  nginx_conf "$WORK/up" "server { listen 127.0.0.1:$1; location / { default_type application/json; return 200 '$BODY'; } }"
  nginx_start "$WORK/up" 0
}

# The directives that make nginx the reference reverse proxy: keep-alive upstream connections
# and nothing buffered, so it streams as assistants-proxy does.
NGINX_PROXYING='proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; proxy_read_timeout 3600s;'

# nginx as the reference reverse proxy on PORT in front of the fast upstream on UP_PORT,
# pinned to CPU 1; prints its worker's pid. HTTP_EXTRA and SERVER_EXTRA add upstreams and
# locations (bench-forward's SSE route).
nginx_reverse_proxy() { # port up_port [http_extra] [server_extra]
  nginx_conf "$WORK/sut" "
  upstream up { server 127.0.0.1:$2; keepalive 64; }
  ${3:-}
  server {
    listen 127.0.0.1:$1;
    ${4:-}
    location / { proxy_pass http://up; $NGINX_PROXYING proxy_request_buffering off; }
  }"
  nginx_start "$WORK/sut" 1
}

# The fake OpenAI upstream on PORT, pinned to CPU 0, once it listens; its pid is the last of
# PIDS. Its chunk delay defaults to 0 and no model name selects pacing: instant answers.
start_fake() { # port
  taskset -c 0 "$EXAMPLES_DIR/fake_upstream" --listen "127.0.0.1:$1" > "$WORK/fake-$1.out" & PIDS+=($!)
  for _ in $(seq 100); do grep -q '^listening on' "$WORK/fake-$1.out" 2>/dev/null && return 0; sleep 0.1; done
  echo "$NAME: the fake upstream on port $1 did not start" >&2; exit 1
}

# Starts assistants-proxy on PORT in front of UPSTREAM, pinned to CPU 1 with one worker thread
# and no access log, on STORE (default: a SQLite file of its own), and waits until it answers
# /healthz (a minute: a Cassandra store makes its schema first); its pid is the last of PIDS,
# its log $WORK/proxy-PORT.log. BINARY defaults to PROXY_BIN; a `@LINE` suffix adds LINE to
# its [server] configuration.
start_proxy() { # port upstream [binary[@line]] [store]
  local spec="${3:-$PROXY_BIN}" store="${4:-sqlite://$WORK/bench-$1.db}" conf="$WORK/proxy-$1.toml"
  printf '[server]\nworker_threads = 1\naccess_log = false\n' > "$conf"
  case "$spec" in *@*) echo "${spec#*@}" >> "$conf" ;; esac
  RUST_LOG=warn taskset -c 1 "${spec%%@*}" serve --listen "127.0.0.1:$1" --upstream "$2" \
    --store "$store" --config "$conf" > "$WORK/proxy-$1.log" 2>&1 & PIDS+=($!)
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "$NAME: the proxy on port $1 did not start:" >&2; cat "$WORK/proxy-$1.log" >&2; exit 1
}

# The API benches' rig: the fake upstream on UP_PORT (CPU 0) and one proxy per backend on
# CPU 1: SQLite always, Cassandra when ASSISTANTS_PROXY_TEST_CASSANDRA is set. Sets DURATION
# (BENCH_SECONDS, default 5), CASS, UP, AUTH (curl's headers for the API), BACKENDS,
# BASE[backend] and PID[backend].
api_rig() { # up_port sqlite_port cassandra_port
  DURATION="${BENCH_SECONDS:-5}"
  CASS="${ASSISTANTS_PROXY_TEST_CASSANDRA:-}"
  UP="http://127.0.0.1:$1"
  AUTH=(-H 'Authorization: Bearer sk-bench' -H 'OpenAI-Beta: assistants=v2' -H 'Content-Type: application/json')
  start_fake "$1"
  BACKENDS=(sqlite)
  declare -gA BASE PID
  start_proxy "$2" "$UP" "" "sqlite://$WORK/bench.db"
  BASE[sqlite]="http://127.0.0.1:$2"; PID[sqlite]="${PIDS[-1]}"
  if [ -n "$CASS" ]; then
    # A fixed keyspace, so repeated runs do not pile keyspaces up on a shared node.
    start_proxy "$3" "$UP" "" "cassandra://$CASS/assistants_bench?replication=1"
    BASE[cassandra]="http://127.0.0.1:$3"; PID[cassandra]="${PIDS[-1]}"
    BACKENDS+=(cassandra)
  fi
}

cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
status_kb() { awk -v f="$2:" '$1==f{print $2}' "/proc/$1/status"; } # pid VmRSS|VmHWM|...
rss_kb() { status_kb "$1" VmRSS; }
HZ="$(getconf CLK_TCK)"
median() { sort -g | awk '{a[NR]=$1} END{ if (NR==0) print 0; else print a[int((NR+1)/2)] }'; }
ratio() { awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN{ if (b==0) print "-"; else printf f, a/b }'; }
to_us() { # wrk latency like 512.00us / 1.23ms / 2.00s → µs
  awk -v v="$1" 'BEGIN{ if (v ~ /us$/) { sub(/us/,"",v); print v+0 } else if (v ~ /ms$/) { sub(/ms/,"",v); print v*1000 } else if (v ~ /s$/) { sub(/s/,"",v); print v*1000000 } else print v }'
}

# One wrk round (-c50, DURATION seconds, from CPU 0) against URL while PID is the system under
# test: "rps p50_us p99_us cpu_us_per_req".
wrk_round() {
  local url="$1" pid="$2" out="$WORK/wrk.out"
  taskset -c 0 wrk -t1 -c50 -d2s "$url" >/dev/null 2>&1 # warm pools
  local c0 c1; c0=$(cpu "$pid")
  taskset -c 0 wrk -t1 -c50 -d"${DURATION}s" --latency "$url" > "$out" 2>&1
  c1=$(cpu "$pid")
  local reqs rps p50 p99
  reqs=$(awk '/requests in/{print $1}' "$out")
  rps=$(awk '/Requests\/sec/{print $2}' "$out")
  p50=$(to_us "$(awk '$1=="50%"{print $2}' "$out")")
  p99=$(to_us "$(awk '$1=="99%"{print $2}' "$out")")
  echo "$rps $p50 $p99 $(awk -v d=$((c1 - c0)) -v hz="$HZ" -v n="$reqs" 'BEGIN{printf "%.2f", d*1000000/hz/n}')"
}

# RSS of PID in KB while `loadgen MODE URL CONNS SECONDS` holds its connections open (idle
# keep-alive connections, or live SSE streams): read a second after loadgen says it is ready.
held() { # pid loadgen mode url conns seconds
  local fifo="$WORK/held.fifo"; rm -f "$fifo"; mkfifo "$fifo"
  taskset -c 0 "$2" "$3" "$4" "$5" "$6" > "$fifo" & local lg=$!
  read -r _ < "$fifo"; sleep 1; rss_kb "$1"; stop_pid "$lg"
}
