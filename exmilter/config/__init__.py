"""Load the YAML configuration into an :class:`~exmilter.model.Organization`, with located errors.

Every problem is reported as ``file:line:col: key: problem``, all of them before anything
is raised, and a bad value does not stop the other checks. Whatever the input,
:func:`load` and :func:`loads` raise nothing but :class:`ConfigError`.

The stages, one module each:

* :mod:`~exmilter.config.reader`: text → a compact tree of values with their positions
  (characters YAML refuses, nesting and aliases bounded; receive connectors streamed);
* :mod:`~exmilter.config.fields`: one value → its typed value (Exchange's syntax), and the
  public field API the importer uses;
* :mod:`~exmilter.config.sections` (server, accepted domains, users, policyd) and
  :mod:`~exmilter.config.connectors` (receive connectors, merged with Exchange's defaults):
  one builder per section;
* :mod:`~exmilter.config.validation`: Exchange's refusal rules (spec §2.3, §6), with the
  conflicts between connectors in :mod:`~exmilter.config.conflicts` and the open-relay
  warnings in :mod:`~exmilter.config.relays`;
* :mod:`~exmilter.config.loader`: the whole, :func:`load` and :func:`loads`.

A new section is one more builder (its value as read and the collector in, typed values
out, every problem reported), called from the loader with its key added to ``TOP_KEYS``.
The loader's bounds are in :mod:`exmilter.limits`.
"""

from exmilter.config.auth import EXMILTER_ONLY
from exmilter.config.fields import (
    CONNECTOR_FIELDS,
    CONNECTOR_KEYS,
    parse_connector_property,
    parse_domain_name,
    parse_fqdn,
)
from exmilter.config.loader import DEFAULT_PATH, TOP_KEYS, Loaded, load, loads
from exmilter.config.problems import ConfigError, Problem
from exmilter.config.relays import OPEN_RELAY, OpenRelay, open_relays

__all__ = [
    "CONNECTOR_FIELDS",
    "CONNECTOR_KEYS",
    "DEFAULT_PATH",
    "EXMILTER_ONLY",
    "OPEN_RELAY",
    "TOP_KEYS",
    "ConfigError",
    "Loaded",
    "OpenRelay",
    "Problem",
    "load",
    "loads",
    "open_relays",
    "parse_connector_property",
    "parse_domain_name",
    "parse_fqdn",
]
