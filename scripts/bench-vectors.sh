#!/usr/bin/env bash
# Vector search at scale (issue 20): loads CHUNKS synthetic chunks × 1,536 dimensions into one
# vector store of STORE_URL (once; a later run finds them), then times top-10 searches and
# checks recall@10 against brute force in the same process (examples/vector_bench.rs).
#
# usage: scripts/bench-vectors.sh STORE_URL CHUNKS [QUERIES]
#   e.g. scripts/bench-vectors.sh "cassandra://127.0.0.1:9042/ap_vec?replication=1" 100000
#
# For figures "on a compacted index", compact the chunk table between the two steps
# (BENCH_VECTORS_STEP=load, then `nodetool compact <keyspace> chunks_v1536` on each node,
# then BENCH_VECTORS_STEP=search). Output lines of the search step:
#   filter p50_ms p90_ms recall@10 brute_force_p50_ms
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cargo build --release --quiet --example vector_bench
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/vector_bench"
STEP="${BENCH_VECTORS_STEP:-both}"
if [ "$STEP" = load ] || [ "$STEP" = both ]; then "$BIN" "$1" "$2" load; fi
if [ "$STEP" = search ] || [ "$STEP" = both ]; then "$BIN" "$1" "$2" search "${3:-50}"; fi
