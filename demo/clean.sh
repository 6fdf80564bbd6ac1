#!/usr/bin/env bash
# Stop the demo if it runs, then remove everything it made (demo/run/).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir="${STUBSERVER_DEMO_DIR:-$root/demo/run}"
"$root/demo/stop.sh"
rm -rf "$dir"
echo "removed $dir"
