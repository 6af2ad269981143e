# The start every bench script shares (sourced, not run): builds the release proxy, the fake
# upstream and the script's load example, and makes a work directory that is removed, with
# every process the script started, when it exits.
#
# The sourcing script sets EXAMPLE (the load example to build) and NAME (for messages) before
# sourcing. Afterwards it has ROOT (and is in it), TARGET, PROXY_BIN (given, or the release
# build), FAKE_BIN, LOAD_BIN, WORK, and PIDS (append the pid of every process it starts).
# nginx daemons started with `-p "$WORK/<dir>"` are stopped through their pid files.

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
