#!/usr/bin/env bash
# The dashboard's API types (web/src/lib/api/schema.d.ts), generated from the control plane's own
# OpenAPI document. `--check` regenerates into a temporary file and fails if the committed one is
# stale (run by `make check-web`). Needs `npm ci` in web/ first (scripts/build-web.sh does it).
set -euo pipefail
cd "$(dirname "$0")/.."

out=web/src/lib/api/schema.d.ts
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The document is built from the routes alone: nothing is served or migrated, and the settings
# only need to be valid (a throwaway secret and an SQLite file in the temporary directory).
WRENN_GEN_DIR="$tmp" uv run --quiet python - >"$tmp/openapi.json" <<'PY'
import json
import os
from pathlib import Path

from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.settings import Settings

tmp = Path(os.environ["WRENN_GEN_DIR"])
settings = Settings(
    data_dir=tmp,
    database_url=f"sqlite+aiosqlite:///{tmp / 'openapi.db'}",
    jwt_secret="openapi-" + "x" * 40,
    migrate_on_start=False,
)
print(json.dumps(create_app(settings).openapi(), indent=1, sort_keys=True))
PY

(cd web && npx --no-install openapi-typescript "$tmp/openapi.json" -o "$tmp/schema.d.ts" --alphabetize --default-non-nullable false >/dev/null)
(cd web && npx --no-install prettier --stdin-filepath src/lib/api/schema.d.ts <"$tmp/schema.d.ts") >"$tmp/schema.fmt.d.ts"

if [ "${1:-}" = "--check" ]; then
  if ! diff -u "$out" "$tmp/schema.fmt.d.ts"; then
    echo "$out is stale: run 'npm run gen:api' in web/ (or bash scripts/gen-web-api.sh)" >&2
    exit 1
  fi
  echo "dashboard API types are fresh"
else
  mkdir -p "$(dirname "$out")"
  cp "$tmp/schema.fmt.d.ts" "$out"
fi
