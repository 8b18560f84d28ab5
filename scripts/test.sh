#!/usr/bin/env bash
# The whole test suite: lint, type checks, generated-code freshness, unit tests, then integration
# tests that start real gVisor capsules (root required). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "the test suite starts real capsules: run it as root (sudo make test)" >&2
  exit 1
fi

bash scripts/install-deps.sh
# The dashboard's tests drive Debian's Chromium.
apt-get install -y -qq --no-install-recommends chromium >/dev/null
uv sync --frozen --quiet
bash scripts/build-web.sh
make --no-print-directory check
# The slowest tests are printed: the whole run must stay well inside CI's time limit.
uv run pytest tests -q -p no:cacheprovider --durations=25 "$@"
