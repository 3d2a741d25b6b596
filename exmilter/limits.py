"""exmilter's own bounds on input and work, named in one place; Exchange's defaults are in defaults.py."""

# -- rendered Postfix (exmilter.postfix; docs/render-postfix.md, "Fail-closed") -----------------------
# How long Postfix waits for the policy daemon before it answers the client with the default
# action (a temporary 451 4.3.5): a dead daemon costs a client about the retry delay, a hung
# one at most try limit × timeout, and neither ever opens relay.

#: Seconds Postfix waits for one answer (``timeout=`` of each check_policy_service); the
#: daemon answers in well under a millisecond, so only a hung daemon reaches it.
POSTFIX_POLICY_TIMEOUT = 5
#: Attempts per request (``try_limit=``): one more after a daemon restart closed the connection.
POSTFIX_POLICY_TRY_LIMIT = 2
#: Seconds between the attempts (``retry_delay=``): about the supervisor's restart delay.
POSTFIX_POLICY_RETRY_DELAY = 1
#: Most smtpd processes (``maxproc``) one rendered listener runs unless ``render-postfix
#: --process-limit`` says otherwise: Postfix's own ``default_process_limit``, what a host sized
#: for Postfix runs (Exchange's MaxInboundConnection sizes Exchange's threads, not processes).
POSTFIX_PROCESS_LIMIT = 100

# -- configuration loader (exmilter/config/) ---------------------------------------------------------
# What one file may ask of the loader: any file loads or is refused within seconds, and a daemon
# that reloads it cannot exhaust its stack, memory or time. Each is reported at the value that
# crosses it (docs/configuration.md, "Limits").

#: Bytes read from a file; a 10,000-connector file is under 4 MB.
CONFIG_MAX_FILE_BYTES = 64 << 20
#: Nesting of lists and mappings; a configuration needs 6 levels. Deeper input is refused
#: before the tree is built (the reader recurses once per level).
CONFIG_MAX_DEPTH = 64
#: Nodes that aliases may add to the document when expanded (``*a`` counts every node of
#: ``&a``, nested aliases included). Bounds "billion laughs" before any list is flattened.
CONFIG_MAX_ALIAS_EXPANSION = 250_000
#: Items of one list value once nested lists, aliases and the comma form are flattened.
CONFIG_MAX_LIST_ITEMS = 10_000
#: Characters YAML cannot read that are reported one by one; the rest are counted.
CONFIG_MAX_CHARACTER_PROBLEMS = 20
#: ``remote_ip_ranges`` entries of one connector above which the file is refused. Exchange
#: fails at about 1,200–1,300 entries (spec §1.2; the warning above 1,200 is
#: ``exmilter.config.validation.MAX_RANGE_ENTRIES``), so no file that works on Exchange is
#: refused, and none that certainly fails there is accepted. It also bounds what one
#: connector adds to every check and to lookups.
CONFIG_MAX_RANGE_ENTRIES_REFUSED = 1300
#: (binding, range) registrations in all: every range counts once on every binding of its
#: family (spec §2.1 step 1). Bounds the conflict checks and the lookup tables, which a
#: short file could otherwise multiply (1,000 bindings × 1,300 ranges on each connector).
CONFIG_MAX_REGISTRATIONS = 500_000
#: Conflicting connector pairs reported one by one; one more line says there are more.
#: n connectors with one shared range conflict pairwise: n² lines from an n-line file.
CONFIG_MAX_CONFLICT_REPORTS = 1000

# --- import-exchange (exmilter.importer) --------------------------------------------------
# Every pass of one import is bounded in time and memory. A limit on one line, statement or
# value refuses just that (a located warning, like any command Exchange would refuse). A
# limit on the whole input stops the import: nothing is written, since the part not read
# could have taken back what the first part granted. docs/import-exchange.md ("Limits")
# lists them for admins.

