#!/usr/bin/env bash
# The rehearsal: every step a GPU user takes with the paper parameter files, in order, on this CPU, with
# stand-in models under the paper's hub ids (workbench/models/standins.py) in an offline hub cache.
#   scripts/rehearsal.sh                      # both models, every step (make rehearsal)
#   scripts/rehearsal.sh llama                # one model
#   scripts/rehearsal.sh llama oracle-vs-random  # one step of one model (steps: $STEPS below)
# The paper files are used unmodified; params/rehearsal/<notebook>.yaml only shrinks counts. Everything
# is written under $REHEARSAL_DIR (default .cache/rehearsal): hf/ (the hub cache), cache/, outputs/,
# <model>/ (θr, θ_full, the restricted delta) and timings.tsv (seconds per step).
# TOFU_DIR / LUME_DIR: the local data folders (default ../shared/data/tofu and ../shared/data/lume).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
R="${REHEARSAL_DIR:-.cache/rehearsal}"
mkdir -p "$R"
R="$(cd "$R" && pwd)"
TOFU="${TOFU_DIR:-../shared/data/tofu}"
LUME="${LUME_DIR:-../shared/data/lume}"
export HF_HOME="$R/hf" HF_HUB_OFFLINE=1 WORKBENCH_CACHE="$R/cache" WORKBENCH_OUTPUTS="$R/outputs"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export CPU_TEST=1 PATH="$root/.venv/bin:$PATH" PYTHON="${PYTHON:-$root/.venv/bin/python}"
PY="$PYTHON"
STEPS="standins theta_r theta_r_lume theta_full revisit-localizers oracle-vs-random l2-mlp-supervision lume restricted evaluate gpu_check"
models="${1:-llama olmo}"
only="${2:-}"

declare -A PAPER_ID=([llama]="meta-llama/Llama-3.1-8B-Instruct" [olmo]="allenai/OLMo-2-1124-7B-Instruct")
declare -A GPU_ARCH=([llama]=llama [olmo]=olmo2)

# run NAME CMD…: runs a step (unless another one was asked for) and records its wall time.
run() {
  local name="$1"; shift
  [[ -n "$only" && "$only" != "$name" ]] && return 0
  echo "== $model: $name" >&2
  local start=$SECONDS
  if "$@"; then
    printf '%s\t%s\t%s\tok\n' "$model" "$name" $((SECONDS - start)) >>"$R/timings.tsv"
  else
    local rc=$?
    printf '%s\t%s\t%s\tfailed (%s)\n' "$model" "$name" $((SECONDS - start)) "$rc" >>"$R/timings.tsv"
    echo "rehearsal step $model/$name failed (exit $rc); rerun it with: scripts/rehearsal.sh $model $name" >&2
    exit "$rc"
  fi
}

# params NOTEBOOK: the paper file, the overlay, and what only the rehearsal knows (data folder, stand-in commit).
params() {
  local nb="$1" data="$TOFU"
  [[ "$nb" == lume ]] && data="$LUME"
  echo "params/$nb/paper-$model.yaml" "params/rehearsal/$nb.yaml" "data_dir=$data" "model_revision=$commit"
}

train_stage() {  # NOTEBOOK STAGE OUT: θr / θ_full on 2 CPU ranks, as a GPU user trains it on 2 GPUs
  local nb="$1" stage="$2" out="$3" args=()
  for p in $(params "$nb"); do args+=(--params "$p"); done
  scripts/train_distributed.sh full --notebook "$nb" "${args[@]}" --stage "$stage" --out "$R/$model/$out"
}

notebook() {  # NOTEBOOK [key=value …]: the notebook with the paper file, the overlay and the brought models
  local nb="$1" args=(); shift
  for p in $(params "$nb") "$@"; do args+=(-p "$p"); done
  "$PY" -m workbench run "$nb" "${args[@]}" --run-id "rehearsal-$model" --force
}

restricted() {  # restricted training of the stand-in in bf16 on TOFU's forget set, 2 CPU ranks
  "$PY" scripts/standins.py encode --model "$hub" --revision "$commit" --data "$TOFU" --n 16 --out "$R/$model/forget.jsonl"
  scripts/train_distributed.sh restricted --model "$hub" --dtype bfloat16 --data "$R/$model/forget.jsonl" \
    --gradient-checkpointing --batch-size 16 --lr 2e-4 --out "$R/$model/delta"
}

evaluate() {  # the stand-in by hub id before, θ_full as the "unlearned" folder, θr for Forget Quality
  "$PY" -m workbench evaluate --before "$hub" --after "$R/$model/theta_full" --retain-model "$R/$model/theta_r" \
    -p params/evaluate-checkpoints/default.yaml -p params/rehearsal/evaluate-checkpoints.yaml -p "data_dir=$TOFU" \
    -p dtype=bfloat16 --run-id "rehearsal-$model" --force
}

for model in $models; do
  [[ -n "${PAPER_ID[$model]:-}" ]] || { echo "model must be llama or olmo, got $model" >&2; exit 2; }
  [[ -z "$only" || " $STEPS " == *" $only "* ]] || { echo "step must be one of: $STEPS" >&2; exit 2; }
  hub="${PAPER_ID[$model]}"
  mkdir -p "$R/$model"
  run standins "$PY" scripts/standins.py build --hf-home "$HF_HOME" --data "$TOFU" "$LUME" --model "$hub"
  commit="$(cat "$HF_HOME/hub/models--${hub//\//--}/refs/main")"
  run theta_r train_stage oracle-vs-random retain theta_r
  run theta_r_lume train_stage lume retain theta_r_lume
  run theta_full train_stage revisit-localizers full theta_full
  run revisit-localizers notebook revisit-localizers "retain_model=$R/$model/theta_r" "full_model=$R/$model/theta_full"
  run oracle-vs-random notebook oracle-vs-random "retain_model=$R/$model/theta_r"
  run l2-mlp-supervision notebook l2-mlp-supervision "retain_model=$R/$model/theta_r"
  run lume notebook lume "retain_model=$R/$model/theta_r_lume"
  run restricted restricted
  run evaluate evaluate
  run gpu_check "$PY" benchmarks/gpu_check.py --tiny --device cpu --arch "${GPU_ARCH[$model]}" --gradient-checkpointing \
    --out "$R/$model/gpu_check.json"
done
echo "rehearsal passed: timings in $R/timings.tsv" >&2
