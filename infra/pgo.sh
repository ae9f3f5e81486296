#!/usr/bin/env bash
# Profile-guided optimisation of the enrichment path, measured (BENCHMARKS.md section 1, "PGO"):
#  1. builds the training run (benches/benches/pgo_train.rs) instrumented (-Cprofile-generate),
#  2. runs it: the demo's sample (events/pipeline/sample.jsonl, from `ember-local generate`, not
#     the benchmark's workload) through the enrich handler with in-memory ports, 3 passes,
#  3. merges the counts with the toolchain's llvm-profdata (rustup component llvm-tools),
#  4. builds the criterion benchmarks with the profile (-Cprofile-use), checks that the profile
#     names that build's ember-core functions (a profile that matches nothing is silently
#     ignored; exits 1 then),
#  5. runs them and the same benchmarks without the profile, alternately, two rounds.
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
TOOLS="$(rustc --print sysroot)/lib/rustlib/$HOST/bin"
if [ ! -x "$TOOLS/llvm-profdata" ] || [ ! -x "$TOOLS/llvm-nm" ]; then
  echo "pgo: llvm-profdata/llvm-nm not found; install them with: rustup component add llvm-tools" >&2
  exit 1
fi

# Builds a bench target of ember-benches and prints the path of its executable and, after a
# tab, the ember-core library it links; cargo's own output and diagnostics go to stderr.
build() { # what target-dir bench-name [VAR=value ...]
  local what=$1 dir=$2 name=$3 started=$SECONDS
  shift 3
  echo "== pgo: building $what" >&2
  env CARGO_TARGET_DIR="$dir" "$@" cargo bench -p ember-benches --bench "$name" --no-run \
    --locked --message-format json-render-diagnostics |
    python3 -c 'import json, sys
exe = lib = ""
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact":
        continue
    if m["target"]["name"] == sys.argv[1] and m.get("executable"):
        exe = m["executable"]
    if m["target"]["name"] == "ember_core" and "lib" in m["target"]["kind"]:
        lib = next((f for f in m["filenames"] if f.endswith(".rlib")), "")
print(exe + "\t" + lib)' "$name"
  echo "   built in $((SECONDS - started)) s" >&2
}

TRAIN=$(build "the instrumented training run" "$OUT/gen" pgo_train \
  RUSTFLAGS="-Cprofile-generate=$PROFRAW" | cut -f1)
rm -rf "$PROFRAW"
mkdir -p "$PROFRAW"
echo "== pgo: training on $SAMPLE ($PASSES passes)"
LLVM_PROFILE_FILE="$PROFRAW/train-%p-%m.profraw" "$TRAIN" --bench "$SAMPLE" "$PASSES"
"$TOOLS/llvm-profdata" merge -o "$PROFDATA" "$PROFRAW"/train-*.profraw
echo "   profile: $PROFDATA ($(stat -c %s "$PROFDATA") bytes)"

BUILT=$(build "the benchmarks with the profile" "$OUT/use" enrich \
  RUSTFLAGS="-Cprofile-use=$PROFDATA")
WITH=$(cut -f1 <<<"$BUILT")
CORE_LIB=$(cut -f2 <<<"$BUILT")

# A profile applies only to functions whose symbol names match it, and LLVM says nothing when
# none do (a changed crate hash renames them all: BENCHMARKS.md section 1). So compare the
# ember-core functions the profile has counts for with the symbols of the ember-core library
# the second build linked. Those missing from a matching build (39 of 150 when written) are
# serde impls instantiated in other crates and small functions inlined everywhere.
if [ -z "$CORE_LIB" ]; then
  echo "pgo: cargo named no ember-core library for the build with the profile" >&2
  exit 1
fi
PROFILED=$("$TOOLS/llvm-profdata" show --all-functions "$PROFDATA" |
  sed -n 's/^  \(.*;\)\{0,1\}\(_ZN10ember_core.*\):$/\2/p' | sort -u)
DEFINED=$("$TOOLS/llvm-nm" --defined-only -j "$CORE_LIB" 2>/dev/null | sort -u)
profiled=$(grep -c . <<<"$PROFILED" || true)
matched=$(comm -12 <(echo "$PROFILED") <(echo "$DEFINED") | grep -c . || true)
echo "   $matched of the profile's $profiled ember-core functions are in $(basename "$CORE_LIB")"
if [ "$profiled" -eq 0 ]; then
  echo "pgo: the profile names no ember-core function (this check reads legacy _ZN symbol names)" >&2
  exit 1
fi
if [ $((2 * matched)) -lt "$profiled" ]; then
  echo "pgo: the profile does not apply to this build (symbol names differ: another crate hash?)" >&2
  exit 1
fi

WITHOUT=$(build "the benchmarks without it" "$ROOT/target" enrich | cut -f1)

for run in 1 2; do
  for variant in without with; do
    exe=$WITHOUT
    [ "$variant" = with ] && exe=$WITH
    echo "== pgo: round $run, $variant the profile"
    "$exe" --bench --noplot --warm-up-time 1 --measurement-time 3 "$FILTER" 2>&1 |
      grep -E '^[a-z_]+/|thrpt:' || true
  done
done