#: Characters of all input files together (a ``Get-ADPermission | Format-List`` of 100
#: connectors is about 3 MB). Whole input: the import stops.
IMPORT_MAX_INPUT_CHARS = 16_000_000
#: Bytes read of one input file: UTF-8 takes at most 4 bytes a character (and a byte order
#: mark), so a file with more holds more than :data:`IMPORT_MAX_INPUT_CHARS` characters and
#: is refused without being read whole.
IMPORT_MAX_INPUT_BYTES = 4 * IMPORT_MAX_INPUT_CHARS + 4
#: Lines of all input files together (that dump has about 60,000). Whole input: the import
#: stops.
IMPORT_MAX_LINES = 1_000_000
#: PowerShell tokens (words, strings, operators…) of all input files together; a runbook of
#: 10,000 commands has about 200,000. Reading costs about 15 µs and 150 bytes a token.
#: Whole input: the import stops.
IMPORT_MAX_TOKENS = 1_000_000
#: Characters of one line; 1,300 ``RemoteIPRanges`` on one line take under 40,000. The line
#: is not read (its statement or ``Format-List`` object is refused).
IMPORT_MAX_LINE_CHARS = 65_536
#: Brackets ``(…)``, ``@(…)``, ``{…}``, ``@{…}`` open at once; runbooks use 3 or 4. The
#: statement is refused. (``$(…)`` is kept as text, never nested into.)
IMPORT_MAX_NESTING = 32
#: Items of one value once variables are expanded (``$a = $a,$a`` doubles); Exchange refuses
#: more than about 1,200 ``RemoteIPRanges``. The value is unknown (refused where used).
IMPORT_MAX_VALUE_ITEMS = 5_000
#: Characters of one value, all its items together, once variables are expanded
#: (``"$s$s"`` doubles). The value is unknown (refused where used).
IMPORT_MAX_VALUE_CHARS = 100_000
#: Items of one multi-valued property of a connector (``RemoteIPRanges``, ``Bindings``…)
#: after ``@{Add=…}``: Exchange fails at about 1,200–1,300 range entries (spec §6 #13). The
#: command is refused, as Exchange would fail it.
IMPORT_MAX_PROPERTY_ITEMS = 1_300
#: Characters of one message; a message quotes the input (a line may be 65,536), the rest
#: is cut.
IMPORT_MAX_NOTE_CHARS = 1_000
#: Commands named in the comment above an entry of the written file; the rest are counted.
IMPORT_MAX_ORIGINS_SHOWN = 20
#: Statements and ``Format-List`` objects, counted once as they are read and once per run
#: (a script block's once per object piped into it: ``Get-ReceiveConnector | % { … }``
#: nested). Whole input: the import stops.
IMPORT_MAX_COMMANDS = 10_000
#: Commands that change the model: each is checked by loading the whole model, as
#: ``exmilter check`` would (about 3 ms each on a small model, most of it the loader). A
#: permission dump of 20 connectors is about 600. Whole input: the import stops.
IMPORT_MAX_CHECKS = 5_000
#: Characters of the configurations checked, summed over those checks (about 3 µs a
#: character): bounds many commands on a large model. Whole input: the import stops.
IMPORT_MAX_CHECKED_CHARS = 10_000_000

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
#: SMTP sessions (listener, client address and port) whose connector is remembered, so that
#: a reload never moves a session to another connector (spec §2.1 step 6), and seconds one is
#: kept after its last request: above Postfix's idle limit between two commands of a session.
POLICY_MAX_PINNED_SESSIONS = 20_000
POLICY_PIN_TTL = 3600.0
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

# -- Exchange-format log files (exmilter.logs.w3c; docs/logs.md) -------------------------------------------

