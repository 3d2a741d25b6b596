"""Log events as typed values (``events``) and the edge that writes them.

``levels`` says how serious each event is, ``escape`` makes text a peer chose safe for a
line, ``text`` formats each event as the daemons' text line, and ``twistedlog`` carries
events over twisted.logger to the policy daemon's stderr observer. Events are formatted
only by sinks, so other formats (JSON, syslog, Exchange's logs) work from the same values.
"""
