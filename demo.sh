#!/usr/bin/env bash
# Set up the environment (Python 3.12 venv, `pip install -e .[demo]`: the core plus Gradio) and
# serve the browser demo (app.py) on http://127.0.0.1:7860 (offline: the bundled compact models;
# the official ones when their weights are in ./weights). Extra arguments go to app.py
# (e.g. --port 7861, --max_pixels 4000000, --weights_dir /data/weights).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_env.sh demo
exec .venv/bin/python app.py "$@"
