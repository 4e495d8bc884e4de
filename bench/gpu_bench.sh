#!/usr/bin/env bash
# Benchmarks for one lent GPU (H100/H200), streaming JSON lines to $OUT.
#
# The GPU machine has jax+CUDA and numpy but not ml_collections (needed by the configs), and its
# flax/optax may be older than ours, so carry those pure-Python packages from the local venv:
#   run(command="bash bench/gpu_bench.sh train", timeout_s=560,
#       carry=[".venv/lib/python3.12/site-packages/ml_collections",
#              ".venv/lib/python3.12/site-packages/yaml",
#              ".venv/lib/python3.12/site-packages/flax",
#              ".venv/lib/python3.12/site-packages/optax"])
# Modes (priority order inside each; partial results still come back):
#   quick: inference, bf16 v3/v1 at batch 1 and 64 (LR 64), fp32 v3 batch 64, a 512x512 LR tile
#   full : inference, everything of issue 5: v1/v3 x batch 1/16/64 x LR 64/128 x fp32/bf16
#   train: train-step samples/s (issue 6): v1 bf16 batch 64 (the target), its frozen-encoder
#          share, v3 bf16 at its batch 96, v1 with the config's micro-batch 8, v1 fp32
#   side : issue 14, ours and the official PyTorch code on the same card in one call: ours v3/v1
#          bf16 batch 1 and 64 at LR 64 with the parts (encode, UNet call, decode) timed apart, the
#          512x512 LR tile's memory, the folder benchmark (v3 batch 64, 64x64 inputs, device-busy
#          fraction) and a profiler trace of the v3 batch-64 program in $OUT/trace; then the
#          official pipeline, eager fp16 and torch.compile, v1/v3 batch 1 and 64. It needs a clone
#          of zsyOAOA/ResShift at $RESSHIFT_REPO (default ./.official/ResShift, an ignored path:
#          carry it) and the official code's pure-Python requirements (omegaconf, antlr4, einops,
#          timm, loguru) carried the same way under .official/site (prepended to PYTHONPATH):
#   run(command="bash bench/gpu_bench.sh side", timeout_s=590, carry=[...the four above...,
#       ".official"])
set -uo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-quick}"
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
LOG="$OUT/bench_infer.jsonl"
SP=.venv/lib/python3.12/site-packages
mkdir -p /tmp/carry_py   # carried packages (only those that travelled) come first on the path
for pkg in ml_collections yaml flax optax; do [ -d "$SP/$pkg" ] && ln -sfn "$PWD/$SP/$pkg" /tmp/carry_py/$pkg; done
export PYTHONPATH="/tmp/carry_py:${PYTHONPATH:-}"
python -c "import jax, flax, optax, ml_collections; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" || exit 2
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # so peak_bytes_in_use means this program's need
B="python bench/bench_infer.py --iters 10"

run() { echo "+ $*" >&2; timeout "${STAGE_TIMEOUT:-300}" "$@" | tee -a "$LOG"; }

if [ "$MODE" = train ]; then
  LOG="$OUT/bench_train.jsonl"
  T="python bench/bench_train.py --steps 10"
  run $T --configs realsr_v1 --batch 64 --accum 1 --amp on
  run $T --configs realsr_v1 --batch 64 --amp on --encode_part
  run $T --configs realsr_v3 --batch 96 --accum 4 --amp on
  run $T --configs realsr_v1 --batch 64 --accum 8 --amp on
  run $T --configs realsr_v1 --batch 64 --accum 1 --amp off
  run $T --configs realsr_v1 --batch 128 --accum 1 --amp on
elif [ "$MODE" = side ]; then
  REPO="${RESSHIFT_REPO:-$PWD/.official/ResShift}"
  [ -d .official/site ] && export PYTHONPATH="$PWD/.official/site:$PYTHONPATH"
  STAGE_TIMEOUT=150 run $B --dtypes bf16 --versions v3 --sizes 64 --batches 64,1 --parts
  STAGE_TIMEOUT=150 run $B --dtypes bf16 --versions v1 --sizes 64 --batches 64,1 --parts
  STAGE_TIMEOUT=120 run python bench/bench_folder.py --model v3 --n 1024 --lr 64 --bs 64 --dtype bf16 --modes stream
  STAGE_TIMEOUT=60 run python bench/bench_infer.py --dtypes bf16 --versions v3 --sizes 64 --batches 64 --iters 3 \
    --trace "$OUT/trace"
  STAGE_TIMEOUT=100 run $B --dtypes bf16 --versions v3 --sizes 512 --batches 1 --iters 3 --isolate
  O="python bench/bench_official_torch.py --repo $REPO --device cuda --size 64 --iters 5"
  STAGE_TIMEOUT=120 run $O --version v3 --batches 64,1 --dtype fp16
  STAGE_TIMEOUT=120 run $O --version v1 --batches 64,1 --dtype fp16
  STAGE_TIMEOUT=150 run $O --version v3 --batches 64,1 --dtype fp16 --compile
  STAGE_TIMEOUT=150 run $O --version v1 --batches 64 --dtype fp16 --compile
elif [ "$MODE" = quick ]; then
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
