"""exmilter: Exchange receive-connector semantics for Postfix."""

__version__ = "0.1.0"
