#!/usr/bin/env bash
# The local AWS emulator for tests and the local pipeline.
#
#   infra/emulator.sh start   install (pinned, in .venv-emulator/) and start moto on loopback,
#                             or adopt AWS_ENDPOINT_URL if it is already set (LocalStack,
#                             fakecloud, …); writes .emulator/env to be sourced
#   infra/emulator.sh stop    stop the emulator this script started (by PID)
#   infra/emulator.sh env     print the env file
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$ROOT/.emulator"
VENV="$ROOT/.venv-emulator"
PY=${PYTHON:-python3}

log() { echo "emulator: $*" >&2; }

wait_ready() {
  local url=$1 i
  for i in $(seq 1 100); do
    if "$PY" - "$url" <<'PY' 2>/dev/null; then return 0; fi
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError:
    pass  # any HTTP answer means it is up
PY
    sleep 0.2
  done
  return 1
}

write_env() {
  mkdir -p "$STATE"
  {
    echo "export AWS_ENDPOINT_URL=$1"
    echo "export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test}"
    echo "export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}"
    echo "export AWS_REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"
    echo "export AWS_DEFAULT_REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"
    echo "export EMBER_EMULATOR=$2"
  } > "$STATE/env"
}

start() {
  if [ -n "${AWS_ENDPOINT_URL:-}" ]; then
    log "using the endpoint in AWS_ENDPOINT_URL ($AWS_ENDPOINT_URL)"
    wait_ready "$AWS_ENDPOINT_URL" || { log "nothing answers at $AWS_ENDPOINT_URL"; exit 1; }
    write_env "$AWS_ENDPOINT_URL" external
    return
  fi
  if [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
    log "already running (pid $(cat "$STATE/pid"))"
    return
  fi
  if [ ! -x "$VENV/bin/moto_server" ]; then
    log "installing moto (pinned) into .venv-emulator/"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/infra/emulator-requirements.txt"
  fi
  local port
  port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$STATE"
  nohup "$VENV/bin/python" "$ROOT/infra/moto_server.py" -H 127.0.0.1 -p "$port" > "$STATE/moto.log" 2>&1 &
  echo $! > "$STATE/pid"
  if ! wait_ready "http://127.0.0.1:$port/moto-api/"; then
    log "moto did not answer on port $port; log:"; tail -20 "$STATE/moto.log" >&2; stop; exit 1
  fi
  write_env "http://127.0.0.1:$port" moto
  log "moto listening on http://127.0.0.1:$port (pid $(cat "$STATE/pid"))"
}

stop() {
  if [ -f "$STATE/pid" ]; then
    local pid; pid=$(cat "$STATE/pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      log "stopped moto (pid $pid)"
    fi
    rm -f "$STATE/pid"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) cat "$STATE/env" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
