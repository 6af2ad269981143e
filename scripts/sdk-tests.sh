#!/usr/bin/env bash
# The official OpenAI Python SDK, unmodified, against the proxy: the suite in tests/sdk runs once
# per (pinned SDK version x store backend). Each run starts its own fake upstream and proxy (see
# tests/sdk/conftest.py) and fails on any failure; a summary is printed at the end.
#
# usage: scripts/sdk-tests.sh [extra pytest args, e.g. -k runs -x]
#
# Environment (all optional except as noted):
#   SDK_VERSIONS                     openai versions to test      (default "3.57.0 1.109.1")
#   SDK_BACKENDS                     backends to test             (default "sqlite cassandra")
#   ASSISTANTS_PROXY_TEST_CASSANDRA  HOST:PORT of a running Cassandra 5 node; REQUIRED when
#                                    cassandra is among the backends (scripts/cassandra.sh start)
#   ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH  HOST:PORT of a password-mode Cassandra 5 node; REQUIRED
#                                    (the Astra tests run the Astra stand-in in front of it:
#                                    CASSANDRA_AUTH=password scripts/cassandra.sh start)
#   ASSISTANTS_PROXY_PYTHON          the code_interpreter sandbox's Python (default
#                                    /opt/assistants-proxy/python/bin/python3, made by
#                                    scripts/interpreter-env.sh); passed on to the proxy
#   ASSISTANTS_PROXY_TEST_JUPYTER    URL of a Jupyter Kernel Gateway, REQUIRED (code_interpreter
#                                    runs on it too; scripts/kernel-gateway.sh starts one), with
#                                    its token in KG_TOKEN
#   node, npm on PATH                REQUIRED: the Node SDK test (scripts/node-sdk.sh installs the
#                                    pinned SDK of tests/sdk/node into .cache/node-sdk)
#   CARGO_TARGET_DIR                 respected when locating the built binaries
#   SDK_TESTS_SKIP_BUILD=1           use binaries already built (e.g. right after cargo test)
#
# Virtualenvs live in .cache/sdk-venv-<version> (git-ignored) and are reused while their pinned
# requirements are unchanged. Logs of each run: .cache/sdk-logs/<version>-<backend>.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SDK_VERSIONS="${SDK_VERSIONS:-3.57.0 1.109.1}"
SDK_BACKENDS="${SDK_BACKENDS:-sqlite cassandra}"
# Test tooling pinned next to the SDK, so a new pytest release cannot change a run.
TOOLING=(pytest==9.2.0 pytest-timeout==2.4.0)
CACHE="$ROOT/.cache"
LOGS="$CACHE/sdk-logs"

log() { printf '\n== sdk-tests: %s\n' "$*" >&2; }
die() { echo "sdk-tests.sh: ERROR: $*" >&2; exit 1; }

command -v python3 >/dev/null 2>&1 || die "python3 is required"
command -v cargo >/dev/null 2>&1 || die "cargo is required"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
  || die "python3 >= 3.9 is required (found $(python3 --version 2>&1))"

for b in $SDK_BACKENDS; do
  case "$b" in
    sqlite) ;;
    cassandra)
      # CI must not silently skip the Cassandra backend.
      [ -n "${ASSISTANTS_PROXY_TEST_CASSANDRA:-}" ] || die "the cassandra backend needs \
ASSISTANTS_PROXY_TEST_CASSANDRA=HOST:PORT of a running node (scripts/cassandra.sh start, then \
export ASSISTANTS_PROXY_TEST_CASSANDRA=127.0.0.1:9042), or SDK_BACKENDS=sqlite to test SQLite only"
      ;;
    *) die "unknown backend '$b' in SDK_BACKENDS (sqlite, cassandra)" ;;
  esac
done

# The Astra tests (tests/sdk/test_astra.py) must not silently skip either.
[ -n "${ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH:-}" ] || die "the Astra tests need \
ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH=HOST:PORT of a password-mode node (CASSANDRA_AUTH=password \
CASSANDRA_PORT=9043 CASSANDRA_STORAGE_PORT=7001 scripts/cassandra.sh start); scripts/test.sh sets it"

