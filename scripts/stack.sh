#!/usr/bin/env bash
# Local stack on loopback: Prefect server (:4200), MLflow UI (:5000) over the
# project's tracking store, and a process worker for the streamcast-process pool.
# Usage: scripts/stack.sh start|stop|status
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN="$ROOT/.venv/bin"
DATA="${STREAMCAST_DATA_DIR:-$ROOT/data}"
RUN="$DATA/stack"
PREFECT_PORT="${PREFECT_PORT:-4200}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
export PATH="$BIN:$PATH"
export PREFECT_HOME="${PREFECT_HOME:-$DATA/prefect}"
export PREFECT_API_URL="http://127.0.0.1:$PREFECT_PORT/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$DATA/mlflow.db}"
export STREAMCAST_DATA_DIR="$DATA"
export TF_CPP_MIN_LOG_LEVEL=3
mkdir -p "$RUN" "$DATA/mlartifacts"

start_bg() {  # name, command...
  local name=$1; shift
  if [[ -f "$RUN/$name.pid" ]] && kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$RUN/$name.pid"))"; return
  fi
  nohup "$@" >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
  echo "started $name (pid $!, log $RUN/$name.log)"
}

case "${1:-start}" in
  start)
    start_bg prefect-server "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT"
    start_bg mlflow "$BIN/mlflow" server --backend-store-uri "$MLFLOW_TRACKING_URI" \
      --default-artifact-root "$DATA/mlartifacts" --host 127.0.0.1 --port "$MLFLOW_PORT"
    for _ in $(seq 1 120); do
      curl -sf "$PREFECT_API_URL/health" >/dev/null && break
      sleep 1
    done
    curl -sf "$PREFECT_API_URL/health" >/dev/null || { echo "Prefect server did not start: see $RUN/prefect-server.log"; exit 1; }
    "$BIN/prefect" work-pool inspect streamcast-process >/dev/null 2>&1 \
      || "$BIN/prefect" work-pool create streamcast-process --type process >/dev/null
    start_bg worker "$BIN/prefect" worker start --pool streamcast-process
    cat <<MSG

stack is up:
  Prefect UI   http://127.0.0.1:$PREFECT_PORT
  MLflow UI    http://127.0.0.1:$MLFLOW_PORT
  worker       pool streamcast-process

register the scheduled deployments (from this folder):
  export PREFECT_API_URL=$PREFECT_API_URL
  .venv/bin/prefect --no-prompt deploy --all
run one now:
  .venv/bin/prefect deployment run forecast/forecast-hourly
stop everything:
  make stop
MSG
    ;;
  stop)
    for name in worker mlflow prefect-server; do
      if [[ -f "$RUN/$name.pid" ]]; then
        kill "$(cat "$RUN/$name.pid")" 2>/dev/null && echo "stopped $name" || true
        rm -f "$RUN/$name.pid"
      fi
    done
    ;;
  status)
    for name in prefect-server mlflow worker; do
      if [[ -f "$RUN/$name.pid" ]] && kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then
        echo "$name: running (pid $(cat "$RUN/$name.pid"))"; else echo "$name: stopped"; fi
    done
    ;;
  *) echo "usage: $0 start|stop|status"; exit 2 ;;
esac
