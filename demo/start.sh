#!/usr/bin/env bash
# Start the private federation (three stubservers, a DNS server, a CA) in the background,
# check every ordered pair, print the matrix. Creates .venv on first use. No root needed.
# STUBSERVER_DEMO_DIR: another folder than demo/run; STUBSERVER_DEMO_NETWORK: a new folder's
# demo in another /24 of loopback than 127.0.0.0/24 (the tests' demo, beside the user's).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/venv"
exec "$root/.venv/bin/python" -m stubserver.devtools.demo start --dir "${STUBSERVER_DEMO_DIR:-$root/demo/run}" \
  ${STUBSERVER_DEMO_NETWORK:+--network "$STUBSERVER_DEMO_NETWORK"}
