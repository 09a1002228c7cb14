#!/usr/bin/env bash
# Start and stop model servers for stepspec, in the background, by process id.
#
#   scripts/serve.sh start NAME llamacpp PRESET [key=value ...] [-- SERVER FLAGS]
#       stepspec's OpenAI-compatible server (python -m recipes.serve: FastAPI + uvicorn;
#       /v1/completions, /v1/chat/completions, streaming, n) over a generator config, e.g.
#       scripts/serve.sh start target llamacpp model/qwen2.5-coder-1.5b-llamacpp
#       (SERVER FLAGS: --served-model-name NAME, --batch-wait-ms MS)
#   scripts/serve.sh start NAME vllm MODEL [-- VLLM SERVE FLAGS]
#       vLLM's OpenAI-compatible server, e.g. on GPU 1 with 40% of its memory:
#       GPUS=1 scripts/serve.sh start draft vllm Qwen/Qwen2.5-0.5B-Instruct -- --gpu-memory-utilization 0.4
#   scripts/serve.sh stop NAME       # SIGTERM, then SIGKILL after 30 s
#   scripts/serve.sh status [NAME]
#
# Each server listens on HOST (default 127.0.0.1: loopback) and PORT (default: a free one); its
# URL, process id and log are in $SERVE_DIR (default ./serve/): NAME.url, NAME.pid, NAME.log.
# `start` returns once the server answers /health (or fails, printing its log's tail).
# Point a run at it with draft=server draft.base_urls=[$(cat serve/draft.url)].
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SERVE_DIR=${SERVE_DIR:-serve}
HOST=${HOST:-127.0.0.1}
START_TIMEOUT=${START_TIMEOUT:-900}
mkdir -p "$SERVE_DIR"
die() { echo "serve.sh: $*" >&2; exit 2; }

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

running() { [ -f "$SERVE_DIR/$1.pid" ] && kill -0 "$(cat "$SERVE_DIR/$1.pid")" 2>/dev/null; }

start() {
  [ $# -ge 3 ] || die "usage: start NAME llamacpp PRESET [key=value ...] | start NAME vllm MODEL [-- FLAGS]"
  local name=$1 engine=$2; shift 2
  [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad server name '$name'"
  running "$name" && die "server '$name' is already running (pid $(cat "$SERVE_DIR/$name.pid"))"
  local port=${PORT:-$(free_port)}
  local log="$SERVE_DIR/$name.log"
  local pre=() post=()
  while [ $# -gt 0 ]; do if [ "$1" = "--" ]; then shift; post=("$@"); break; fi; pre+=("$1"); shift; done
  case "$engine" in
    llamacpp)
      nohup "$PY" -m recipes.serve "${pre[@]}" --host "$HOST" --port "$port" "${post[@]}" >"$log" 2>&1 &
      ;;
    vllm)
      [ ${#pre[@]} -eq 1 ] || die "vllm takes one MODEL, then -- and vllm serve flags"
      CUDA_VISIBLE_DEVICES=${GPUS:-${CUDA_VISIBLE_DEVICES:-}} nohup vllm serve "${pre[0]}" --host "$HOST" \
        --port "$port" --enable-prompt-tokens-details "${post[@]}" >"$log" 2>&1 &
      ;;
    *) die "engine must be llamacpp or vllm, got '$engine'" ;;
  esac
  local pid=$!
  echo "$pid" >"$SERVE_DIR/$name.pid"
  echo "http://$HOST:$port" >"$SERVE_DIR/$name.url"
  local t0; t0=$(date +%s)
  until "$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + '/health', timeout=2)" \
        "http://$HOST:$port" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log" >&2; rm -f "$SERVE_DIR/$name.pid"; die "server '$name' exited during start (log: $log)"
    fi
    if [ $(( $(date +%s) - t0 )) -gt "$START_TIMEOUT" ]; then
      stop "$name"; die "server '$name' did not answer within ${START_TIMEOUT} s (log: $log)"
    fi
    sleep 1
  done
  echo "$name: http://$HOST:$port (pid $pid, log $log)"
}

stop() {
  [ $# -eq 1 ] || die "usage: stop NAME"
  local name=$1
  [ -f "$SERVE_DIR/$name.pid" ] || die "no server '$name' (no $SERVE_DIR/$name.pid)"
  local pid; pid=$(cat "$SERVE_DIR/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$SERVE_DIR/$name.pid" "$SERVE_DIR/$name.url"
  echo "$name: stopped"
}

status() {
  local names=("$@")
  [ ${#names[@]} -gt 0 ] || names=($(ls "$SERVE_DIR" 2>/dev/null | sed -n 's/\.pid$//p'))
  for n in "${names[@]}"; do
    if running "$n"; then echo "$n: running, pid $(cat "$SERVE_DIR/$n.pid"), $(cat "$SERVE_DIR/$n.url")"
    else echo "$n: not running"; fi
  done
}

cmd=${1:-}; shift || true
case "$cmd" in
  start) start "$@" ;;
  stop) stop "$@" ;;
  status) status "$@" ;;
  *) die "usage: serve.sh start|stop|status ..." ;;
esac
