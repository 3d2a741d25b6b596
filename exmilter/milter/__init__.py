"""The milter front end (``exmilter milter``): Postfix's macros and message in, the engine's
verdicts out, verbatim on the wire (docs/milter.md).

``macros`` and ``session`` are pure (no pymilter), so every rule is tested without an MTA;
``callbacks`` is the thin pymilter layer and the only place that calls ``setreply``;
``daemon`` runs it (one process, libmilter's threads), ``coverage`` tells the policy daemon
which sessions the milter judges.
"""
