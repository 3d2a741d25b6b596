"""``exmilter check``: validate the file and summarise it like ``Get-ReceiveConnector``."""

from __future__ import annotations

import argparse

from exmilter.commands._common import EXIT_REFUSED, add_config_option, load_or_report
from exmilter.model import Organization
from exmilter.postfix.milter import POLICY_ONLY_GIVES_UP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="validate the configuration file",
        description="Validate the configuration; print every located error and warning (open relays last). "
        "Exit status: 0 valid, 2 refused.",
    )
    add_config_option(p)
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse the file (exit 2) on any warning too, open relays included",
    )
    p.set_defaults(func=run)


def summary(org: Organization) -> str:
    rows = [("Identity", "Bindings", "Enabled")] + [
        (c.identity, "{" + ", ".join(str(b) for b in c.bindings) + "}", str(c.enabled)) for c in org.receive_connectors
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    out = [f"{r[0]:<{widths[0]}} {r[1]:<{widths[1]}} {r[2]}".rstrip() for r in rows[:1]]
    out.append(f"{'-' * 8:<{widths[0]}} {'-' * 8:<{widths[1]}} {'-' * 7}")
    out += [f"{r[0]:<{widths[0]}} {r[1]:<{widths[1]}} {r[2]}" for r in rows[1:]]
    out.append("")
    drows = [("Name", "DomainName", "DomainType")] + [
        (d.name, d.domain_name, d.domain_type.value) for d in org.accepted_domains
    ]
    dw = [max(len(r[i]) for r in drows) for i in range(2)]
    out.append(f"{drows[0][0]:<{dw[0]}} {drows[0][1]:<{dw[1]}} {drows[0][2]}")
    out.append(f"{'----':<{dw[0]}} {'----------':<{dw[1]}} ----------")
    out += [f"{r[0]:<{dw[0]}} {r[1]:<{dw[1]}} {r[2]}" for r in drows[1:]]
    if org.send_connectors:  # as Get-SendConnector lists them
        srows = [("Identity", "AddressSpaces", "Enabled")] + [
            (c.name, "{" + ", ".join(str(a) for a in c.address_spaces) + "}", str(c.enabled))
            for c in org.send_connectors
        ]
        sw = [max(len(r[i]) for r in srows) for i in range(2)]
        out.append("")
        out.append(f"{srows[0][0]:<{sw[0]}} {srows[0][1]:<{sw[1]}} {srows[0][2]}")
        out.append(f"{'--------':<{sw[0]}} {'-------------':<{sw[1]}} -------")
        out += [f"{r[0]:<{sw[0]}} {r[1]:<{sw[1]}} {r[2]}" for r in srows[1:]]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config, strict=args.strict)
    if loaded is None:
        return EXIT_REFUSED
    print(summary(loaded.organization))
    if not loaded.organization.milter.enabled:
        print(f"\nNote: {POLICY_ONLY_GIVES_UP}")
    print(
        f"\n{args.config}: OK ({len(loaded.organization.receive_connectors)} receive connectors, "
        f"{len(loaded.organization.accepted_domains)} accepted domains)"
    )
    return 0
