#!/usr/bin/env bash
# Install everything exmilter needs on Debian 12, safely re-runnable:
# Debian packages (Postfix, libmilter headers for pymilter, swaks, a compiler, venv support)
# and a Python virtual environment in .venv with exmilter and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(postfix libmilter-dev swaks python3-venv python3-dev gcc ca-certificates)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    [ "$(id -u)" = 0 ] || { echo "install.sh: run as root to install: ${missing[*]}" >&2; exit 1; }
    # Install Postfix unconfigured: exmilter runs its own private instances and never
    # touches (or starts) the system one.
    if ! dpkg-query -W postfix >/dev/null 2>&1; then
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
