#!/usr/bin/env bash
# A first model that runs on a fresh machine with no registry and no model hub: builds a real
# llama.cpp `llama-server` image locally (Debian's llama.cpp-tools, mmdebstrap, about 30 s once),
# writes a tiny GGUF model (random weights: it answers, with junk text) under the run directory,
# and the Deployment spec for both: .run/first-model.yaml (MAAS_RUN_DIR moves it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
run_dir="${MAAS_RUN_DIR:-$PWD/.run}"
mkdir -p "$run_dir/models"
run_dir="$(cd "$run_dir" && pwd)"
exec .venv/bin/python scripts/first_model.py "$run_dir"
