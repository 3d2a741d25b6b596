"""The Postfix policy daemon on Twisted.

``protocol`` frames bytes (sans-I/O), ``decide`` turns one request into an access(5) action
with the engine (pure), ``connection`` is one Postfix connection on Twisted and ``factory``
admits them up to the cap computed in ``limits``; ``reload`` holds the generation in use and
reloads it off the reactor thread, ``service`` has the listeners and SIGHUP, ``metrics`` the
daemon's Prometheus metrics, and ``daemon`` assembles and runs it all.
"""
