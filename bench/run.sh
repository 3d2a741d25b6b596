#!/usr/bin/env bash
# The whole benchmark in one command (Debian 12, as root):
#
#     bash bench/run.sh            # ~5 minutes; rewrites the results section of docs/performance.md
#     bash bench/run.sh --quick    # a ~1-minute smoke run; writes bench/results/quick.json only
#
# Installs what is missing through scripts/install.sh (Postfix with smtp-source, and postfwd
# as an extra package; the project's .venv when it cannot import exmilter), then py-spy into
# .venv, then runs bench/run.py. Everything listens on 127.0.0.1 only, every load stops by
# itself, and every process the benchmark starts is stopped by PID. Not part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if .venv/bin/python -c 'import exmilter, twisted, yaml, prometheus_client' 2>/dev/null; then
    bash scripts/install.sh --no-venv postfwd
else
    bash scripts/install.sh postfwd
fi
[ -x .venv/bin/py-spy ] || .venv/bin/python -m pip install -q py-spy || echo "bench/run.sh: no py-spy; the profile is skipped" >&2

exec .venv/bin/python bench/run.py "$@"
