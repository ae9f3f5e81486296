#!/usr/bin/env bash
# Profile-guided optimisation of the enrichment path, measured (BENCHMARKS.md section 1, "PGO"):
#  1. builds the training run (benches/benches/pgo_train.rs) instrumented (-Cprofile-generate),
#  2. runs it: the demo's sample (events/pipeline/sample.jsonl, from `ember-local generate`, not
#     the benchmark's workload) through the enrich handler with in-memory ports, 3 passes,
#  3. merges the counts with the toolchain's llvm-profdata (rustup component llvm-tools),
#  4. builds the criterion benchmarks with the profile (-Cprofile-use) and runs them, then the
#     same benchmarks without it, so both figures come from one run of this script.
# The two builds live in target/pgo/ (their own target directories: RUSTFLAGS differ, and a
# shared directory would rebuild everything on every switch). Not part of `make test`: from
# cold, the two fat-LTO builds and the runs take ~18 minutes on 2 cores.
# Usage: bash infra/pgo.sh [criterion filter] (default: decode, core with 1 and 1,000 users and
# handler with 1,000 users, each at 1,000 records)
# EMBER_PGO_SAMPLE=path trains on another JSON-lines file; EMBER_PGO_PASSES sets the passes.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
FILTER=${1:-'decode/1000$|core/users=1/1000$|core/users=1000/1000$|handler/users=1000/1000$'}
SAMPLE=${EMBER_PGO_SAMPLE:-events/pipeline/sample.jsonl}
PASSES=${EMBER_PGO_PASSES:-3}
OUT="$ROOT/target/pgo"
PROFRAW="$OUT/profraw"
PROFDATA="$OUT/merged.profdata"

rustup component add llvm-tools >/dev/null 2>&1 || true
HOST=$(rustc -vV | sed -n 's/^host: //p')
PROFDATA_TOOL="$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata"
if [ ! -x "$PROFDATA_TOOL" ]; then
  echo "pgo: llvm-profdata not found; install it with: rustup component add llvm-tools" >&2
  exit 1
fi

# Builds a bench target of ember-benches and prints the path of its executable; cargo's own
# output and diagnostics go to stderr.
build() { # what target-dir bench-name [VAR=value ...]
  local what=$1 dir=$2 name=$3 started=$SECONDS
  shift 3
  echo "== pgo: building $what" >&2
  env CARGO_TARGET_DIR="$dir" "$@" cargo bench -p ember-benches --bench "$name" --no-run \
    --locked --message-format json-render-diagnostics |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$name"
  echo "   built in $((SECONDS - started)) s" >&2
}

TRAIN=$(build "the instrumented training run" "$OUT/gen" pgo_train \
  RUSTFLAGS="-Cprofile-generate=$PROFRAW")
rm -rf "$PROFRAW"
mkdir -p "$PROFRAW"
echo "== pgo: training on $SAMPLE ($PASSES passes)"
LLVM_PROFILE_FILE="$PROFRAW/train-%p-%m.profraw" "$TRAIN" --bench "$SAMPLE" "$PASSES"
"$PROFDATA_TOOL" merge -o "$PROFDATA" "$PROFRAW"/train-*.profraw
echo "   profile: $PROFDATA ($(stat -c %s "$PROFDATA") bytes)"

WITH=$(build "the benchmarks with the profile" "$OUT/use" enrich \
  RUSTFLAGS="-Cprofile-use=$PROFDATA")
WITHOUT=$(build "the benchmarks without it" "$ROOT/target" enrich)

for run in 1 2; do
  for variant in without with; do
    exe=$WITHOUT
    [ "$variant" = with ] && exe=$WITH
    echo "== pgo: round $run, $variant the profile"
    "$exe" --bench --noplot --warm-up-time 1 --measurement-time 3 "$FILTER" 2>&1 |
      grep -E '^[a-z_]+/|thrpt:' || true
  done
done
