#!/usr/bin/env bash
# The whole benchmark in one command (Debian 12, as root):
#
#     bash bench/run.sh            # ~5 minutes; rewrites the results section of docs/performance.md
#     bash bench/run.sh --quick    # a ~1-minute smoke run; writes bench/results/quick.json only
#
# Installs what is missing (postfwd and Postfix's smtp-source via apt-get, the project's
# .venv via scripts/install.sh, py-spy into .venv), then runs bench/run.py. Everything
# listens on 127.0.0.1 only, every load stops by itself, and every process the benchmark
# starts is stopped by PID. Not part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/sbin/postfwd1 ] || need+=(postfwd)
{ [ -x /usr/sbin/smtp-source ] && [ -x /usr/sbin/postfix ]; } || need+=(postfix)
if ((${#need[@]})); then
    [ "$(id -u)" = 0 ] || { echo "bench/run.sh: run as root to install: ${need[*]}" >&2; exit 1; }
    if ! dpkg-query -W postfix >/dev/null 2>&1; then
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need[@]}"
fi

if ! .venv/bin/python -c 'import exmilter, twisted, yaml, prometheus_client' 2>/dev/null; then
    bash scripts/install.sh
fi
[ -x .venv/bin/py-spy ] || .venv/bin/python -m pip install -q py-spy || echo "bench/run.sh: no py-spy; the profile is skipped" >&2

exec .venv/bin/python bench/run.py "$@"
