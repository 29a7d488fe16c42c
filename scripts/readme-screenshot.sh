#!/usr/bin/env bash
# The README's picture: the top of the report `make demo` wrote, in headless Chromium.
#   ./scripts/readme-screenshot.sh [demo/report/index.html] [docs/images/demo-report.png]
set -euo pipefail
REPORT=$(realpath "${1:-demo/report/index.html}")
OUT=$(realpath -m "${2:-docs/images/demo-report.png}")
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1400 \
    --screenshot="$OUT" "file://$REPORT" 2>/dev/null
echo "$OUT"
