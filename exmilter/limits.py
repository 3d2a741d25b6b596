"""exmilter's own bounds on input and work, named in one place; Exchange's defaults are in defaults.py."""

# -- the policy daemon (exmilter.policy; docs/policyd.md, "Limits") -------------------------------------
# What one Postfix policy connection may cost the daemon. The ``policyd:`` settings an admin may
# change have their defaults here (exmilter.model.PolicydSettings refers to them); the others are
# fixed. ``max_connections: auto`` is computed in exmilter.policy.limits.

#: ``policyd.max_line_length``: longest attribute line of a request, in bytes, enforced while
#: bytes arrive. Postfix's longest attribute is an address (RFC 5321: 256) or a certificate
#: subject; 4 KiB holds any of them and bounds what an unfinished line can buffer.
POLICY_MAX_LINE_LENGTH = 4096

#: ``policyd.max_attributes``: lines in one request. Postfix 3.12 sends 32 names.
POLICY_MAX_ATTRIBUTES = 64

#: ``policyd.request_timeout``: seconds from a request's first byte to its last. Postfix sends
#: a request in one write and gives up itself after ``smtpd_policy_service_timeout`` (5 s as
#: rendered): twice that closes a slow drip without ever cutting Postfix off.
POLICY_REQUEST_TIMEOUT = 10

#: ``policyd.idle_timeout``: seconds without an answered request. Above Postfix's
#: ``smtpd_policy_service_max_ttl`` (1000 s), so Postfix is the side that closes an idle
#: connection (docs/policyd.md, "Why these values").
POLICY_IDLE_TIMEOUT = 1200

#: Requests answered per connection per reactor turn. Postfix sends one request and waits for
#: its answer, so only a non-Postfix client pipelines more; after this many, reading from that
#: connection pauses until the next turn, after every other ready connection ran. 32 decisions
#: are about a millisecond (docs/performance.md).
POLICY_MAX_REQUESTS_PER_TURN = 32

#: Unsent answers that pause reading from a connection: Twisted's write buffer per connection
#: (``FileDescriptor.bufferSize``, 64 KiB). Postfix reads every answer before it writes the next
#: request, so its connections never come near it. Documented here; Twisted applies it when the
#: protocol is registered as its transport's streaming producer (tests check the two agree).
POLICY_OUTPUT_BUFFER = 64 * 1024

#: File descriptors kept free for everything that is not a policy connection (listeners, the
#: metrics endpoint and its scrapes, the configuration file on reload, logs, the reactor).
POLICY_FD_RESERVE = 64

#: ``max_connections: auto`` admits the rendered maxproc total plus this much room: a
#: connection Postfix has closed may still be open here when its replacement arrives.
POLICY_HEADROOM_PERCENT = 10
#: ... and at least this many connections of room, for small totals.
POLICY_HEADROOM_MIN = 10

#: At most one log line per this many seconds about refused connections (each is counted in
#: ``exmilter_policy_refused_connections_total``); the line says how many were refused.
POLICY_REFUSAL_LOG_INTERVAL = 10.0

# The decider's memory (exmilter.policy.decide; postfix-notes §1.5). It remembers per
# transaction (one ``instance``) the recipients accepted and the answers given, so a re-sent
# request gets the same answer without counting twice. A transaction lasts one message and each
# request refreshes it, so the TTL only has to outlast the longest pause *inside* one:
# smtpd_timeout (300 s) between two client commands, or a re-send, which comes within
# try_limit × smtpd_policy_service_timeout + retry_delay (the rendered 2 × 5 s + 1 s; 201 s at
# Postfix's defaults). After 600 s smtpd has long dropped the client and
# smtpd_policy_service_max_idle (300 s) has closed the policy connection.

#: Transactions remembered, least recently used forgotten first. One transaction per smtpd
#: process is in flight, so this is far above those in progress even with thousands of smtpd
#: processes. ~0.75 KB each: at most ~8 MB (100,000 kept for an hour grew the daemon by 70+ MB).
POLICY_MAX_TRANSACTIONS = 10_000
#: Seconds a transaction is remembered after its last request.
POLICY_TRANSACTION_TTL = 600.0
#: Answers remembered per transaction; Postfix's smtpd_recipient_limit is 1000.
POLICY_MAX_ANSWERS = 4096
#: Seconds within which a MAIL with the same client, port, sender and size on another policy
#: connection is a re-send (MAIL carries no ``instance``; docs/policyd.md).
POLICY_MAIL_WINDOW = 30.0
#: Sessions cached per configuration generation (one per listener, client, login, TLS, HELO);
#: the cache is emptied when full. Opening a session is the costly part of a decision.
POLICY_MAX_SESSIONS = 4096
#: Distinct ``policy_context`` values remembered parsed; the renderer writes one per listener.
POLICY_MAX_CONTEXTS = 1024
#: Pre-rendered answers kept; their number is bounded by the configuration (reply × connector
#: × stage), this only guards against a configuration with very many connectors.
POLICY_MAX_DECISIONS = 10_000

# -- logs (exmilter.logs) -------------------------------------------------------------------------------

#: Longest value a peer chose (address, HELO, note) written to a log line, in characters before
#: escaping. An address is at most 254 characters (RFC 5321 path); longer values are cut and the
#: cut is counted in the line.
LOG_VALUE_MAX = 256
#: Longest note (why a request could not be decided) written to a decision line.
LOG_NOTE_MAX = 400
