#!/usr/bin/env bash
# Create .venv with Python 3.12 (if missing) and install a requirements file into it
# (default requirements.txt; test.sh passes requirements-test.txt, which includes it).
# Used by run.sh and test.sh; safe to run repeatedly (reinstalls only when requirements change).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  if command -v python3.12 >/dev/null 2>&1 && python3.12 -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    PY=python3.12
  elif command -v pyenv >/dev/null 2>&1 && V=$(pyenv versions --bare 2>/dev/null | grep '^3\.12' | tail -1) && [ -n "$V" ]; then
    PY="env PYENV_VERSION=$V python3"  # (no `grep -q` in a pipe: with pipefail, pyenv's SIGPIPE fails it)
  else
    echo "error: Python 3.12 is required (jax >= 0.11 needs it): install python3.12 or pyenv 3.12" >&2
    exit 2
  fi
  echo "setup: creating .venv with $($PY --version)"
  $PY -m venv .venv
fi
req="${1:-requirements.txt}"
stamp=".venv/.${req%.txt}.sha"
want=$(cat requirements*.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing $req into .venv (log: .venv/pip.log)"
  if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -r "$req"; } > .venv/pip.log 2>&1; then
    tail -n 40 .venv/pip.log >&2
    echo "error: pip install failed (full log: .venv/pip.log)" >&2
    exit 2
  fi
  echo "$want" > "$stamp"
fi
