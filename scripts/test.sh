#!/usr/bin/env bash
# The test command README.md gives: sets up .venv (scripts/setup.sh), checks the house rules (ruff
# format and lint, the import contracts in pyproject.toml), then runs the offline suite.
# Arguments go to pytest: `bash scripts/test.sh -m "not slow"` is the fast subset for local work.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
SOURCES=(sae_interp_tasks tests benchmarks scripts)
.venv/bin/ruff format --check "${SOURCES[@]}"
.venv/bin/ruff check "${SOURCES[@]}"
.venv/bin/lint-imports
exec .venv/bin/python -m pytest tests -q "$@"
