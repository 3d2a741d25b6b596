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
