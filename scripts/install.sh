#!/usr/bin/env bash
# Install everything exmilter needs on Debian 12, safely re-runnable:
# Debian packages (Postfix, libmilter headers for pymilter, swaks, a compiler, venv support;
# dovecot-core: the sandbox runs its own private Dovecot auth service for AUTH, never the system one;
# promtool, the Debian packaging tools and systemd-analyze for the tests) and a Python
# virtual environment in .venv with exmilter and its test tools.
#
#     bash scripts/install.sh [--no-venv] [EXTRA_PACKAGE...]
#
# EXTRA_PACKAGE...  more Debian packages, installed the same way when missing (bench/run.sh
#                   passes postfwd); also read from $EXTRA_APT_PACKAGES (space-separated).
# --no-venv         the Debian packages only; leave .venv as it is.
#
# Only missing packages are installed (apt-get needs root then); nothing is ever removed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(postfix libmilter-dev swaks python3-venv python3-dev gcc ca-certificates openssl
    # the sandbox's private Dovecot auth service (AUTH), never the system one
    dovecot-core
    # issue #17: the cluster tests start their own redis-server (the shared MessageRateLimit window)
    # and haproxy (PROXY v2 in front of two sandbox nodes), never the system services
    redis-server haproxy
    # promtool: the alert rules and a live metrics page are checked in the tests
    prometheus
    # the Debian package is built (scripts/build-deb.sh), checked with lintian and run in the tests
    # with Debian's own Python libraries; systemd-analyze verifies the units
    debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools python3-wheel lintian
    python3-twisted python3-yaml python3-prometheus-client python3-milter python3-idna systemd man-db)

venv=1
extra=()
# shellcheck disable=SC2206  # a space-separated list on purpose
requested=("$@" ${EXTRA_APT_PACKAGES:-})
for arg in "${requested[@]}"; do
    case "$arg" in
        --no-venv) venv=0 ;;
        -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "install.sh: unknown option: $arg" >&2; exit 2 ;;
        *)
            [[ $arg =~ ^[a-z0-9][a-z0-9.+-]+$ ]] || { echo "install.sh: not a Debian package name: $arg" >&2; exit 2; }
            extra+=("$arg")
            ;;
    esac
done

missing=()
for p in "${APT_PACKAGES[@]}" "${extra[@]}"; do
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
    # Only promtool is wanted from Debian's prometheus package: never leave its server
    # running (it would listen on *:9090) where this script installed it.
    if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
fi

((venv)) || exit 0
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
