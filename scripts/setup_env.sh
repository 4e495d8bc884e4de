#!/usr/bin/env bash
# Create .venv with Python 3.12 (if missing) and install requirements.txt into it.
# Sourced by run.sh and test.sh; safe to run repeatedly.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  if command -v python3.12 >/dev/null 2>&1 && python3.12 -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    PY=python3.12
  elif command -v pyenv >/dev/null 2>&1 && pyenv versions --bare | grep -q '^3\.12'; then
    PY="env PYENV_VERSION=$(pyenv versions --bare | grep '^3\.12' | tail -1) python3"
  else
    echo "error: Python 3.12 is required (jax >= 0.11 needs it): install python3.12 or pyenv 3.12" >&2
    exit 2
  fi
  $PY -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi
