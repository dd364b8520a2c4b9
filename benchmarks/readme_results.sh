#!/usr/bin/env bash
# Produces every number README.md reports for the embedded default, in order. Each lm_eval run
# writes its results JSON and samples under benchmarks/results/runs/<name>/ and its printed
# table to benchmarks/results/<name>.txt. Usage: bash benchmarks/readme_results.sh [step ...]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=benchmarks/results; mkdir -p "$OUT/runs"
LM=.venv/bin/lm_eval

run() {  # name, model_args, tasks, metadata
  local name=$1 margs=$2 tasks=$3 meta=$4
  echo "== $name: lm_eval --model sae ${margs:+--model_args $margs} --tasks $tasks --metadata '$meta'"
  $LM --model sae ${margs:+--model_args "$margs"} --tasks "$tasks" --batch_size 8 --metadata "$meta" ${LIMIT:-} \
      --log_samples --output_path "$OUT/runs/$name" 2>"$OUT/$name.log" | tee "$OUT/$name.txt"
}

steps=${*:-core embedding interp agreement bench}
# Sized for a 2-core CPU: 131k tokens a pass; 32 latents for the embedding interval; the LLM-scored
# tasks (detection, fuzzing, self-explanation) on the first 4 of those latents (--limit 4). The
# runs of one SAE share its cached activation pass and explanations.
META_E='{"n_tokens": 131072, "n_latents": 32}'
META_I='{"n_tokens": 131072, "n_latents": 32, "n_scales": 8}'
for step in $steps; do
  case $step in
    core)
      run core_demo "" sae_core '{}' ;;
    embedding)
      run embedding_demo "" sae_embedding "$META_E"
      run embedding_random "control=random" sae_embedding "$META_E" ;;
    embedding_random_only)
      run embedding_random "control=random" sae_embedding "$META_E" ;;
    interp)
      LIMIT="--limit 4" run interp_demo "" sae_interp,sae_selfexplain "$META_I"
      LIMIT="--limit 4" run interp_random "control=random" sae_interp,sae_selfexplain "$META_I" ;;
    agreement)  # self-explanation agreement without LLM scoring: sweeps + embeddings on cached explanations
      LIMIT="--limit 8" run selfexplain_demo "" sae_selfexplain '{"n_tokens": 131072, "n_latents": 32, "n_scales": 8, "selfexplain_detection": false}'
      LIMIT="--limit 8" run selfexplain_random "control=random" sae_selfexplain '{"n_tokens": 131072, "n_latents": 32, "n_scales": 8, "selfexplain_detection": false}' ;;
    bench)
      .venv/bin/python benchmarks/activation_pass.py --n-tokens 16384 | tee "$OUT/activation_pass.txt"
      .venv/bin/python benchmarks/selfexplain.py --latents 8 --scales 8 --naive-latents 1 | tee "$OUT/selfexplain.txt"
      .venv/bin/python benchmarks/detection_scoring.py --latents 2 | tee "$OUT/detection_scoring.txt" ;;
    *) echo "unknown step $step (core embedding interp bench)"; exit 2 ;;
  esac
done
