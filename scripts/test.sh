#!/usr/bin/env bash
# Install what the tests need (once) and run them: ./scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --install-only
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
