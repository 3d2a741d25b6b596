#!/usr/bin/env bash
# The README's main command: install, validate conf/exmilter.yaml, show what the seeds'
# clients would get from it, then run the whole stack (private Postfix + policy daemon)
# in the sandbox until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
CONFIG=${CONFIG:-conf/exmilter.yaml}
X=.venv/bin/exmilter
$X check -c "$CONFIG"
for args in \
    "--client-ip 192.168.0.30 --from test@test.com --to adam.wally@labs.local" \
    "--client-ip 192.168.0.30 --from test@test.com --to someone@gmail.com" \
    "--client-ip 10.83.4.56 --from noreply@exchangelabs.nl --to jaapwess@gmail.com" \
    "--client-ip 10.83.5.20 --from scanner@labs.local --to someone@gmail.com"; do
    echo
    echo "\$ exmilter explain -c $CONFIG $args"
    # shellcheck disable=SC2086  # the arguments are meant to split
    $X explain -c "$CONFIG" $args
done

echo
# The sandbox needs a state directory Postfix's users can reach: /tmp by default.
exec $X sandbox -c "$CONFIG" ${STATE_DIR:+--state-dir "$STATE_DIR"}
