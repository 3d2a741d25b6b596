"""What the policy tests share: one configuration, its connector names and replies, requests.

Used by tests/test_policy_decide.py (engine and decider level), tests/test_policy_service.py
(the daemon, through a configuration file) and tests/test_policy_protocol.py (framing).
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SERVER

#: Receive connectors and accepted domains (indented YAML, without the server block).
CONNECTORS = """\
default_connectors: true
accepted_domains:
  - domain_name: labs.local
receive_connectors:
  - name: Relay
    transport_role: FrontendTransport
    usage: Custom
    bindings: [0.0.0.0:25]
    remote_ip_ranges: [10.83.4.56]
    permission_groups: [AnonymousUsers]
    permissions:
      - user: NT AUTHORITY\\ANONYMOUS LOGON
        extended_rights: [ms-Exch-SMTP-Accept-Any-Recipient]
  - name: Dedicated
    transport_role: FrontendTransport
    usage: Custom
    bindings: [10.0.0.5:2727]
    remote_ip_ranges: [192.168.50.0/24]
    permission_groups: [AnonymousUsers]
    max_recipients_per_message: 3
    max_message_size: 1MB
    message_rate_limit: 2
  - name: Secure
    transport_role: FrontendTransport
    usage: Custom
    bindings: [0.0.0.0:2600]
    remote_ip_ranges: [0.0.0.0-255.255.255.255]
    permission_groups: [AnonymousUsers]
    require_tls: true
tls: {certificate_file: /etc/exmilter/tls/cert.pem, key_file: /etc/exmilter/tls/key.pem}  # Secure's RequireTLS
"""

#: Small framing limits, so the daemon tests can exceed them with short inputs.
POLICYD_LIMITS = """\
policyd:
  max_line_length: 256
  max_attributes: 16
"""

#: A whole configuration file: the standard server block, CONNECTORS, POLICYD_LIMITS.
CONFIG_FILE = SERVER + CONNECTORS + POLICYD_LIMITS

FRONTEND = "EXCH01\\Default Frontend EXCH01"
CLIENT_FRONTEND = "EXCH01\\Client Frontend EXCH01"
RELAY = "EXCH01\\Relay"
DEDICATED = "EXCH01\\Dedicated"
SECURE = "EXCH01\\Secure"

RELAY_554 = "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"
CONFIG_PROBLEM = "451 4.3.5 Server configuration problem"


def answer(action: str) -> bytes:
    """The wire answer for ``action``."""
    return f"action={action}\n\n".encode()


def req(state: str, client: str = "203.0.113.9", context: str | None = "*:25", **attrs: str) -> dict[str, str]:
    """A request as Postfix 3.7 sends it (the attributes the decider reads), overridable."""
    r = {
        "request": "smtpd_access_policy",
        "protocol_state": state,
        "protocol_name": "ESMTP",
        "client_address": client,
        "client_port": "40000",
        "helo_name": "client.example",
        "instance": "",
        "sender": "",
        "recipient": "",
        "size": "0",
        "sasl_username": "",
        "encryption_protocol": "",
    }
    if context is not None:
        r["policy_context"] = context
    r.update(attrs)
    return r


def wire(attrs: dict[str, str]) -> bytes:
    """``attrs`` framed as a policy request: ``name=value`` lines and the empty line."""
    return "".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n"


def rcpt_wire(client: str = "10.83.4.56", recipient: str = "x@gmail.com", instance: str = "i1") -> bytes:
    """A short RCPT request on the wildcard port-25 listener (fits POLICYD_LIMITS)."""
    return wire(
        {
            "request": "smtpd_access_policy",
            "protocol_state": "RCPT",
            "client_address": client,
            "policy_context": "*:25",
            "instance": instance,
            "recipient": recipient,
            "helo_name": "h",
        }
    )


def private_logs(directory: Path) -> str:
    """A logs: section under ``directory``: a real daemon never writes the system's /var/log."""
    return (
        f"logs:\n  receive_protocol_log_path: {directory}/ProtocolLog\n"
        f"  message_tracking_log_path: {directory}/MessageTracking\n"
    )
