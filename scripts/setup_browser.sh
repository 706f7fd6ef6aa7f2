#!/usr/bin/env bash
# Install headless Chromium for the report rendering test (tests/test_report.py); safe to run
# again. Best effort, like setup_data.sh: without apt-get or root, or when the install fails,
# it says so in one line and exits 0, and that single test is skipped (pytest -ra lists it).
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  echo "chromium: installed ($(command -v chromium || command -v chromium-browser))"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [[ "$(id -u)" -ne 0 ]]; then
  echo "chromium: not installed (needs root and apt-get: sudo apt-get install chromium);" \
    "the report rendering test will be skipped"
  exit 0
fi
candidate=$(apt-cache policy chromium 2>/dev/null || true)
if [[ "$candidate" != *"Candidate: "[0-9]* ]]; then
  apt-get update -qq >/dev/null 2>&1 || true
fi
if DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends \
  chromium >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; then
  echo "chromium: installed ($(command -v chromium))"
else
  echo "chromium: apt-get install chromium failed; the report rendering test will be skipped"
fi
