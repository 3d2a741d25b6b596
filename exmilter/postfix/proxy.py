"""Listeners behind HAProxy: the PROXY protocol header gives smtpd the real client (docs/cluster.md).

``smtpd_upstream_proxy_protocol = haproxy`` (Postfix 2.10+) reads HAProxy's PROXY header
before the banner: v1 (text) and, since Postfix 3.5, v2 (binary), told apart by Postfix
itself, so one setting serves ``send-proxy`` and ``send-proxy-v2``. The header's client
address becomes ``client_address`` for the policy daemon, ``{client_addr}`` for milters
and ``connect from`` in the log, so selection, limits and tracking see the real client.
Its destination becomes ``server_address``/``server_port``: the balancer's, not the
listener's, which is why every listener's policy check names its listener by
``policy_context`` (exmilter.policy.decide never falls back to the server address when
the context is there; postfix-notes §4). A connection without the header is refused by
Postfix after ``smtpd_upstream_proxy_timeout``: only the balancer can reach such a listener.
"""

from __future__ import annotations

from exmilter.model import Organization
from exmilter.postfix.options import OptionGroup

#: The only value Postfix knows for smtpd_upstream_proxy_protocol (v1 and v2 both).
HAPROXY = "haproxy"


def proxy_options(org: Organization) -> OptionGroup:
    """The listener's PROXY settings; nothing at all when the server is not behind HAProxy."""
    c = org.cluster
    if c.proxy_protocol != HAPROXY:
        return OptionGroup()
    return OptionGroup(
        comments=(
            "#   behind HAProxy: the PROXY header (v1 or v2) names the real client; "
            "the listener is named by policy_context, not server_address",
        ),
        options=(
            ("smtpd_upstream_proxy_protocol", HAPROXY),
            ("smtpd_upstream_proxy_timeout", f"{c.proxy_timeout}s"),
        ),
    )
