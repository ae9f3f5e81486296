#!/usr/bin/env bash
# Lints the SAM template: `sam validate --lint` and `cfn-lint`, both pinned, installed once into
# .venv-sam/ (ignored by git). Needs no AWS credentials and no Docker.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV="$ROOT/.venv-sam"
PY=${PYTHON:-python3}
SAM_CLI_VERSION=1.170.0
CFN_LINT_VERSION=1.58.0

if [ ! -x "$VENV/bin/sam" ] || [ ! -x "$VENV/bin/cfn-lint" ] \
  || ! "$VENV/bin/sam" --version 2>/dev/null | grep -q "$SAM_CLI_VERSION" \
  || ! "$VENV/bin/cfn-lint" --version 2>/dev/null | grep -q "$CFN_LINT_VERSION"; then
  echo "lint-template: installing aws-sam-cli $SAM_CLI_VERSION and cfn-lint $CFN_LINT_VERSION into .venv-sam/" >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "aws-sam-cli==$SAM_CLI_VERSION" "cfn-lint==$CFN_LINT_VERSION"
fi

export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
export SAM_CLI_TELEMETRY=0
echo "== sam validate --lint"
"$VENV/bin/sam" validate --lint --template-file template.yaml
echo "== cfn-lint"
"$VENV/bin/cfn-lint" template.yaml
echo "template.yaml: sam validate --lint and cfn-lint passed"
