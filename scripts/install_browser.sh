#!/usr/bin/env bash
# Install Debian's Chromium and ChromeDriver (packages chromium, chromium-driver) for the browser
# test (tests/test_app.py), unless /usr/bin/chromium and /usr/bin/chromedriver are already there.
# Exit 0 when both are present afterwards; otherwise exit 3 with one line saying why (the test
# then skips with that line). Needs root or password-less sudo, and apt's package mirrors.
set -uo pipefail
have() { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }
have && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get here (not a Debian-based machine): install Chromium and ChromeDriver as /usr/bin/chromium and /usr/bin/chromedriver"
  exit 3
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "not root and no password-less sudo: run 'sudo apt-get install chromium chromium-driver' once"
    exit 3
  fi
fi
log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
install() { $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver >>"$log" 2>&1; }
if ! install; then  # stale package lists: refresh once and retry
  $SUDO apt-get update -q >>"$log" 2>&1 && install
fi
if ! have; then
  echo "apt-get install chromium chromium-driver failed: $(grep -E '^(E:|Err)' "$log" | head -1 || tail -1 "$log")"
  exit 3
fi
rm -f "$log"
