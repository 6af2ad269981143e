#!/usr/bin/env bash
# The official OpenAI Node SDK for tests/sdk/node/*.mjs: installs the exact tree of
# tests/sdk/node/package-lock.json into .cache/node-sdk (`npm ci`, no install scripts) and
# prints that directory. Reused while the lock file is unchanged. tests/sdk runs it itself.
#
# usage: scripts/node-sdk.sh            (needs node >= 20 and npm on PATH)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/tests/sdk/node"
DEST="$ROOT/.cache/node-sdk"

die() { echo "node-sdk.sh: ERROR: $*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || die "node is required (Node.js >= 20, e.g. apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || die "npm is required (apt-get install npm)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || die "Node.js >= 20 is required (found $(node --version))"

if [ -f "$DEST/node_modules/openai/package.json" ] && cmp -s "$SRC/package-lock.json" "$DEST/package-lock.json"; then
  echo "$DEST"
  exit 0
fi
rm -rf "$DEST"
mkdir -p "$DEST"
cp "$SRC/package.json" "$SRC/package-lock.json" "$DEST/"
(cd "$DEST" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2) \
  || { rm -rf "$DEST"; die "npm ci in $DEST failed"; }
echo "$DEST"
