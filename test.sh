#!/usr/bin/env bash
# Set up the environment (Python 3.12 venv, `pip install -e .[test]`) and run the whole test suite
# on 8 fake CPU devices, so sharding is always exercised. Two pytest workers by default (most test
# time is single-threaded XLA compilation); TEST_WORKERS=0 runs in one process.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_env.sh test
export XLA_FLAGS="--xla_force_host_platform_device_count=8 ${XLA_FLAGS:-}"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
W="${TEST_WORKERS:-2}"
if [ "$W" = 0 ]; then exec .venv/bin/python -m pytest -q tests "$@"; fi
exec .venv/bin/python -m pytest -q tests -n "$W" --dist loadfile "$@"
