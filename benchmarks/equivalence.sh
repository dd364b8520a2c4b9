#!/usr/bin/env bash
# Runs the refactor-equivalence commands against one checkout of this repository, on a fresh cache
# (the converted models linked in, so nothing is downloaded or converted again):
#   bash benchmarks/equivalence.sh CHECKOUT OUT
# CHECKOUT is put first on PYTHONPATH, so this venv's lm_eval runs that checkout's package and task
# folder. Then compare two OUT folders with benchmarks/compare_samples.py:
#   python benchmarks/compare_samples.py BEFORE/interp AFTER/interp sae_detection,sae_fuzzing,sae_embedding
#   python benchmarks/compare_samples.py BEFORE/intervention AFTER/intervention sae_intervention
#   python benchmarks/compare_samples.py BEFORE/core AFTER/core sae_core
set -euo pipefail
checkout=$(cd "$1" && pwd); out=$2
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"; out=$(cd "$out" && pwd)
cache=$(mktemp -d /tmp/sae_interp_equivalence.XXXXXX)
ln -s "${SAE_INTERP_TEST_MODELS:-$HOME/.cache/sae_interp_tasks/models}" "$cache/models"
export SAE_INTERP_CACHE=$cache PYTHONPATH=$checkout HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
LM="$here/.venv/bin/lm_eval"
cd "$checkout"
run() {  # name, tasks, limit, metadata
  echo "== $1: lm_eval --model sae --tasks $2 --limit $3 --metadata '$4' (checkout $checkout)"
  local start=$SECONDS
  "$LM" --model sae --tasks "$2" --limit "$3" --batch_size 8 --metadata "$4" --log_samples \
        --output_path "$out/$1" >"$out/$1.txt" 2>"$out/$1.log"
  echo "   $((SECONDS - start)) s"
}
run interp sae_interp 4 '{"n_tokens": 65536}'
run intervention sae_intervention 2 '{"n_tokens": 65536}'
run core sae_core 4 '{}'
rm -rf "$cache"
