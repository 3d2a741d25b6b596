"""Exchange 2016/2019 SMTP replies as values (spec §3).

Every reply exmilter can give is a constant here; call sites pick one, they never build
reply text. ``close`` marks replies after which Exchange drops the connection;
``protocol_error`` marks replies that count toward MaxProtocolErrors.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str
    text: str
    close: bool = False
    protocol_error: bool = False

    @functools.cached_property
    def line(self) -> str:
        """The reply exactly as it appears on the wire (built once: replies are constants, and
        the policy daemon and the logs ask for it per request)."""
        return f"{self.code} {self.enhanced} {self.text}" if self.enhanced else f"{self.code} {self.text}"

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 400

    def __str__(self) -> str:
        return self.line


# --- connection (§3.1) -------------------------------------------------------------
NO_CONNECTOR = Reply(421, "4.3.2", "Service not available", close=True)

# --- not Exchange's: Postfix's own default_action text (postfix-notes §1.5) -----------
#: The temporary failure for anything exmilter cannot decide: a request it cannot place, a
#: daemon that is down or slow (render-postfix makes it Postfix's default_action). Fail closed.
CONFIGURATION_PROBLEM = Reply(451, "4.3.5", "Server configuration problem")
#: A MAIL whose shared MessageRateLimit window (Redis, issue #17) could not be counted in
#: time: a temporary failure, never an uncounted accept (Exchange's text for a transient fault).
RATE_WINDOW_UNAVAILABLE = Reply(451, "4.4.3", "Temporary server error. Please try again later")

# --- MAIL FROM (§3.4) -----------------------------------------------------------------
INVALID_SENDER = Reply(501, "5.1.7", "Invalid address", protocol_error=True)
SEND_HELLO_FIRST = Reply(503, "5.5.2", "Send hello first", protocol_error=True)
# Exchange sends "451 5.7.3"; Postfix refuses mixed classes, so the class follows the code (§3.13).
STARTTLS_REQUIRED = Reply(451, "4.7.3", "STARTTLS is required to send mail", close=True, protocol_error=True)
MESSAGE_RATE_EXCEEDED = Reply(
    421, "4.4.2", "Message submission rate for this client has exceeded the configured limit", close=True
)
ANONYMOUS_SUBMIT_DENIED = Reply(
    530,
    "5.7.57",
    "SMTP; Client was not authenticated to send anonymous mail during MAIL FROM",
    close=True,
    protocol_error=True,
)
SUBMIT_DENIED = Reply(
    550, "5.7.1", "Client does not have permissions to submit to this server", close=True, protocol_error=True
)
MESSAGE_SIZE_EXCEEDED_MAIL = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size", protocol_error=True)
SENDER_OK = Reply(250, "2.1.0", "Sender OK")

# --- RCPT TO (§3.5) -------------------------------------------------------------------
INVALID_RECIPIENT = Reply(501, "5.1.3", "Invalid address", protocol_error=True)
LONG_ADDRESS = Reply(501, "5.1.3", "Long addresses not supported", protocol_error=True)
UTF8_ADDRESS = Reply(501, "5.1.8", "UTF-8 addresses not supported", protocol_error=True)
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
RESERVED_TLD = Reply(501, "5.1.4", "Recipient address reserved by RFC 2606")
RESERVED_SLD = Reply(501, "5.1.5", "Recipient address reserved by RFC 2606")
SINGLE_LABEL_DOMAIN = Reply(501, "5.1.6", "Recipient addresses in single label domains not accepted")
UNABLE_TO_RELAY = Reply(550, "5.7.54", "SMTP; Unable to relay recipient in non-accepted domain")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")

# --- DATA and end of data (§3.6, §3.7) ------------------------------------------------
NEED_RCPT = Reply(503, "5.5.2", "Need rcpt command")
START_MAIL_INPUT = Reply(354, "", "Start mail input; end with <CRLF>.<CRLF>")
HEADER_SIZE_EXCEEDED = Reply(552, "5.3.4", "Header size exceeds fixed maximum size")
HOP_COUNT_EXCEEDED = Reply(554, "5.4.6", "Hop count exceeded - possible mail loop")
MESSAGE_PARTIAL = Reply(554, "5.6.1", "Messages of type message/partial are not supported")
BARE_LINEFEEDS = Reply(554, "5.6.0", "Invalid message content, contains bare linefeeds")
MESSAGE_SIZE_EXCEEDED = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
SEND_AS_DENIED = Reply(550, "5.7.60", "SMTP; Client does not have permissions to send as this sender")
ANONYMOUS_SEND_AS_DENIED = Reply(550, "5.7.1", "Anonymous client does not have permissions to send as this sender")
SEND_ON_BEHALF_DENIED = Reply(550, "5.7.1", "Client does not have permissions to send on behalf of the from address")
QUEUED = Reply(250, "2.6.0", "Queued mail for delivery")

# --- routing (send connectors, docs/send-connectors.md) ---------------------------------
#: Exchange's NDR for a message larger than its route's MaxMessageSize (the categorizer's, after DATA).
ROUTE_SIZE_EXCEEDED = Reply(550, "5.3.4", "ROUTING.SizeLimit; message size exceeds fixed maximum size for route")
