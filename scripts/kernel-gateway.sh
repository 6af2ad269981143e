#!/usr/bin/env bash
# Run a real Jupyter Kernel Gateway for the jupyter executor of code_interpreter (its tests,
# local trials). Installed from PyPI into a venv under .cache; bound to 127.0.0.1 only.
#
# usage: scripts/kernel-gateway.sh start|stop|status
#
#   start    make the venv (once), start the gateway, wait until GET /api answers.
#            No-op when this gateway is already running and answering.
#   stop     TERM, wait, KILL after KG_STOP_TIMEOUT; succeeds if not running.
#   status   "running"/"not running"; exit 0/1.
#
# Environment (all optional):
#   KG_PORT            port on 127.0.0.1                          (default 8899)
#   KG_TOKEN           the gateway's auth token; when unset, start makes one, keeps it in
#                      .cache/kernel-gateway/token (mode 600) and prints how to export it
#   KG_MAX_KERNELS     kernels the gateway runs at once           (default 16)
#   KG_START_TIMEOUT   seconds to wait for /api                   (default 60)
#   KG_STOP_TIMEOUT    seconds to wait after TERM before KILL     (default 10)
#   KG_PYTHON          python used to make the venv               (default python3)
#   KG_CACHE_DIR       venv, pid, log, token                      (default <repo>/.cache/kernel-gateway)
#
# Kernels on a plain Kernel Gateway run unsandboxed as this user: this is a test rig, not a
# sandbox (see src/interpreter/jupyter.rs).
#
# Tests: export ASSISTANTS_PROXY_TEST_JUPYTER=http://127.0.0.1:8899 KG_TOKEN=…
#        cargo test --test jupyter
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
DIR="${KG_CACHE_DIR:-$REPO/.cache/kernel-gateway}"
VENV="$DIR/venv"
PIDFILE="$DIR/kg.pid"
LOG="$DIR/kg.log"
TOKEN_FILE="$DIR/token"
ROOT_FILE="$DIR/root"
PORT="${KG_PORT:-8899}"
MAX_KERNELS="${KG_MAX_KERNELS:-16}"
START_TIMEOUT="${KG_START_TIMEOUT:-60}"
STOP_TIMEOUT="${KG_STOP_TIMEOUT:-10}"
PYTHON="${KG_PYTHON:-python3}"

# Pinned so every CI run talks to the gateway the executor was written against (KG 3.0.1,
# see docs in the executor's module header).
PACKAGES=(
  "jupyter_kernel_gateway==3.0.1"
  "jupyter_server==2.21.1"
  "ipykernel==7.4.0"
  "numpy==2.4.6"
  "pandas==3.1.2"
  "matplotlib==3.11.2"
)
STAMP="$VENV/.installed-$(printf '%s\n' "${PACKAGES[@]}" | sha256sum | cut -c1-16)"

die() { echo "kernel-gateway.sh: $*" >&2; exit 1; }

pid_alive() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# GET /api with the token; 0 when the gateway answers 200.
answers() {
  local token="$1"
  [[ -n "$token" ]] || return 1
  # The token goes through stdin (a curl config), not the command line (ps shows argv).
  printf 'header = "Authorization: token %s"\n' "$token" |
    curl -fsS -o /dev/null --max-time 3 -K - "http://127.0.0.1:$PORT/api" 2>/dev/null
}

current_token() {
  if [[ -n "${KG_TOKEN:-}" ]]; then
    printf '%s' "$KG_TOKEN"
  elif [[ -f "$TOKEN_FILE" ]]; then
    cat "$TOKEN_FILE"
  fi
}

install() {
  [[ -f "$STAMP" ]] && return 0
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set KG_PYTHON)"
  command -v curl >/dev/null || die "curl not found (apt-get install curl)"
  mkdir -p "$DIR"
  echo "kernel-gateway.sh: making the venv in $VENV (PyPI: ${PACKAGES[*]})" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || die "cannot make a venv with $PYTHON (Debian: apt-get install python3-venv)"
  "$VENV/bin/pip" install --disable-pip-version-check -q "${PACKAGES[@]}" ||
    die "pip install failed (PyPI reachable?)"
  # The font cache is built once here, not in the first figure of every test run.
  MPLBACKEND=Agg "$VENV/bin/python" -c 'import matplotlib.pyplot' >/dev/null 2>&1 || true
  touch "$STAMP"
}