#: Exchange's defaults for the SMTP receive protocol log (spec §5.1): per file, per directory, age.
PROTOCOL_LOG_MAX_FILE = 10 << 20
PROTOCOL_LOG_MAX_DIRECTORY = 250 << 20
PROTOCOL_LOG_MAX_AGE_DAYS = 30
#: Exchange's defaults for the message tracking log (spec §5.2).
TRACKING_LOG_MAX_FILE = 10 << 20
TRACKING_LOG_MAX_DIRECTORY = 1000 << 20
TRACKING_LOG_MAX_AGE_DAYS = 30
#: Lines waiting for the writer thread; beyond it a line is dropped and counted, never waited for,
#: so a slow or full disk cannot hold up a mail transaction.
LOG_QUEUE_MAX = 100_000
#: Bytes of rows one ``write`` call carries at most (rows of one drain go out together).
LOG_WRITE_CHUNK = 256 << 10
#: Longest data field of a protocol-log row, in characters (a peer's command line is at most
#: Postfix's line_length_limit, 2048; a multi-line reply joined by spaces stays below this).
PROTOCOL_LOG_DATA_MAX = 4096
#: Distinct reply lines whose protocol-log field is kept formatted (the engine's replies are
#: constants: a few dozen; the bound only guards against a configuration's custom texts).
PROTOCOL_LOG_REPLY_CACHE = 1024
#: Sessions a replay keeps open while waiting for their remaining rows (sessions across
#: hourly files); beyond it the oldest are judged with what was read.
REPLAY_MAX_OPEN_SESSIONS = 100_000
#: Differing sessions a replay keeps per (client, connector) to show; the rest are counted.
REPLAY_MAX_SESSIONS_PER_GROUP = 100

# -- A pool of servers (issue #17; docs/cluster.md) -------------------------------------------------
#: Postfix's smtpd_upstream_proxy_timeout default: how long a listener behind HAProxy waits for the header.
PROXY_TIMEOUT = 5
#: Longest wait for the shared MessageRateLimit window's answer to one MAIL (milliseconds).
REDIS_TIMEOUT_MS = 250
#: Bounds on that wait: below Postfix's policy timeout, so the MAIL gets exmilter's 451, not Postfix's.
REDIS_TIMEOUT_MS_MIN, REDIS_TIMEOUT_MS_MAX = 10, 2000

# -- the milter (exmilter.milter; docs/milter.md) ---------------------------------------------------------
#: Headers one message may have for the milter to keep them (the firewall must see every one
#: it removes): more is refused as a header block over its size (spec §3.6 #1). Postfix's
#: header_size_limit (100 KB per header) and the connectors' MaxHeaderSize stop far earlier.
MILTER_MAX_HEADERS = 10_000
#: Recipients one message's RECEIVE tracking row names (the message keeps all of them).
MILTER_MAX_TRACKED_RECIPIENTS = 5_000
#: Seconds Postfix waits for the milter per command and at connect (milter_command_timeout,
#: milter_connect_timeout); beyond it Postfix applies milter_default_action (tempfail).
POSTFIX_MILTER_COMMAND_TIMEOUT = 30
#: Seconds Postfix waits for the milter at end of headers/body (milter_content_timeout).
POSTFIX_MILTER_CONTENT_TIMEOUT = 300
#: libmilter's own timeout on a silent MTA (Milter.runmilter's timeout), seconds.
MILTER_SOCKET_TIMEOUT = 600
#: Bound and lifetime of the policy daemon's set of sessions the milter covers (exmilter.policy.coverage):
#: longer than the longest session (ConnectionTimeout tops at 1 day), enough for every smtpd.
COVERAGE_MAX_SESSIONS = 100_000
COVERAGE_TTL = 86_400.0 + 600.0
#: Datagrams the policy daemon reads from its coverage socket per drain (bounded work per request).
COVERAGE_MAX_DRAIN = 4096

# -- systemd drop-ins (render-postfix --apply, exmilter/postfix/dropins.py) ----------------------

#: The units' static ``LimitNOFILE`` (systemd/exmilter-policyd.service, exmilter-milter.service):
#: what a daemon gets before ``render-postfix --apply`` sized it, and the least the drop-ins
#: write, so they only ever raise it. At the default --process-limit it covers 590 listeners.
UNIT_LIMIT_NOFILE = 65536
