"""What Exchange would do with one client: the connector, the rights, the reply per stage.

Shared by ``exmilter explain`` and the tests; the result is a plain dict so it prints
as JSON unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from exmilter.engine import Engine
from exmilter.model import Organization


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
    for rcpt in rcpt_to:
        reply = engine.rcpt(session, rcpt, accepted=accepted)
        routed = engine.qualify(session.connector, rcpt, rcpt=True)
        if not add("RCPT", reply, recipient=rcpt, **({"routed": routed} if routed != rcpt else {})):
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
    return "\n".join(lines)
