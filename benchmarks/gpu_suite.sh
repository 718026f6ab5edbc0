#!/usr/bin/env bash
# The GPU figures of the training issue in one run (about 5 minutes on one GPU when it is lent): step time and peak
# memory (torch.cuda.max_memory_allocated) of nudf64, nudf128, nudf256, unet64 and unet128 in float32 and
# bf16-mixed, batch 4 (NUDF: × 15,000 points), median of 5 steps after 2 warm-up ones, each in its own process.
#
#   bash benchmarks/gpu_suite.sh OUT            # on the GPU machine
#   bash benchmarks/gpu_suite.sh OUT --smoke    # the same commands on CPU with the demo presets and tiny sizes
#
# Writes OUT/nudf_steps.{txt,json} and OUT/unet_steps.{txt,json}. PYTHON selects the interpreter
# (default .venv/bin/python, else python3).
set -euo pipefail
out=${1:?usage: bash benchmarks/gpu_suite.sh OUT [--smoke]}
mode=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
mkdir -p "$out"
if [ "$mode" = "--smoke" ]; then
    device=cpu; nudf=(nudf-demo); unet=(unet-demo); size=(--batch 1 --points 500 --steps 1 --warmup 0)
elif [ -z "$mode" ]; then
    device=cuda; nudf=(nudf64 nudf128 nudf256); unet=(unet64 unet128); size=(--batch 4 --points 15000 --steps 5 --warmup 2)
    "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_suite.sh: no CUDA device')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
else
    echo "gpu_suite.sh: unknown option $mode (expected --smoke or nothing)" >&2; exit 2
fi
"$python" "$here/train_step.py" --presets "${nudf[@]}" --devices "$device" "${size[@]}" --precision 32 bf16-mixed \
    --json "$out/nudf_steps.json" | tee "$out/nudf_steps.txt"
"$python" "$here/train_step.py" --presets "${unet[@]}" --devices "$device" "${size[@]}" --precision 32 bf16-mixed \
    --json "$out/unet_steps.json" | tee "$out/unet_steps.txt"
