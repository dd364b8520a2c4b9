#!/usr/bin/env bash
# Produces every number README.md reports for the embedded default, in order. Each lm_eval run
# writes its results JSON and samples under benchmarks/results/runs/<name>/ and its printed
# table to benchmarks/results/<name>.txt. Usage: bash benchmarks/readme_results.sh [step ...]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=benchmarks/results; mkdir -p "$OUT/runs"
LM=.venv/bin/lm_eval

run() {  # name, model_args, tasks, metadata (empty: the YAML's and the SAE's own defaults)
  local name=$1 margs=$2 tasks=$3 meta=$4
  rm -rf "$OUT/runs/$name"  # no stale results from an earlier run of this step
  echo "== $name: lm_eval --model sae ${margs:+--model_args $margs} --tasks $tasks ${meta:+--metadata '$meta'} ${LIMIT:-} --batch_size 8 --log_samples" | tee "$OUT/$name.txt"
  local start=$SECONDS
  $LM --model sae ${margs:+--model_args "$margs"} --tasks "$tasks" --batch_size 8 ${meta:+--metadata "$meta"} ${LIMIT:-} \
      --log_samples --output_path "$OUT/runs/$name" 2>"$OUT/$name.log" | tee -a "$OUT/$name.txt"
  echo "wall seconds: $((SECONDS - start))" | tee -a "$OUT/$name.txt"
  # the line an SAE's own instrument defaults print (stderr, kept in the uncommitted .log) beside the table
  tr '\r' '\n' <"$OUT/$name.log" | grep "instrument defaults" | sort -u | tee -a "$OUT/$name.txt" || true
  gzip -9f "$OUT/runs/$name"/*/samples_*.jsonl  # sae-interp reads .jsonl.gz as it reads .jsonl
}

ALL="core embedding embedding_tokens embedding_tokens_neurons interp agreement intervention headline headline_controls group intruder probing absorption gate known_answers leaderboard bench tables"
steps=${*:-$ALL}
# Sized for a 2-core CPU: 131k tokens a pass; sae_embedding on 128 latents with the LLM explainer
# and on 512 with the token-list explainer (no LLM, so affordable at that size); the LLM-scored
# tasks (detection, fuzzing, self-explanation) on the first 16 of the 128 (--limit 16), and
# self-explanation agreement without LLM scoring on the first 32. The 128-latent runs of one SAE
# share its cached activation pass (a pool of 256 candidates) and its explanations.
META_E='{"n_tokens": 131072, "n_latents": 128}'
META_T='{"n_tokens": 131072, "n_latents": 512, "explainer": "tokens"}'
META_I='{"n_tokens": 131072, "n_latents": 128, "n_scales": 8}'
META_A='{"n_tokens": 131072, "n_latents": 128, "n_scales": 8, "selfexplain_detection": false}'
META_V='{"n_tokens": 65536, "n_latents": 16, "explainer": "tokens", "target_kl": 1.0}'
for step in $steps; do
  case $step in
    core)  # the README's main job on a fresh cache (the converted model kept), then a second SAE at the hook
      export SAE_INTERP_CACHE=${SAE_INTERP_CACHE:-$HOME/.cache/sae_interp_tasks}
      rm -rf "$SAE_INTERP_CACHE/core" "$SAE_INTERP_CACHE/core_reference"
      run core_demo "" sae_core ""
      run core_random "control=random" sae_core ""
      run core_neurons "control=neurons" sae_core "" ;;
    embedding)
      run embedding_demo "" sae_embedding "$META_E"
      run embedding_random "control=random" sae_embedding "$META_E" ;;
    embedding_tokens)
      run embedding_tokens_demo "" sae_embedding "$META_T"
      run embedding_tokens_random "control=random" sae_embedding "$META_T" ;;
    embedding_tokens_neurons)  # the neuron-basis control, for the leaderboard
      run embedding_tokens_neurons "control=neurons" sae_embedding "$META_T" ;;
    interp)
      LIMIT="--limit 16" run interp_demo "" sae_interp,sae_selfexplain "$META_I"
      LIMIT="--limit 16" run interp_random "control=random" sae_interp,sae_selfexplain "$META_I" ;;
    agreement)  # self-explanation agreement without LLM scoring: sweeps + embeddings on cached explanations
      LIMIT="--limit 32" run selfexplain_demo "" sae_selfexplain "$META_A"
      LIMIT="--limit 32" run selfexplain_random "control=random" sae_selfexplain "$META_A" ;;
    intervention)
      run intervention_demo "" sae_intervention "$META_V"
      run intervention_random "control=random" sae_intervention "$META_V"
      run intervention_neurons "control=neurons" sae_intervention "$META_V" ;;
    headline)  # the mission's headline command with every default (the demo's own: 8 latents, 32k tokens)
      run headline_demo "" sae_detection,sae_selfexplain "" ;;
    headline_controls)  # the same for both controls, so the leaderboard's first group has every task for all three
      run headline_random "control=random" sae_detection,sae_selfexplain ""
      run headline_neurons "control=neurons" sae_detection,sae_selfexplain "" ;;
    group)  # the five tasks of sae_interp with every default, demo and both controls (docs: benchmarks/group_table.py)
      bash "$0" group_demo group_random group_neurons group_table ;;
    group_demo) run group_demo "" sae_interp "" ;;  # one SAE at a time, so a cut-off run resumes from its step
    group_random) run group_random "control=random" sae_interp "" ;;
    group_neurons) run group_neurons "control=neurons" sae_interp "" ;;
    group_table) .venv/bin/python benchmarks/group_table.py | tee "$OUT/group_table.md" ;;
    intruder)  # intruder scoring (no explanation) with every default, demo and both controls
      run intruder_demo "" sae_intruder ""
      run intruder_random "control=random" sae_intruder ""
      run intruder_neurons "control=neurons" sae_intruder "" ;;
    probing)  # SAEBench's sparse probing with every default, demo and both controls
      run probing_demo "" sae_sparse_probing ""
      run probing_random "control=random" sae_sparse_probing ""
      run probing_neurons "control=neurons" sae_sparse_probing "" ;;
    absorption)  # SAEBench's first-letter absorption with every default, demo and both controls (one forward, shared)
      run absorption_demo "" sae_absorption ""
      run absorption_random "control=random" sae_absorption ""
      run absorption_neurons "control=neurons" sae_absorption "" ;;
    gate)  # the CI gate, demo vs a random-direction SAE, both scored by the bundled scorer: must not pass
      set +e
      .venv/bin/sae-interp compare "$OUT/runs/group_demo" "$OUT/runs/group_random" --metrics sae_detection/balanced_acc \
        >"$OUT/gate_demo_random.md" 2>"$OUT/gate_demo_random.txt"
      echo "exit $?" | tee -a "$OUT/gate_demo_random.txt"
      set -e
      cat "$OUT/gate_demo_random.txt" ;;
    known_answers)
      .venv/bin/python benchmarks/known_answers.py ;;
    leaderboard)
      .venv/bin/sae-interp leaderboard "$OUT/runs" --plots "$OUT/leaderboard_plots" | tee "$OUT/leaderboard.md"
      .venv/bin/sae-interp leaderboard "$OUT/runs" --format html -o "$OUT/leaderboard.html" ;;
    bench)
      .venv/bin/python benchmarks/core_throughput.py --chunks 4 | tee "$OUT/core_throughput.txt"
      .venv/bin/python benchmarks/activation_pass.py --n-tokens 32768 --batch-size 16 --repeats 2 | tee "$OUT/activation_pass.txt"
      .venv/bin/python benchmarks/intervention.py --latents 6 --naive-latents 1 | tee "$OUT/intervention_speed.txt"
      .venv/bin/python benchmarks/selfexplain.py --latents 8 --scales 8 --naive-latents 1 | tee "$OUT/selfexplain.txt"
      .venv/bin/python benchmarks/detection_scoring.py --latents 2 | tee "$OUT/detection_scoring.txt" ;;
    tables)
      .venv/bin/python benchmarks/interp_tables.py | tee "$OUT/interp_tables.md" ;;
    *) echo "unknown step $step ($ALL)"; exit 2 ;;
  esac
done
