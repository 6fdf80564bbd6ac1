#!/usr/bin/env bash
# The whole check, exactly as CI runs it: ruff (lint and format), mypy --strict, pytest.
# Installs the project into .venv on first use. Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
cd "$root"
scripts/venv
bin=.venv/bin
echo "== ruff" && "$bin/ruff" check stubserver tests bench scripts && "$bin/ruff" format --check stubserver tests bench scripts
echo "== mypy --strict" && "$bin/mypy"
echo "== pytest" && "$bin/pytest" "$@"
