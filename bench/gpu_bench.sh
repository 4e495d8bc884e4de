#!/usr/bin/env bash
# All inference benchmarks for one lent GPU (H100/H200), streaming JSON lines to $OUT.
#
# The GPU machine has jax+CUDA, flax, numpy but not ml_collections (needed by the configs),
# so carry the two pure-Python packages from the local venv:
#   run(command="bash bench/gpu_bench.sh quick", timeout_s=560,
#       carry=[".venv/lib/python3.12/site-packages/ml_collections",
#              ".venv/lib/python3.12/site-packages/yaml"])
# Modes (priority order inside each; partial results still come back):
#   quick: bf16 v3/v1 at batch 1 and 64 (LR 64), fp32 v3 batch 64, a 512x512 LR tile (memory)
#   full : everything of issue 5: v1/v3 x batch 1/16/64 x LR 64/128 x fp32/bf16
set -uo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-quick}"
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
LOG="$OUT/bench_infer.jsonl"
SP=.venv/lib/python3.12/site-packages
if ! python -c "import ml_collections" 2>/dev/null; then
  mkdir -p /tmp/carry_py
  for pkg in ml_collections yaml; do [ -d "$SP/$pkg" ] && ln -sfn "$PWD/$SP/$pkg" /tmp/carry_py/$pkg; done
  export PYTHONPATH="/tmp/carry_py:${PYTHONPATH:-}"
fi
python -c "import jax, ml_collections; print('jax', jax.__version__, jax.devices())" || exit 2
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # so peak_bytes_in_use means this program's need
B="python bench/bench_infer.py --iters 10"

run() { echo "+ $*" >&2; timeout "${STAGE_TIMEOUT:-300}" "$@" | tee -a "$LOG"; }

if [ "$MODE" = quick ]; then
  run $B --dtypes bf16 --versions v3 --sizes 64 --batches 1,64
  run $B --dtypes bf16 --versions v1 --sizes 64 --batches 1,64
  run $B --dtypes fp32 --versions v3 --sizes 64 --batches 64
  run $B --dtypes bf16 --versions v3 --sizes 512 --batches 1 --iters 3 --isolate   # 512 LR tile memory
else
  for d in bf16 fp32; do
    for v in v3 v1; do
      run $B --dtypes $d --versions $v --sizes 64,128 --batches 1,16,64
    done
  done
  run $B --dtypes bf16,fp32 --versions v3 --sizes 512 --batches 1 --iters 3 --isolate
fi
echo "results: $LOG" >&2