start() {
  install
  local token
  token="$(current_token)"
  if pid_alive; then
    if answers "$token"; then
      echo "kernel-gateway.sh: already running on http://127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
      return 0
    fi
    die "a gateway runs (pid $(cat "$PIDFILE")) but does not answer with this KG_TOKEN; run '$0 stop' first"
  fi
  if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/" 2>/dev/null; then
    die "port $PORT is taken by another process (set KG_PORT)"
  fi
  local generated=0
  if [[ -z "$token" ]]; then
    token="$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(24))')"
    generated=1
  fi
  (umask 077 && printf '%s' "$token" >"$TOKEN_FILE")
  local root
  root="$(mktemp -d "${TMPDIR:-/tmp}/kernel-gateway-root.XXXXXX")"
  printf '%s' "$root" >"$ROOT_FILE"
  # KG_AUTH_TOKEN is KernelGatewayApp.auth_token read from the environment: the same
  # setting as --KernelGatewayApp.auth_token, kept off the command line that ps shows.
  # OPENBLAS_NUM_THREADS=1: kernels run under RLIMIT_AS, and one OpenBLAS arena per core
  # would eat the address space before any user code runs.
  (
    cd "$root"
    KG_AUTH_TOKEN="$token" OPENBLAS_NUM_THREADS=1 MPLBACKEND=module://matplotlib_inline.backend_inline \
      setsid "$VENV/bin/jupyter" kernelgateway \
      --KernelGatewayApp.ip=127.0.0.1 \
      --KernelGatewayApp.port="$PORT" \
      --KernelGatewayApp.port_retries=0 \
      --KernelGatewayApp.max_kernels="$MAX_KERNELS" \
      --KernelGatewayApp.allow_origin='' \
      --MappingKernelManager.cull_idle_timeout=1800 \
      --MappingKernelManager.cull_interval=60 \
      --MappingKernelManager.root_dir="$root" \
      >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
  )
  local waited=0
  until answers "$token"; do
    pid_alive || { tail -n 30 "$LOG" >&2; die "the gateway exited during start-up (log: $LOG)"; }
    if ((waited >= START_TIMEOUT * 2)); then
      tail -n 30 "$LOG" >&2
      stop >/dev/null 2>&1 || true
      die "the gateway did not answer GET /api within ${START_TIMEOUT}s (log: $LOG)"
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
  echo "kernel-gateway.sh: running on http://127.0.0.1:$PORT (pid $(cat "$PIDFILE"), kernels' root $root)"
  if ((generated)); then
    echo "kernel-gateway.sh: a token was generated; for the tests run:"
    echo "  export ASSISTANTS_PROXY_TEST_JUPYTER=http://127.0.0.1:$PORT KG_TOKEN=\$(cat $TOKEN_FILE)"
  fi
}

# The kernels' temporary root dir of the last start (sessions' files live under it).
remove_root() {
  local root
  root="$(cat "$ROOT_FILE" 2>/dev/null || true)"
  [[ "$root" == */kernel-gateway-root.* && -d "$root" ]] && rm -rf -- "$root"
  rm -f "$ROOT_FILE"
}

stop() {
  if ! pid_alive; then
    rm -f "$PIDFILE"
    remove_root
    echo "kernel-gateway.sh: not running"
    return 0
  fi
  local pid
  pid="$(cat "$PIDFILE")"
  # setsid made the gateway a process group leader: its kernels go with it.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  local waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if ((waited >= STOP_TIMEOUT * 2)); then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
  rm -f "$PIDFILE"
  remove_root
  echo "kernel-gateway.sh: stopped (pid $pid)"
}

status() {
  if pid_alive && answers "$(current_token)"; then
    echo "running on http://127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
    return 0
  fi
  echo "not running"
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
