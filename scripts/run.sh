#!/usr/bin/env bash
# The main job: set up, then run the node agent in the foreground against this host.
# State, socket and cache live under .run/ (override with MAAS_RUN_DIR); talk to it with
#   MAAS_AGENT_SOCKET=.run/agent.sock .venv/bin/maasctl apply examples/...
# In production the agent runs under systemd instead: packaging/systemd/maas-agent.service.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
run_dir="${MAAS_RUN_DIR:-$PWD/.run}"
mkdir -p "$run_dir"
echo "maas-agent: socket $run_dir/agent.sock (export MAAS_AGENT_SOCKET=$run_dir/agent.sock)" >&2
exec .venv/bin/maas-agent \
  --state-dir "$run_dir/state" \
  --socket "$run_dir/agent.sock" \
  --cache-dir "$run_dir/cache" \
  --metrics-port "${MAAS_METRICS_PORT:-9464}" \
  "$@"
