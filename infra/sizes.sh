#!/usr/bin/env bash
# Builds the six arm64 release bootstraps the way `sam build` does (cargo-lambda + zig, pinned,
# installed once into .venv-lambda/, ignored by git), prints their sizes (raw and `zip -9`) and
# fails if any is over the 10 MB (10,000,000 bytes) budget of BENCHMARKS.md section 4.
# Not part of `make test`: a cold fat-LTO build of six binaries takes 15+ minutes on 2 cores.
# Usage: bash infra/sizes.sh [limit-in-bytes]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LIMIT=${1:-10000000}
VENV="$ROOT/.venv-lambda"
PY=${PYTHON:-python3}
CARGO_LAMBDA_VERSION=1.9.2
ZIGLANG_VERSION=0.17.1
BINARIES=(api archive-eraser enrich email reevaluate feedback)

if [ ! -x "$VENV/bin/cargo-lambda" ] \
  || ! "$VENV/bin/cargo-lambda" --version 2>/dev/null | grep -q "$CARGO_LAMBDA_VERSION"; then
  echo "sizes: installing cargo-lambda $CARGO_LAMBDA_VERSION and ziglang $ZIGLANG_VERSION into .venv-lambda/" >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "cargo-lambda==$CARGO_LAMBDA_VERSION" "ziglang==$ZIGLANG_VERSION"
fi
rustup target add aarch64-unknown-linux-gnu >/dev/null

# cargo-lambda finds zig through the venv's python (`python3 -m ziglang`).
export PATH="$VENV/bin:$PATH"
bin_args=()
for b in "${BINARIES[@]}"; do bin_args+=(--bin "$b"); done
cargo lambda build --release --arm64 "${bin_args[@]}"

TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
ZIPS=$(mktemp -d)
trap 'rm -rf "$ZIPS"' EXIT
over=0
printf '%-12s %12s %12s\n' binary bootstrap zipped
for b in "${BINARIES[@]}"; do
  f="$TARGET_DIR/lambda/$b/bootstrap"
  size=$(stat -c %s "$f")
  "$PY" -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    z.write(sys.argv[2], "bootstrap")' "$ZIPS/$b.zip" "$f"
  zipped=$(stat -c %s "$ZIPS/$b.zip")
  mark=""
  if [ "$size" -gt "$LIMIT" ]; then mark="  over $LIMIT"; over=1; fi
  printf '%-12s %12d %12d%s\n' "$b" "$size" "$zipped" "$mark"
done
if [ "$over" -ne 0 ]; then
  echo "sizes: at least one bootstrap is over $LIMIT bytes" >&2
  exit 1
fi
echo "sizes: every arm64 bootstrap is at most $LIMIT bytes"
