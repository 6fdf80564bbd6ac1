#!/usr/bin/env bash
# Stop exactly the processes demo/start.sh started (by their pid files).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$root/.venv/bin/python" ] || { echo "nothing to stop (no .venv)"; exit 0; }
exec "$root/.venv/bin/python" -m stubserver.devtools.demo stop --dir "${STUBSERVER_DEMO_DIR:-$root/demo/run}"
