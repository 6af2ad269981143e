#!/usr/bin/env bash
# Makes the Python environment the code_interpreter's local executor runs in: a venv at PREFIX
# (default /opt/assistants-proxy/python, whose bin/python3 is DEFAULT_INTERPRETER_PYTHON) built
# from Debian's /usr/bin/python3, with the pinned numpy, pandas and matplotlib below and a
# prebuilt matplotlib font cache (so a session's first plot does not rebuild it).
#
#   scripts/interpreter-env.sh [PREFIX]
#
# Why Debian's python: the sandbox binds /usr read-only, so a venv on top of /usr/bin/python3
# needs nothing else bound. Everything is made world-readable: the sandbox runs as an
# unprivileged user (nobody) when the proxy runs as root. Idempotent: a venv whose pinned
# requirements are unchanged is kept as is. Checks bubblewrap (bwrap) too, and installs it
# with apt-get when run as root on Debian. Point the proxy (and the tests) at another PREFIX
# with ASSISTANTS_PROXY_PYTHON=PREFIX/bin/python3.
set -euo pipefail

PREFIX="${1:-/opt/assistants-proxy/python}"
BASE_PYTHON="${INTERPRETER_BASE_PYTHON:-/usr/bin/python3}"
# Versions PyPI serves as wheels for CPython 3.11 on x86-64/aarch64 Linux.
REQUIREMENTS="numpy==2.4.6
pandas==3.1.1
matplotlib==3.11.2"
# Where the driver (src/interpreter/driver.py) looks for the prebuilt font cache.
FONT_CACHE_REL="share/assistants-proxy/mpl-cache"

die() {
	echo "interpreter-env.sh: $*" >&2
	exit 1
}

case "$PREFIX" in
/*) ;;
*) die "PREFIX must be an absolute path (the sandbox binds it at the same path), got $PREFIX" ;;
esac

if ! command -v bwrap >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "interpreter-env.sh: installing bubblewrap" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y bubblewrap >&2 ||
			die "apt-get install bubblewrap failed"
	else
		die "bubblewrap (bwrap) is missing: install it (Debian: apt-get install bubblewrap), the local executor's sandbox"
	fi
fi

[ -x "$BASE_PYTHON" ] || die "$BASE_PYTHON is missing (Debian: apt-get install python3 python3-venv)"
"$BASE_PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' ||
	die "$BASE_PYTHON is older than Python 3.11"
"$BASE_PYTHON" -c 'import venv, ensurepip' 2>/dev/null ||
	die "$BASE_PYTHON has no venv/ensurepip (Debian: apt-get install python3-venv)"

STAMP="$PREFIX/assistants-proxy-requirements.txt"
WANT="$(printf '%s\n%s\n' "base=$("$BASE_PYTHON" -c 'import sys; print(sys.version.split()[0])')" "$REQUIREMENTS")"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$PREFIX/bin/python3" ] &&
	[ -n "$(ls "$PREFIX/$FONT_CACHE_REL"/fontlist-*.json 2>/dev/null)" ] &&
	"$PREFIX/bin/python3" -I -c 'import numpy, pandas, matplotlib' 2>/dev/null; then
	echo "interpreter-env.sh: $PREFIX is up to date"
	exit 0
fi

umask 022
if [ -e "$PREFIX" ] && [ ! -f "$PREFIX/pyvenv.cfg" ]; then
	die "$PREFIX exists and is not a venv; remove it or choose another PREFIX"
fi
mkdir -p "$PREFIX"
# --clear: a venv left by other requirements is rebuilt rather than patched.
"$BASE_PYTHON" -m venv --clear "$PREFIX" || die "could not create the venv at $PREFIX"
REQ_FILE="$(mktemp)"
trap 'rm -f "$REQ_FILE"' EXIT
printf '%s\n' "$REQUIREMENTS" >"$REQ_FILE"
"$PREFIX/bin/python3" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
	--only-binary=:all: -r "$REQ_FILE" || die "pip install of the pinned packages failed (is PyPI reachable?)"

mkdir -p "$PREFIX/$FONT_CACHE_REL"
MPLCONFIGDIR="$PREFIX/$FONT_CACHE_REL" MPLBACKEND=Agg "$PREFIX/bin/python3" -I -c '
import matplotlib.font_manager as fm, pathlib, sys
fm._load_fontmanager(try_read_cache=False)
import matplotlib.pyplot as plt
plt.plot([0, 1]); plt.savefig("/dev/null", format="png")
' || die "could not build the matplotlib font cache"
ls "$PREFIX/$FONT_CACHE_REL"/fontlist-*.json >/dev/null 2>&1 ||
	die "matplotlib wrote no font cache under $PREFIX/$FONT_CACHE_REL"

chmod -R a+rX "$PREFIX"
printf '%s\n' "$WANT" >"$STAMP"
chmod a+r "$STAMP"
echo "interpreter-env.sh: ready: $PREFIX/bin/python3 ($(echo "$REQUIREMENTS" | tr '\n' ' '))"
