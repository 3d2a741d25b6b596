"""``New-``, ``Set-`` and ``Remove-AcceptedDomain``, judged by :func:`exmilter.config.parse_domain_name`."""

from __future__ import annotations

from exmilter import config
from exmilter.importer.cmdlets.command import Command, leftovers, switch_arg, text_arg
from exmilter.importer.evaluator import Args, Obj, Refused
from exmilter.importer.state import ASSUMED_DOMAIN, Domain
from exmilter.model import AcceptedDomainType


def new_accepted_domain(cmd: Command, args: Args) -> list[Obj]:
    name = text_arg(args, "name")
    dn = text_arg(args, "domainname", required=True)
    spec = {"name": name or dn, "domain_name": domain_name(dn)}
    existing = cmd.state.domain(spec["domain_name"])
    if existing is not None and existing.origins == [ASSUMED_DOMAIN]:
        cmd.state.domains.remove(existing)
    elif existing is not None or cmd.state.domain(spec["name"]) is not None:
        raise Refused(f"accepted domain '{spec['name']}' ({spec['domain_name']}) already exists")
    d = Domain(spec, [cmd.where])
    cmd.state.domains.append(d)
    domain_properties(cmd, d, args)
    return [Obj("domain", str(spec["name"]))]


def set_accepted_domain(cmd: Command, args: Args) -> list[Obj]:
    ident = text_arg(args, "identity", required=True)
    d = cmd.state.domain(ident)
    if d is None:
        raise Refused(f"no accepted domain '{ident}'")
    if "name" in args:
        d.spec["name"] = text_arg(args, "name")
    domain_properties(cmd, d, args)
    d.origins.append(cmd.where)
    return [Obj("domain", str(d.spec["name"]))]


def remove_accepted_domain(cmd: Command, args: Args) -> list[Obj]:
    ident = text_arg(args, "identity", required=True)
    d = cmd.state.domain(ident)
    if d is None:
        raise Refused(f"no accepted domain '{ident}'")
    leftovers(cmd, args)
    cmd.state.domains.remove(d)
    return []


def domain_name(text: str) -> str:
    """``-DomainName`` as the loader stores it."""
    try:
        return config.parse_domain_name(text)
    except ValueError as e:
        raise Refused(f"-DomainName: {e}") from None


_DOMAIN_TYPES = {t.value.lower(): t.value for t in AcceptedDomainType}
_DOMAIN_TYPE_NAMES = [t.value for t in AcceptedDomainType]


def domain_properties(cmd: Command, d: Domain, args: Args) -> None:
    """Check and store the accepted-domain arguments on ``d``; a bad value refuses the command."""
    if "domainname" in args:
        d.spec["domain_name"] = domain_name(text_arg(args, "domainname"))
    if "domaintype" in args:
        t = text_arg(args, "domaintype")
        canon = _DOMAIN_TYPES.get(t.lower())
        if canon is None:
            raise Refused(f"-DomainType {t}: not {', '.join(_DOMAIN_TYPE_NAMES[:-1])} or {_DOMAIN_TYPE_NAMES[-1]}")
        d.spec["domain_type"] = canon
    for pname, key in (("matchsubdomains", "match_sub_domains"), ("addressbookenabled", "address_book_enabled")):
        if pname in args:
            d.spec[key] = switch_arg(args, pname)
    if "makedefault" in args:
        line = args.pop("makedefault").line
        cmd.notes.info(cmd.file, line, "-MakeDefault chooses the domain of new mailboxes: no effect on SMTP receive")
    leftovers(cmd, args)
