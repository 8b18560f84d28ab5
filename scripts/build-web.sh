#!/usr/bin/env bash
# Builds the dashboard (web/ -> web/build), which the control plane serves at /. Needs Node.js
# 20.19 or newer with npm; without them the control plane serves the API only.
set -euo pipefail
cd "$(dirname "$0")/../web"

if ! command -v npm >/dev/null 2>&1; then
  echo "npm not found: the dashboard is not built (the API works without it)" >&2
  exit 1
fi
npm ci --no-audit --no-fund --loglevel=error
npm run build --silent
