#!/usr/bin/env bash
# Set up the environment (Python 3.12 venv, `pip install -e .`) and run the main job:
# x4 super-resolution of the example LR images in examples/ (inside the repository) into results/.
# Model: the official ResShift realsr v3 weights when present in ./weights or downloadable; otherwise
# the compact realsr model bundled with the package (resshift_jax/assets/compact/; infer.py prints
# one `model: ...` line saying which ran), so a clone without network still super-resolves.
# Any extra arguments replace these defaults and go to infer.py
# (e.g. -i my_photos -o results -v v1 --dtype bf16, or -v compact for the bundled model).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_env.sh
if [ $# -eq 0 ]; then
  # --overwrite: a rerun may use another model (e.g. the official one once it is downloaded)
  set -- -i examples -o results/examples --task realsr -v v3 --overwrite
fi
exec .venv/bin/python infer.py "$@"
