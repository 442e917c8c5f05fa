#!/usr/bin/env bash
# Launch workbench.distributed on several processes.
#   θr exactly as a notebook would fine-tune it, as a complete HF folder (then: -p retain_model=outputs/theta_r):
#   scripts/train_distributed.sh full --notebook oracle-vs-random --params params/oracle-vs-random/paper-llama.yaml --stage retain --out outputs/theta_r
#   scripts/train_distributed.sh restricted --model meta-llama/Llama-3.1-8B-Instruct --dtype bfloat16 --data forget.jsonl --out outputs/delta
#   CPU_TEST=1 scripts/train_distributed.sh restricted --out /tmp/run     # 2 CPU ranks over gloo (no GPU)
# restricted → DDP config, full → FSDP2 config (scripts/accelerate/*.yaml); NUM_PROCESSES overrides 2.
# The arguments are checked before anything is launched (e.g. objectives that cannot run distributed).
set -euo pipefail
mode="${1:?usage: $0 restricted|full [workbench.distributed options]}"; shift
here="$(cd "$(dirname "$0")" && pwd)"
nproc="${NUM_PROCESSES:-2}"
python="${PYTHON:-python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
case "$mode" in
  restricted) config="$here/accelerate/ddp_2gpu.yaml" ;;
  full) config="$here/accelerate/fsdp2_2gpu.yaml" ;;
  *) echo "mode must be restricted or full, got $mode" >&2; exit 2 ;;
esac
"$python" -m workbench.distributed --mode "$mode" --check-only "$@"
if [[ -n "${CPU_TEST:-}" ]]; then
  # On CPU only this form starts real ranks (`--cpu --num_processes N` silently runs one process).
  export ACCELERATE_USE_CPU=true
  exec accelerate launch --multi_gpu --num_processes "$nproc" --num_machines 1 --mixed_precision no \
    --dynamo_backend no -m workbench.distributed --mode "$mode" "$@"
fi
exec accelerate launch --config_file "$config" --num_processes "$nproc" -m workbench.distributed --mode "$mode" "$@"
