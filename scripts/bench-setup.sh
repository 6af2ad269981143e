# The start every bench script shares (sourced, not run): builds the release proxy, the fake
# upstream and the script's load example, and makes a work directory that is removed, with
# every process the script started, when it exits.
#
# The sourcing script sets EXAMPLE (the load example to build) and NAME (for messages) before
# sourcing. Afterwards it has ROOT (and is in it), TARGET, PROXY_BIN (given, or the release
# build), FAKE_BIN, LOAD_BIN, WORK, and PIDS (append the pid of every process it starts).
# nginx daemons started with `-p "$WORK/<dir>"` are stopped through their pid files; nginx_conf
# writes such a daemon's configuration, and BODY is the fixed JSON answer of the fast upstream.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
for tool in taskset curl cargo python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$NAME: '$tool' is required" >&2; exit 1; }
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
