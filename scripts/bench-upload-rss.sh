#!/usr/bin/env bash
# Peak memory of the release proxy while a large file is uploaded to it (and downloaded back).
#
# usage: scripts/bench-upload-rss.sh [SIZE_MB]     (default 500; PROXY_BIN=PATH measures another build)
#
# For each multipart field order — `purpose` first (the Python SDK) and `file` first (Node's
# usual `{file, purpose}`, which makes the proxy spill the file to a temporary file until it
# learns the purpose) — a fresh proxy (SQLite store in a temp dir) receives the upload from
# curl; the script then reads the process's peak resident set (VmHWM) from /proc, downloads the
# file back and checks its SHA-256. Uploads must be streamed: the peak has to stay flat (far
# below the file size) whatever the size.
#
# If it fails: the proxy's log is printed; check that the release build succeeds and that
# the temp dir has room for about 3x SIZE_MB (source file, store, spill file).
set -euo pipefail

SIZE_MB="${1:-500}"
KEY="sk-bench-upload"
NAME=bench-upload-rss.sh EXAMPLES=""
# shellcheck source=bench-setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"
PROXY_PID=""

echo "generating ${SIZE_MB} MB of random data..."
head -c "${SIZE_MB}M" /dev/urandom > "$WORK/big.bin"
SRC_SHA="$(sha256sum "$WORK/big.bin" | cut -d' ' -f1)"

kib() { status_kb "$PROXY_PID" "$1"; }

run_case() {
    local order="$1"
    local port
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    rm -f "$WORK"/store.db*
    "$PROXY_BIN" serve --listen "127.0.0.1:$port" --store "sqlite://$WORK/store.db" \
        --upstream "http://127.0.0.1:9" --log-format json > "$WORK/proxy.log" 2>&1 &
    PROXY_PID=$!; PIDS+=("$PROXY_PID")
    for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    local idle
    idle="$(kib VmRSS)"
    local fields
    if [[ "$order" == "purpose-first" ]]; then
        fields=(-F purpose=vision -F "file=@$WORK/big.bin")
    else
        fields=(-F "file=@$WORK/big.bin" -F purpose=vision)
    fi
    local start end
    start="$(date +%s.%N)"
    local resp
    if ! resp="$(curl -fsS -H "Authorization: Bearer $KEY" "${fields[@]}" "http://127.0.0.1:$port/v1/files")"; then
        cat "$WORK/proxy.log"
        exit 1
    fi
    end="$(date +%s.%N)"
    local id
    id="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$resp")"
    local up_hwm
    up_hwm="$(kib VmHWM)"
    local got_sha
    got_sha="$(curl -fsS -H "Authorization: Bearer $KEY" "http://127.0.0.1:$port/v1/files/$id/content" | sha256sum | cut -d' ' -f1)"
    local down_hwm
    down_hwm="$(kib VmHWM)"
    [[ "$got_sha" == "$SRC_SHA" ]] || { echo "content mismatch"; exit 1; }
    python3 - "$order" "$SIZE_MB" "$idle" "$up_hwm" "$down_hwm" "$start" "$end" <<'EOF'
import sys
order, size, idle, up, down, start, end = sys.argv[1:]
secs = float(end) - float(start)
print(f"{order:14s} {size} MB upload in {secs:.1f} s ({int(size)/secs:.0f} MB/s): "
      f"RSS idle {int(idle)/1024:.1f} MB, peak after upload {int(up)/1024:.1f} MB, "
      f"peak after download {int(down)/1024:.1f} MB (content sha256 matches)")
EOF
    stop_pid "$PROXY_PID"
    PROXY_PID=""
}

run_case purpose-first
run_case file-first
