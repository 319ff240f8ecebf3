#!/usr/bin/env bash
# The main job: set up, then run the node agent and the gateway in the foreground against this
# host; Ctrl-C (or SIGTERM) stops both. State, socket, models and cache live under .run/
# (MAAS_RUN_DIR moves them); `maasctl` run from this checkout finds the agent there by itself.
# The gateway listens on 127.0.0.1:${MAAS_GATEWAY_PORT:-8080}. Extra arguments go to maas-agent.
# In production both run under systemd instead: packaging/systemd/maas-{agent,gateway}.service.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
run_dir="${MAAS_RUN_DIR:-$PWD/.run}"
mkdir -p "$run_dir/models"
run_dir="$(cd "$run_dir" && pwd)"
config="$run_dir/agent.yaml"
if [ ! -e "$config" ]; then
  # Written once, then yours to edit: models under the run directory may be mounted.
  cat >"$config" <<EOF
# maas-agent settings for scripts/run.sh (all options: packaging/agent.yaml.example)
secrets_dir: $run_dir/secrets
socket_group: null
policy:
  allowed_mount_roots: [$run_dir/models]
EOF
fi

pids=()
stop() {
  trap - INT TERM
  kill -TERM "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM

.venv/bin/maas-agent \
  --config "$config" \
  --state-dir "$run_dir/state" \
  --socket "$run_dir/agent.sock" \
  --cache-dir "$run_dir/cache" \
  --metrics-port "${MAAS_METRICS_PORT:-9464}" \
  "$@" &
pids+=($!)
.venv/bin/maas-gateway \
  --agent-socket "$run_dir/agent.sock" \
  --port "${MAAS_GATEWAY_PORT:-8080}" \
  --keys-file "$run_dir/gateway.keys" &
pids+=($!)
echo "run.sh: agent on $run_dir/agent.sock, gateway on http://127.0.0.1:${MAAS_GATEWAY_PORT:-8080}; Ctrl-C stops both" >&2

# Whichever stops first (Ctrl-C, or a failure) stops the other; the first exit status is ours.
status=0
wait -n "${pids[@]}" || status=$?
stop
wait "${pids[@]}" 2>/dev/null || true
exit "$status"
