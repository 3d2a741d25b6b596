"""Exchange's defaults: per usage type (spec §1.3) and the connectors setup creates (§1.4).

Defaults are plain dictionaries of snake_case property → value in the configuration
file's own syntax, so a default and an admin's override pass through one parser.
"""

from __future__ import annotations

from typing import Any

ALL_V4 = "0.0.0.0-255.255.255.255"
ALL_V6 = "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"

#: New-ReceiveConnector -Usage X: what the usage sets beyond the common defaults.
USAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "Client": {
        "permission_groups": ["ExchangeUsers"],
        "auth_mechanism": ["Tls", "Integrated", "BasicAuth", "BasicAuthRequireTLS"],
        "bindings": ["0.0.0.0:587"],
    },
    "Custom": {"permission_groups": ["None"], "auth_mechanism": ["Tls"]},
    "Internal": {
        "permission_groups": ["ExchangeServers", "ExchangeLegacyServers"],
        "auth_mechanism": ["Tls", "ExchangeServer"],
        "bindings": ["0.0.0.0:25"],
        "size_enabled": "EnabledWithoutValue",
        "max_inbound_connection_percentage_per_source": 100,
    },
    "Internet": {
        "permission_groups": ["AnonymousUsers"],
        "auth_mechanism": ["Tls"],
        "remote_ip_ranges": [ALL_V4],
    },
    "Partner": {
        "permission_groups": ["Partners"],
        "auth_mechanism": ["Tls"],
        "domain_secure_enabled": True,
    },
}

#: Properties each usage cannot do without (spec §1.3 "Required").
USAGE_REQUIRED: dict[str, tuple[str, ...]] = {
    "Client": ("remote_ip_ranges",),
    "Custom": ("bindings", "remote_ip_ranges"),
    "Internal": ("remote_ip_ranges",),
    "Internet": ("bindings",),
    "Partner": ("bindings", "remote_ip_ranges"),
}


def default_connectors(server: str) -> list[dict[str, Any]]:
    """The five receive connectors of a freshly installed Exchange 2019 Mailbox server."""
    everywhere = [ALL_V4, ALL_V6]
    return [
        {
            "name": f"Default Frontend {server}",
            "transport_role": "FrontendTransport",
            "usage": "Internet",
            "bindings": ["[::]:25", "0.0.0.0:25"],
            "remote_ip_ranges": everywhere,
            "auth_mechanism": ["Tls", "BasicAuth", "BasicAuthRequireTLS", "ExchangeServer", "Integrated"],
            "permission_groups": ["AnonymousUsers", "ExchangeServers", "ExchangeLegacyServers"],
            "protocol_logging_level": "Verbose",
        },
        {
            "name": f"Client Frontend {server}",
            "transport_role": "FrontendTransport",
            "usage": "Client",
            "bindings": ["[::]:587", "0.0.0.0:587"],
            "remote_ip_ranges": everywhere,
            "auth_mechanism": ["Tls", "BasicAuth", "BasicAuthRequireTLS", "Integrated"],
            "permission_groups": ["ExchangeUsers"],
            "message_rate_limit": 5,
            "message_rate_source": "User",
        },
        {
            "name": f"Outbound Proxy Frontend {server}",
            "transport_role": "FrontendTransport",
            "usage": "Internal",
            "bindings": ["[::]:717", "0.0.0.0:717"],
            "remote_ip_ranges": everywhere,
            "auth_mechanism": ["Tls", "BasicAuth", "BasicAuthRequireTLS", "ExchangeServer", "Integrated"],
            "permission_groups": ["ExchangeServers"],
            "size_enabled": "Enabled",
            "max_inbound_connection_percentage_per_source": 2,
        },
        {
            "name": f"Default {server}",
            "transport_role": "HubTransport",
            "usage": "Internal",
            "bindings": ["[::]:2525", "0.0.0.0:2525"],
            "remote_ip_ranges": everywhere,
            "auth_mechanism": ["Tls", "BasicAuth", "ExchangeServer", "Integrated"],
            "permission_groups": ["ExchangeServers", "ExchangeLegacyServers", "ExchangeUsers"],
            "max_recipients_per_message": 5000,
            "max_inbound_connection_per_source": "unlimited",
            "max_inbound_connection_percentage_per_source": 100,
            "size_enabled": "EnabledWithoutValue",
        },
        {
            "name": f"Client Proxy {server}",
            "transport_role": "HubTransport",
            "usage": "Client",
            "bindings": ["[::]:465", "0.0.0.0:465"],
            "remote_ip_ranges": everywhere,
            "auth_mechanism": ["Tls", "BasicAuth", "BasicAuthRequireTLS", "ExchangeServer", "Integrated"],
            "permission_groups": ["ExchangeServers", "ExchangeUsers"],
            "message_rate_limit": 5,
            "message_rate_source": "User",
        },
    ]
