#!/usr/bin/env bash
# The lint gates, without root: ruff (lint and format) and mypy (with the zope plugin).
#
#     bash scripts/lint.sh
#
# Uses .venv when scripts/install.sh made one; otherwise makes .venv-lint as the calling user
# with exmilter's pure-Python dependencies and the pinned lint tools (setup.cfg, extra "lint").
# pymilter is left out there: it compiles against libmilter-dev, which needs root to install,
# and mypy reads the milter code without it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x .venv/bin/mypy ] && [ -x .venv/bin/ruff ]; then
    venv=.venv
else
    venv=.venv-lint
    PYTHON=${PYTHON:-python3}
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    # install_requires and the lint extra, read from setup.cfg so the pins live in one place
    mapfile -t deps < <("$venv/bin/python" - <<'PY'
import configparser
cfg = configparser.ConfigParser()
cfg.read("setup.cfg")
runtime = cfg["options"]["install_requires"].split("\n")
lint = cfg["options.extras_require"]["lint"].split("\n")
for line in runtime + lint:
    line = line.split("#")[0].strip()
    if line and not line.lower().startswith("pymilter"):
        print(line)
PY
)
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "${deps[@]}"
    "$venv/bin/python" -m pip install -q --no-deps -e .
fi

status=0
"$venv/bin/ruff" check exmilter tests bench || status=1
"$venv/bin/ruff" format --check exmilter tests bench || status=1
"$venv/bin/mypy" || status=1
exit $status
