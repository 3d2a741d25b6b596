"""What Exchange would do with one client: the connector, the rights, the reply per stage.

Shared by ``exmilter explain`` and the tests; the result is a plain dict so it prints
as JSON unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from exmilter.engine import Engine
from exmilter.model import Organization
from exmilter.routing import Router


def explain(
    org: Organization,
    *,
    client_ip: str,
    server_ip: str | None = None,
    port: int = 25,
    helo: str | None = "explain.invalid",
    mail_from: str | None = None,
    rcpt_to: Sequence[str] = (),
    auth: str | None = None,
    tls: bool = False,
    size: int | None = None,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Walk one SMTP transaction through the engine, stopping where Exchange would."""
    engine = engine or Engine(org)
    session = engine.open_session(server_ip, port, client_ip, auth_user=auth, tls=tls, helo=helo)
    chosen = session.match
    result: dict[str, Any] = {
        "client_ip": client_ip,
        "server_ip": server_ip,
        "port": port,
        "connector": chosen.connector.identity if chosen else None,
        "binding": str(chosen.binding) if chosen else None,
        "range": str(chosen.range) if chosen else None,
        "range_size": chosen.range.size if chosen else None,
        "candidates": [
            {
                "connector": m.connector.identity,
                "binding": str(m.binding),
                "range": str(m.range),
                "range_size": m.range.size,
                "chosen": chosen is not None and m.connector is chosen.connector and m.binding == chosen.binding,
            }
            for m in engine.table.candidates(server_ip, port, client_ip)
        ],
        "principal": session.principal.name,
        "authenticated": session.authenticated,
        "permissions": session.rights.tokens(),
        "notes": [],
        "replies": [],
    }
    if session.ignored_login:
        result["notes"].append(f"login {auth!r} not trusted, the session is anonymous: {session.ignored_login}")
    if session.connector is not None and (note := engine.default_domain_note(session.connector)):
        result["notes"].append(f"DefaultDomain not applied, unqualified addresses are refused: {note}")
    replies: list[dict[str, Any]] = result["replies"]

    def add(stage: str, reply: Any, **extra: Any) -> bool:
        replies.append({"stage": stage, "reply": reply.line, "code": reply.code, **extra})
        return not reply.close

    if not add("CONNECT", engine.connect(session)) or session.connector is None:
        return result
    if mail_from is None:
        return result
    mail = engine.mail(session, mail_from, size=size or 0)
    if not add("MAIL", mail) or not mail.accepted:
        return result
    accepted = 0
    # outbound routing is exmilter's only with send connectors or a mailbox next hop; else Postfix's own
    router = Router(org) if org.send_connectors or org.mailbox_next_hop else None
    for rcpt in rcpt_to:
        reply = engine.rcpt(session, rcpt, accepted=accepted)
        routed = engine.qualify(session.connector, rcpt, rcpt=True)
        # where an accepted recipient goes next (send connectors, docs/send-connectors.md)
        route: dict[str, Any] = {}
        if router is not None and reply.accepted:
            where = router.route(routed)
            route = {"route": where.as_dict()}
            if size and (too_big := where.size_refusal(size)) is not None:
                route["route"]["size_refusal"] = too_big.line
        if not add("RCPT", reply, recipient=rcpt, **({"routed": routed} if routed != rcpt else {}), **route):
            return result
        accepted += reply.accepted
    if rcpt_to:
        data = engine.data(session, accepted=accepted)
        if data.accepted:
            data = engine.end_of_data(session, size=size or 0, mail_from=mail_from)
        add("DATA", data)
    return result


def format_text(result: dict[str, Any]) -> str:
    """The human-readable form of :func:`explain`'s result."""
    where = f"{result['server_ip'] or '*'}:{result['port']}"
    lines = [f"Client {result['client_ip']} -> {where}"]
    if result["candidates"]:
        lines.append("Candidate connectors (smallest matching range of each):")
        for c in result["candidates"]:
            mark = "*" if c["chosen"] else " "
            lines.append(
                f" {mark} {c['connector']:<40} binding {c['binding']:<16} "
                f"range {c['range']} ({c['range_size']:,} addresses)"
            )
    else:
        lines.append("No connector has a binding and remote range for this client.")
    if result["connector"]:
        lines.append(
            f"Connector: {result['connector']} (range {result['range']}, size {result['range_size']:,}; "
            "the most specific range wins, an exact binding wins ties)"
        )
        lines.append(
            f"Principal: {result['principal']} ({'authenticated' if result['authenticated'] else 'anonymous'})"
        )
        lines.append(f"Session permissions: {result['permissions'] or '(none)'}")
    else:
        lines.append("Connector: none")
    lines += [f"Note: {n}" for n in result.get("notes", ())]
    for r in result["replies"]:
        extra = f" [{r['recipient']}]" if "recipient" in r else ""
        if "routed" in r:  # as Postfix will route it: completed, unquoted, source route dropped
            extra = f" [{r['recipient']} -> {r['routed']}]"
        lines.append(f"{r['stage']:<8}{extra} {r['reply']}")
        if "route" in r:
            lines.append(f"{'':<8} route: {route_text(r['route'])}")
    return "\n".join(lines)


def route_text(route: dict[str, Any]) -> str:
    """One recipient's route on one line: connector (or mailboxes), next hop, TLS requirement."""
    if route["kind"] == "mailbox":
        where = f"the mailboxes (accepted domain {route['accepted_domain']}, {route['accepted_domain_type']})"
    elif route["kind"] == "connector":
        where = f"send connector {route['connector']} ({route['address_space']})"
    else:
        where = "no send connector matches: the message is held and retried (Exchange's Unreachable queue)"
    text = f"{where}; next hop {route['next_hop']}; TLS {route['tls']}"
    if route.get("size_refusal"):
        text += f"; too large for the route: {route['size_refusal']}"
    return text
