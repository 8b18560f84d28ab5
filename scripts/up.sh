#!/usr/bin/env bash
# The README's first command: install what Wrenn needs, then start the whole platform on this
# machine (host agent + control plane) in the foreground. Extra arguments go to `wrenn up`
# (e.g. --data-dir DIR --port N).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "Wrenn manages mounts, namespaces and gVisor sandboxes: run it as root (sudo)" >&2
  exit 1
fi

bash scripts/install-deps.sh
uv sync --frozen --quiet
bash scripts/build-web.sh || echo "continuing without the dashboard" >&2
exec uv run wrenn up "$@"
