#!/usr/bin/env bash
# Runs every test: formatting and lints, unit and property tests, and the integration and
# end-to-end tests against the emulator (moto on loopback, or AWS_ENDPOINT_URL if set).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
bash infra/lint-template.sh
# The fuzz targets (fuzz/, outside the workspace: running them needs nightly) must at least
# compile against today's API.
cargo check --manifest-path fuzz/Cargo.toml --locked --bins --quiet

echo "== emulator"
# Stop the emulator afterwards only if this run started it.
if [ -f .emulator/pid ] && kill -0 "$(cat .emulator/pid)" 2>/dev/null; then
  bash infra/emulator.sh start
else
  bash infra/emulator.sh start
  trap 'bash infra/emulator.sh stop' EXIT
fi
# shellcheck disable=SC1091
source .emulator/env

echo "== tests (endpoint $AWS_ENDPOINT_URL)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
