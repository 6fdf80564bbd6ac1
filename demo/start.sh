#!/usr/bin/env bash
# Start the private federation (three stubservers, a DNS server, a CA) in the background,
# check every ordered pair, print the matrix. Creates .venv on first use. No root needed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/venv"
exec "$root/.venv/bin/python" -m stubserver.devtools.demo start --dir "${STUBSERVER_DEMO_DIR:-$root/demo/run}"
