#!/usr/bin/env bash
# The test command: set up, then lint, type-check, check layering and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff" && ruff check compiler host agent gateway cli tests bench
ruff format --check --quiet compiler host agent gateway cli tests bench
echo "== mypy" && mypy
echo "== import-linter" && lint-imports
echo "== pytest" && python -m pytest -q -p no:cacheprovider "$@"
