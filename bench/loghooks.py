"""What Exchange's logs cost the policy daemon per request (issue #15): decide + hooks, µs per request.

    .venv/bin/python bench/loghooks.py

RCPT requests (accepted, a new transaction each 10) for a connector with
``protocol_logging_level: None`` and for one with ``Verbose``, with no hooks (logs off) and
with the protocol recorder and the tracking receipts (logs on, writing to a temporary
directory through the background writers). Median of 5 rounds of 20,000 requests.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exmilter.config import loads
from exmilter.engine import Engine
from exmilter.logs.files import Writers
from exmilter.policy.decide import Decider
from exmilter.policy.protolog import open_exchange_logs

CONFIG = """\
server: {name: EX01, fqdn: mail.contoso.com}
accepted_domains: [contoso.com]
receive_connectors:
  - {name: Quiet, transport_role: FrontendTransport, usage: Custom, bindings: ["0.0.0.0:25"],
     remote_ip_ranges: [10.1.0.0/16], permission_groups: [AnonymousUsers]}
  - {name: Loud, transport_role: FrontendTransport, usage: Custom, bindings: ["0.0.0.0:25"],
     remote_ip_ranges: [10.2.0.0/16], permission_groups: [AnonymousUsers], protocol_logging_level: Verbose}
logs: {receive_protocol_log_path: DIR/p, message_tracking_log_path: DIR/t}
"""


def rounds(client: str, hooks: tuple, n: int = 20_000) -> float:
    engine = Engine(loads(CONFIG.replace("DIR", tempfile.mkdtemp()), "b.yaml").organization)
    decider = Decider()
    reqs = [
        {
            "request": "smtpd_access_policy",
            "protocol_state": "RCPT",
            "client_address": client,
            "client_port": str(40000 + i // 10),
            "policy_context": "*:25",
            "server_address": "127.0.0.1",
            "server_port": "25",
            "sender": "a@contoso.com",
            "recipient": f"u{i}@contoso.com",
            "instance": f"i{i // 10}",
        }
        for i in range(n)
    ]
    out = []
    for _ in range(5):
        t0 = time.perf_counter()
        for r in reqs:
            d = decider.decide(engine, r)
            for hook in hooks:
                hook(engine, r, d)
        out.append((time.perf_counter() - t0) / n * 1e6)
        decider = Decider()
    return statistics.median(out)


def main() -> int:
    d = Path(tempfile.mkdtemp())
    org = loads(CONFIG.replace("DIR", str(d)), "b.yaml").organization
    writers = Writers()
    hooks, _ = open_exchange_logs(org, print, writers)
    for label, client in (("protocol_logging_level None", "10.1.2.3"), ("protocol_logging_level Verbose", "10.2.2.3")):
        off = rounds(client, ())
        on = rounds(client, hooks)
        print(f"{label:<32} logs off {off:6.2f} µs/request   logs on {on:6.2f} µs/request")
    writers.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
