"""The Postfix policy daemon: sans-I/O framing, pure decisions, and the Twisted service.

``protocol`` frames bytes, ``decide`` turns one request into an access(5) action with the
engine, ``service`` wires both to sockets, signals, reloads and metrics.
"""
