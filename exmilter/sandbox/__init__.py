"""The whole stack on loopback (``exmilter sandbox``, docs/sandbox.md).

- :mod:`~exmilter.sandbox.stack`: :class:`Sandbox`, starting, reloading and stopping it all;
- :mod:`~exmilter.sandbox.instance`: the private Postfix instance (and ``postfix check``
  of rendered text, :func:`check_rendered`);
- :mod:`~exmilter.sandbox.supervisor`: the daemons as supervised child processes;
- :mod:`~exmilter.sandbox.delivery` installs the delivery agent,
  :mod:`~exmilter.sandbox.deliver`, which files every accepted message away;
- :mod:`~exmilter.sandbox.ports`: loopback ports.
"""

from exmilter.sandbox.deliver import Delivery, read_deliveries
from exmilter.sandbox.instance import PostfixError, PostfixInstance, check_rendered
from exmilter.sandbox.ports import HOST, free_port, port_free
from exmilter.sandbox.stack import (
    DEFAULT_OFFSET,
    DEFAULT_STATE,
    Sandbox,
    SandboxError,
    SandboxListener,
    describe_load_failure,
)
from exmilter.sandbox.supervisor import RestartPolicy, State

__all__ = [
    "DEFAULT_OFFSET",
    "DEFAULT_STATE",
    "HOST",
    "Delivery",
    "PostfixError",
    "PostfixInstance",
    "RestartPolicy",
    "Sandbox",
    "SandboxError",
    "SandboxListener",
    "State",
    "check_rendered",
    "describe_load_failure",
    "free_port",
    "port_free",
    "read_deliveries",
]
