"""The cmdlets that change the model, one handler per cmdlet, registered in :data:`HANDLERS`.

A handler takes the command being applied (:class:`.command.Command`) and its bound
arguments, pops what it reads, changes the model in place and returns the objects it passes
down the pipeline; :class:`~exmilter.importer.evaluator.Refused` refuses the command (the
caller restores the model). Values are judged by the configuration's own field parsers
(:func:`exmilter.config.parse_connector_property`, :func:`~exmilter.config.parse_domain_name`),
so there is one definition of what is valid. One module per cmdlet family.
"""

from __future__ import annotations

from exmilter.importer.cmdlets import accepted_domains, ad_permissions, receive_connectors, send_connectors
from exmilter.importer.cmdlets.command import Handler
from exmilter.importer.parameters import FOREACH, READ_ONLY_ALIASES, READ_ONLY_VERBS

#: Lower-case cmdlet name → its handler: every cmdlet that changes what exmilter models.
HANDLERS: dict[str, Handler] = {
    "new-receiveconnector": receive_connectors.new_receive_connector,
    "set-receiveconnector": receive_connectors.set_receive_connector,
    "remove-receiveconnector": receive_connectors.remove_receive_connector,
    "add-adpermission": ad_permissions.add_ad_permission,
    "remove-adpermission": ad_permissions.remove_ad_permission,
    "new-accepteddomain": accepted_domains.new_accepted_domain,
    "set-accepteddomain": accepted_domains.set_accepted_domain,
    "remove-accepteddomain": accepted_domains.remove_accepted_domain,
    "new-sendconnector": send_connectors.new_send_connector,
    "set-sendconnector": send_connectors.set_send_connector,
    "remove-sendconnector": send_connectors.remove_send_connector,
}


def cmdlet_kind(name: str) -> str:
    """``handler`` (in :data:`HANDLERS`), ``read`` (no side effect) or ``other``."""
    low = name.lower()
    if low in HANDLERS:
        return "handler"
    verb = low.split("-", 1)[0]
    if low in READ_ONLY_ALIASES or low in FOREACH or verb in READ_ONLY_VERBS or low.startswith("add-pssnapin"):
        return "read"
    return "other"
