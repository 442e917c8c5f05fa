#!/usr/bin/env bash
# Launch workbench.distributed on several processes.
#   scripts/train_distributed.sh restricted --model meta-llama/Llama-3.1-8B-Instruct --dtype bfloat16 --data forget.jsonl --out outputs/delta
#   scripts/train_distributed.sh full --model meta-llama/Llama-3.1-8B-Instruct --dtype float32 --data full.jsonl --out outputs/target
#   CPU_TEST=1 scripts/train_distributed.sh restricted --out /tmp/run     # 2 CPU ranks over gloo (no GPU)
# restricted → DDP config, full → FSDP2 config (scripts/accelerate/*.yaml); NUM_PROCESSES overrides 2.
set -euo pipefail
mode="${1:?usage: $0 restricted|full [workbench.distributed options]}"; shift
here="$(cd "$(dirname "$0")" && pwd)"
nproc="${NUM_PROCESSES:-2}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
if [[ -n "${CPU_TEST:-}" ]]; then
  # On CPU only this form starts real ranks (`--cpu --num_processes N` silently runs one process).
  export ACCELERATE_USE_CPU=true
  exec accelerate launch --multi_gpu --num_processes "$nproc" --num_machines 1 --mixed_precision no \
    --dynamo_backend no -m workbench.distributed --mode "$mode" "$@"
fi
case "$mode" in
  restricted) config="$here/accelerate/ddp_2gpu.yaml" ;;
  full) config="$here/accelerate/fsdp2_2gpu.yaml" ;;
  *) echo "mode must be restricted or full, got $mode" >&2; exit 2 ;;
esac
exec accelerate launch --config_file "$config" --num_processes "$nproc" -m workbench.distributed --mode "$mode" "$@"
