"""The sandbox's outbound side: send connectors routed as rendered, to next hops on loopback.

Without send connectors (and without ``mailbox_next_hop``) nothing changes: every listener
hands its mail to the delivery agent through ``content_filter``. With them, the listeners
hand mail to Postfix's routing, as in production: the rendered transport map, TLS policy
map and per-connector smtp transports (:mod:`exmilter.postfix.transport`), so a message
reaches the smart host or mailbox next hop its address space selects (in tests, SMTP
servers the tests run on 127.0.0.1). The sandbox never looks anything up in DNS, so a
route by MX (DNS routing, or accepted domains without a mailbox next hop) goes to the
delivery agent instead, its next hop naming the route (``send-connector=exsend-internet``),
and :attr:`~exmilter.sandbox.deliver.Delivery.envelope`'s ``listener`` shows it.
The smtp client trusts the sandbox's own CA (``STATE/ca/ca.pem``), which issues the test
next hops' certificates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exmilter.model import Organization
from exmilter.postfix.transport import render_outbound
from exmilter.sandbox.certificates import CertificateAuthority
from exmilter.sandbox.delivery import TRANSPORT

#: Where the sandbox's CA lives under its state directory (next hops' certificates come from it).
CA_DIR = "ca"
#: A DNS route in the sandbox: the delivery agent, the route named in its next hop.
DNS_ROUTE = TRANSPORT + ":send-connector={}"


@dataclass(frozen=True)
class SandboxOutbound:
    main: dict[str, str]
    services: tuple[str, ...]
    files: dict[str, str]
    ca: CertificateAuthority


def sandbox_outbound(org: Organization, state_dir: Path) -> SandboxOutbound | None:
    """The outbound side for the sandbox's Postfix, or None when the file routes nothing."""
    rendered = render_outbound(org, dns_transport=DNS_ROUTE)
    if rendered.empty:
        return None
    ca = CertificateAuthority.create(state_dir / CA_DIR)
    main = {name: value for name, value, _ in rendered.main}
    main.pop("smtp_tls_CApath", None)  # the sandbox's own CA instead of the system's anchors
    main["smtp_tls_CAfile"] = str(ca.cert)
    return SandboxOutbound(main, tuple(rendered.services), dict(rendered.files), ca)
