#!/usr/bin/env bash
# The README's `make demo`: the whole pipeline on this machine, wired from template.yaml.
#
#  1. starts the emulator (moto on loopback, or adopts AWS_ENDPOINT_URL if set: LocalStack,
#     fakecloud, …) unless one is already running; stops it at the end only if it started it;
#  2. builds ember-local;
#  3. replays events/pipeline/sample.jsonl (300 shoppers, one simulated week) through the
#     local HTTP API -> Kinesis -> enrich -> EventBridge -> email, on a clock that follows
#     event time, then prints the summary and writes every sent email to out/emails/;
#  4. while the pipeline still runs, publishes a new subject line for the heat_match template
#     through the admin API (events/pipeline/publish-subject.json), replays a few more
#     shoppers (events/pipeline/after-publish.jsonl) and shows their emails using it;
#  5. simulated customers answer the campaigns they were placed in (a purchase within the
#     attribution window: 5% of everyone, 5% + 40% of those sent the email), and the
#     campaign reports (out/report/index.html and the table at the end) show the lift.
#
# Extra arguments go to `ember-local replay` (e.g. `--keep`, `--sweep-every-mins 5`).
# EMBER_SAMPLE=path replays another JSONL file.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if [ -n "${AWS_ENDPOINT_URL:-}" ]; then
  echo "== using the emulator at $AWS_ENDPOINT_URL"
else
  started_here=0
  if ! { [ -f .emulator/pid ] && kill -0 "$(cat .emulator/pid)" 2>/dev/null; }; then
    started_here=1
  fi
  bash infra/emulator.sh start
  if [ "$started_here" = 1 ]; then
    trap 'bash infra/emulator.sh stop' EXIT
  fi
  # shellcheck disable=SC1091
  source .emulator/env
fi

echo "== building ember-local"
cargo build -p ember-local --locked --quiet
BIN="$ROOT/target/debug/ember-local"

SAMPLE=${EMBER_SAMPLE:-events/pipeline/sample.jsonl}
if [ ! -f "$SAMPLE" ]; then
  "$BIN" generate --users 300 --seed 7 --out "$SAMPLE"
fi

rm -rf out/emails
echo "== replaying $SAMPLE against $AWS_ENDPOINT_URL"
"$BIN" replay "$SAMPLE" --template template.yaml --emails out/emails \
  --publish events/pipeline/publish-subject.json --then events/pipeline/after-publish.jsonl \
  --respond-base-rate 0.05 --respond-uplift 0.40 "$@"

# The campaign report as a browser renders it (skipped without Chromium).
if command -v chromium >/dev/null 2>&1 || [ -n "${CHROMIUM:-}" ]; then
  bash infra/check-report.sh out/report/index.html
else
  echo "== out/report/index.html not checked in a browser: apt-get install chromium, then bash infra/check-report.sh"
fi
