#!/usr/bin/env bash
# Start a single-machine Ray head with token authentication and the dashboard on 127.0.0.1.
#
# Run it inside the project's venv so that `ray` and the job's Python are the project's:
#   . .venv/bin/activate && cluster/start-local.sh [extra `ray start` arguments]
#
# Environment (defaults in brackets):
#   RAY_PORT [6379]  DASHBOARD_PORT [8265]  NUM_CPUS [Ray's default: all cores]
#   RAY_TEMP_DIR [Ray's default, /tmp/ray]  keep it short: Ray puts unix sockets under
#       <dir>/session_<timestamp>_<pid>/sockets/, and a socket path may not exceed 107 bytes.
#   RAY_AUTH_TOKEN_PATH [~/.ray/auth_token]  created with a random 256-bit token (mode 600) if missing.
# Only the dashboard can be bound to 127.0.0.1: Ray's gRPC servers (GCS, raylet, ...) listen on all
# interfaces and Ray refuses a loopback node IP, so token auth is what keeps them closed.
# Every process of the cluster, job drivers included, inherits this script's environment: export
# anything jobs need (e.g. MOA_CACHE_DIR) before running it.
set -euo pipefail

RAY_PORT="${RAY_PORT:-6379}"
DASHBOARD_PORT="${DASHBOARD_PORT:-8265}"
export RAY_AUTH_TOKEN_PATH="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
# Explicit: `ray start` enables token auth on its own only when it finds a token.
export RAY_AUTH_MODE=token
export RAY_USAGE_STATS_ENABLED=0
# Serve's proxies end a stream whose replica died with an error event (serving/stream_guard.py).
export RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=orchestrator.serving.stream_guard:proxy_middlewares

if [[ ! -s "$RAY_AUTH_TOKEN_PATH" ]]; then
    mkdir -p "$(dirname "$RAY_AUTH_TOKEN_PATH")"
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$RAY_AUTH_TOKEN_PATH")
    echo "Generated a new Ray auth token in $RAY_AUTH_TOKEN_PATH"
fi
# Absolute, since Ray's processes (job drivers included) run in other directories.
RAY_AUTH_TOKEN_PATH="$(cd "$(dirname "$RAY_AUTH_TOKEN_PATH")" && pwd)/$(basename "$RAY_AUTH_TOKEN_PATH")"

args=(--head --port "$RAY_PORT" --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT")
if [[ -n "${NUM_CPUS:-}" ]]; then args+=(--num-cpus "$NUM_CPUS"); fi
if [[ -n "${RAY_TEMP_DIR:-}" ]]; then args+=(--temp-dir "$RAY_TEMP_DIR"); fi

instructions() {
    cat <<EOF

Ray head: 127.0.0.1:$RAY_PORT, dashboard: http://127.0.0.1:$DASHBOARD_PORT
Submit a job (from the repository root, inside the venv):
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH
  ray job submit --address http://127.0.0.1:$DASHBOARD_PORT --working-dir . --runtime-env cluster/runtime_env.yaml -- python -m orchestrator.cli train jobs/panacea_tiny.yaml
A driver on this machine: the same two variables and ray.init(address="127.0.0.1:$RAY_PORT")
(not address="auto", which picks whichever cluster registered last under /tmp/ray).
Stop it: ray stop   (it stops every Ray process of this user on this machine)
EOF
}

# With --block `ray start` never returns, so print the instructions first.
for a in "$@"; do
    if [[ "$a" == "--block" ]]; then
        instructions
        exec ray start "${args[@]}" "$@"
    fi
done
ray start "${args[@]}" "$@"
instructions
