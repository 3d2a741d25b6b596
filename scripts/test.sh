#!/usr/bin/env bash
# The README's test command: install what is needed, run the lint gates (ruff check, ruff
# format --check, mypy), then the whole suite (unit, property and integration tests against
# private Postfix instances). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/lint.sh
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
