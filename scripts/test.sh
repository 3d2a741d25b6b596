#!/usr/bin/env bash
# The README's test command: install what is needed, lint, then run the whole suite
# (unit, property and integration tests against a private Postfix).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check exmilter tests bench
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
