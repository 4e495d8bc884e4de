#!/usr/bin/env bash
# Set up the environment (Python 3.12 venv, `pip install -e .`) and run the main job:
# x4 super-resolution of the example LR images with the official ResShift v3 weights
# (downloaded into ./weights on first use; without a network, infer.py says which files to put where).
# Any extra arguments go to infer.py (e.g. -i my_photos -o results -v v1 --dtype bf16).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_env.sh
if [ $# -eq 0 ]; then
  set -- -i ../shared/data/Val_SR/lq -o results/realsr_v3 --task realsr -v v3
fi
exec .venv/bin/python infer.py "$@"
