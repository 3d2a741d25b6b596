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
