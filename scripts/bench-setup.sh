# The start every bench script shares (sourced, not run): builds the release proxy, the fake
# upstream and the script's load example, and makes a work directory that is removed, with
# every process the script started, when it exits.
#
# The sourcing script sets EXAMPLE (the load example to build) and NAME (for messages) before
# sourcing. Afterwards it has ROOT (and is in it), TARGET, PROXY_BIN (given, or the release
# build), FAKE_BIN, LOAD_BIN, WORK, and PIDS (append the pid of every process it starts).
# nginx daemons started with `-p "$WORK/<dir>"` are stopped through their pid files; nginx_conf
# writes such a daemon's configuration, and BODY is the fixed JSON answer of the fast upstream.
# nginx_start starts one; fast_upstream and nginx_reverse_proxy start the two every forwarding
# bench uses; start_proxy starts assistants-proxy. Measuring helpers: cpu (a
# process's CPU ticks), rss_kb, median, to_us and wrk_round.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# NEEDS (optional, set by the sourcing script) names further commands it runs.
for tool in taskset curl cargo python3 ${NEEDS:-}; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$NAME: '$tool' is required (Debian: nginx-light, wrk)" >&2; exit 1; }
done

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --release --quiet --bin assistants-proxy --example fake_upstream --example "$EXAMPLE"
# PROXY_BIN may name another build of the proxy (an A/B against a copy of an older one).
PROXY_BIN="${PROXY_BIN:-$TARGET/release/assistants-proxy}"
FAKE_BIN="$TARGET/release/examples/fake_upstream"
LOAD_BIN="$TARGET/release/examples/$EXAMPLE"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for f in "$WORK"/*/nginx.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

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
# locations (bench-proxy's SSE route).
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

# Starts assistants-proxy on PORT in front of UPSTREAM, pinned to CPU 1 with one worker thread
# and no access log, and waits until it answers /healthz; its pid is the last of PIDS.
# BINARY defaults to PROXY_BIN; a `@LINE` suffix adds LINE to its [server] configuration.
start_proxy() { # port upstream [binary[@line]]
  local spec="${3:-$PROXY_BIN}" conf="$WORK/proxy-$1.toml"
  printf '[server]\nworker_threads = 1\naccess_log = false\n' > "$conf"
  case "$spec" in *@*) echo "${spec#*@}" >> "$conf" ;; esac
  RUST_LOG=warn taskset -c 1 "${spec%%@*}" serve --listen "127.0.0.1:$1" --upstream "$2" \
    --store "sqlite://$WORK/bench-$1.db" --config "$conf" & PIDS+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "$NAME: the proxy on port $1 did not start" >&2; exit 1
}

cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
HZ="$(getconf CLK_TCK)"
median() { sort -g | awk '{a[NR]=$1} END{ if (NR==0) print 0; else print a[int((NR+1)/2)] }'; }
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
