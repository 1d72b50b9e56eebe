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

alive() {  # name: is any process of its group still running?
  [[ -f "$RUN/$1.pid" ]] && kill -0 -- "-$(cat "$RUN/$1.pid")" 2>/dev/null
}

port_taken() {  # port
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

require_free_port() {  # port, what wants it
  if port_taken "$1"; then
    echo "port $1 on 127.0.0.1 is already taken: cannot start $2 (stop what holds it, or set $3)" >&2
    exit 1
  fi
}

start_bg() {  # name, command...
  local name=$1; shift
  if alive "$name"; then
    echo "$name already running (pid $(cat "$RUN/$name.pid"))"; return
  fi
  # Its own session and process group: stop ends the process and everything it spawned
  # (the worker's flow runs, the MLflow server's workers).
  nohup setsid "$@" >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
  echo "started $name (pid $!, log $RUN/$name.log)"
}

stop_bg() {  # name: TERM its process group, KILL what is left after 20 s
  local name=$1 pgid
  [[ -f "$RUN/$name.pid" ]] || return 0
  pgid=$(cat "$RUN/$name.pid")
  if kill -0 -- "-$pgid" 2>/dev/null; then
    kill -TERM -- "-$pgid" 2>/dev/null || true
    for _ in $(seq 1 40); do
      kill -0 -- "-$pgid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 -- "-$pgid" 2>/dev/null; then
      kill -KILL -- "-$pgid" 2>/dev/null || true
      echo "stopped $name (killed after 20 s)"
    else
      echo "stopped $name"
    fi
  fi
  rm -f "$RUN/$name.pid"
}

case "${1:-start}" in
  start)
    alive prefect-server || require_free_port "$PREFECT_PORT" "the Prefect server" PREFECT_PORT
    alive mlflow || require_free_port "$MLFLOW_PORT" "the MLflow UI" MLFLOW_PORT
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
      stop_bg "$name"
    done
    ;;
  status)
    for name in prefect-server mlflow worker; do
      if alive "$name"; then echo "$name: running (pid $(cat "$RUN/$name.pid"))"; else echo "$name: stopped"; fi
    done
    ;;
  free-port)  # port, what wants it, the variable that moves it (for make mlflow-ui)
    require_free_port "$2" "$3" "$4"
    ;;
  *) echo "usage: $0 start|stop|status"; exit 2 ;;
esac
