#!/usr/bin/env bash
# Install headless Chromium and its WebDriver for the browser tests (tests/test_report.py
# renders the report; tests/test_serve_browser.py drives tripletlab serve's page through
# Selenium and chromium-driver); safe to run again. Best effort, like setup_data.sh: without
# apt-get or root, or when the install fails, it says so in one line and exits 0, and those
# tests are skipped (pytest -ra lists them).
set -euo pipefail

have_browser() { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }
have_driver() { command -v chromedriver >/dev/null 2>&1; }

if have_browser && have_driver; then
  echo "chromium: installed ($(command -v chromium || command -v chromium-browser)," \
    "$(command -v chromedriver))"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [[ "$(id -u)" -ne 0 ]]; then
  echo "chromium: not installed (needs root and apt-get: sudo apt-get install chromium" \
    "chromium-driver); the browser tests will be skipped"
  exit 0
fi
candidate=$(apt-cache policy chromium chromium-driver 2>/dev/null || true)
if [[ "$candidate" != *"Candidate: "[0-9]* ]]; then
  apt-get update -qq >/dev/null 2>&1 || true
fi
if DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends \
  chromium chromium-driver >/dev/null 2>&1 && have_browser && have_driver; then
  echo "chromium: installed ($(command -v chromium), $(command -v chromedriver))"
elif have_browser; then
  echo "chromium: apt-get install chromium-driver failed; the serve page's browser test" \
    "will be skipped"
else
  echo "chromium: apt-get install chromium failed; the browser tests will be skipped"
fi
