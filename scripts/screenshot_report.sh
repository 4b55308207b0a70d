#!/usr/bin/env bash
# Open the HTML report in headless Chromium and save a full-page screenshot, to look at what a reader sees.
#   scripts/screenshot_report.sh [report.html] [out.png] [width] [height]
# Installs Debian's chromium if it is missing (root, Debian/Ubuntu).
set -euo pipefail
report="${1:-steer-report/report.html}"
out="${2:-steer-report/report.png}"
width="${3:-1400}"
height="${4:-4000}"
[ -f "$report" ] || { echo "no report at $report: run 'make eval' first" >&2; exit 1; }
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
# The closed network here refuses Chromium's background connections: switch them off.
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size="${width},${height}" \
  --screenshot="$(realpath -m "$out")" "file://$(realpath "$report")" 2>/dev/null
echo "screenshot: $out"
