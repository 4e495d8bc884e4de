#!/usr/bin/env bash
# Create .venv with Python 3.12 (if missing) and install this project into it, editable:
#   bash scripts/setup_env.sh        -> pip install -e .        (requirements.txt; run.sh)
#   bash scripts/setup_env.sh test   -> pip install -e .[test,demo]  (+ requirements-test.txt and
#                                       requirements-demo.txt: the tests drive the demo too; test.sh)
#   bash scripts/setup_env.sh demo   -> pip install -e .[demo]  (+ requirements-demo.txt; demo.sh)
# pyproject.toml reads its dependencies from the requirements files, so they stay the one list.
# Safe to run repeatedly: it reinstalls only when pyproject.toml or a requirements file changes,
# so later runs need no network. setuptools is installed into .venv and the build runs without
# isolation, so an editable install needs nothing beyond what pip has already fetched once.
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
case "${1:-}" in
  "") target="." stamp=".venv/.install.sha" ;;
  test | requirements-test.txt) target=".[test,demo]" stamp=".venv/.install-test.sha" ;;  # (file name: older callers)
  demo) target=".[demo]" stamp=".venv/.install-demo.sha" ;;
  *) echo "error: setup_env.sh [test|demo], got '$1'" >&2; exit 2 ;;
esac
want=$(cat pyproject.toml requirements*.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: pip install -e '$target' into .venv (log: .venv/pip.log)"
  if ! { .venv/bin/python -m pip install --upgrade pip "setuptools>=69" \
         && .venv/bin/python -m pip install --no-build-isolation -e "$target"; } > .venv/pip.log 2>&1; then
    tail -n 40 .venv/pip.log >&2
    echo "error: pip install failed (full log: .venv/pip.log)" >&2
    exit 2
  fi
  echo "$want" > "$stamp"
fi