# code_interpreter's jupyter executor and the Node SDK test must not silently skip either.
[ -n "${ASSISTANTS_PROXY_TEST_JUPYTER:-}" ] || die "the code_interpreter tests need \
ASSISTANTS_PROXY_TEST_JUPYTER=<URL of a Jupyter Kernel Gateway> and KG_TOKEN=<its token>: start \
one with scripts/kernel-gateway.sh and export what it prints"
scripts/node-sdk.sh >/dev/null || die "the Node SDK test needs node and npm (scripts/node-sdk.sh)"

# --- virtualenvs -------------------------------------------------------------------------------
venv_for() {
  local version="$1" dir="$CACHE/sdk-venv-$1"
  local want="openai==$version ${TOOLING[*]}"
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.requirements" 2>/dev/null)" = "$want" ] \
     && "$dir/bin/python" -c 'import openai, pytest' >/dev/null 2>&1; then
    echo "$dir"
    return
  fi
  log "creating $dir ($want)"
  rm -rf "$dir"
  python3 -m venv "$dir" >&2
  "$dir/bin/pip" install --quiet --disable-pip-version-check "openai==$version" "${TOOLING[@]}" >&2 \
    || die "pip install openai==$version failed"
  echo "$want" >"$dir/.requirements"
  echo "$dir"
}

declare -A VENV
for v in $SDK_VERSIONS; do
  VENV[$v]="$(venv_for "$v")"
done

# --- binaries ----------------------------------------------------------------------------------
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
if [ "${SDK_TESTS_SKIP_BUILD:-0}" != 1 ]; then
  log "building the proxy and the fake upstream"
  cargo build --locked --bin assistants-proxy --example fake_upstream --example fake_astra
fi
export ASSISTANTS_PROXY_BIN="$TARGET/debug/assistants-proxy"
export FAKE_UPSTREAM_BIN="$TARGET/debug/examples/fake_upstream"
export FAKE_ASTRA_BIN="$TARGET/debug/examples/fake_astra"
[ -x "$ASSISTANTS_PROXY_BIN" ] || die "$ASSISTANTS_PROXY_BIN is missing"
[ -x "$FAKE_UPSTREAM_BIN" ] || die "$FAKE_UPSTREAM_BIN is missing"
[ -x "$FAKE_ASTRA_BIN" ] || die "$FAKE_ASTRA_BIN is missing"

# --- runs --------------------------------------------------------------------------------------
mkdir -p "$LOGS"
SUMMARY=()
FAILED=0
TOTAL_PASSED=0
TOTAL_FAILED=0
START_ALL=$(date +%s)
for v in $SDK_VERSIONS; do
  for b in $SDK_BACKENDS; do
    log "openai==$v on $b"
    logfile="$LOGS/$v-$b.log"
    start=$(date +%s)
    set +e
    (cd tests/sdk && "${VENV[$v]}/bin/python" -m pytest -q --backend "$b" "$@") 2>&1 | tee "$logfile"
    rc=${PIPESTATUS[0]}
    set -e
    secs=$(( $(date +%s) - start ))
    # pytest's closing line, e.g. "2 failed, 52 passed in 25.1s".
    closing="$(grep -E '[0-9]+ (passed|failed|error|errors|skipped)' "$logfile" | tail -n 1 \
               | sed -E 's/^=+ //; s/ =+$//')"
    count() { awk -v re="$1" '{ for (i = 2; i <= NF; i++) if ($i ~ re) s += $(i-1) } END { print s + 0 }' <<<"$closing"; }
    passed="$(count '^passed')"
    failed="$(count '^(failed|errors?)')"
    TOTAL_PASSED=$(( TOTAL_PASSED + ${passed:-0} ))
    TOTAL_FAILED=$(( TOTAL_FAILED + ${failed:-0} ))
    if [ "$rc" -eq 0 ]; then
      status=PASS
    else
      status="FAIL (pytest exit $rc)"
      FAILED=1
      # A run that died before counting anything still counts as a failure.
      [ "${failed:-0}" -gt 0 ] || TOTAL_FAILED=$(( TOTAL_FAILED + 1 ))
    fi
    SUMMARY+=("$(printf 'openai==%-8s %-9s %-22s %4ss  %s' "$v" "$b" "$status" "$secs" \
                 "${closing:-no result line; see $logfile}")")
  done
done

printf '\n== SDK compatibility summary (%ss)\n' "$(( $(date +%s) - START_ALL ))"
printf '%s\n' "${SUMMARY[@]}"
echo "sdk-tests: $TOTAL_PASSED passed, $TOTAL_FAILED failed"
exit "$FAILED"
