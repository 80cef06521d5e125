#!/usr/bin/env bash
# Measures the console against the running real stack: first (contentful) paint in headless
# Chromium and the gzipped JS+CSS size. Prints figures; asserts nothing about them.
set -euo pipefail
cd "$(dirname "$0")/.."
CONSOLE_ONLY_REPORT=1 exec bash scripts/test-console.sh
