"""``exmilter render-postfix``: the main.cf settings and master.cf services for a file."""

from __future__ import annotations

import argparse
import sys

from exmilter.commands._common import EXIT_REFUSED, add_config_option, load_or_report
from exmilter.postfix.render import DEFAULT_SUFFIX, render

MAIN_NAME = f"main.cf.{DEFAULT_SUFFIX}"
MASTER_NAME = f"master.cf.{DEFAULT_SUFFIX}"
#: How the shipped postfix/*.snippet files are regenerated (tests/test_render.py checks them).
SNIPPET_COMMAND = "exmilter render-postfix -c conf/exmilter.yaml -o postfix --suffix snippet"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render-postfix",
        help="print the Postfix configuration for this file",
        description="Render main.cf settings and one master.cf smtpd service per Exchange listener, "
        "wired to the policy daemon fail-closed (docs/render-postfix.md), offering STARTTLS and AUTH per "
        "client as each connector's AuthMechanism does (docs/authentication.md). Without -o both parts "
        f"are printed; with -o DIR they are written to DIR/{MAIN_NAME} and DIR/{MASTER_NAME}. With "
        "send connectors, the transport and TLS policy tables main.cf names are written beside them "
        "(DIR/exmilter_transport, DIR/exmilter_tls_policy; copy them next to main.cf: docs/send-connectors.md).",
    )
    add_config_option(p)
    p.add_argument("-o", "--output", metavar="DIR", help="write the two fragments into DIR instead of printing")
    p.add_argument(
        "--suffix",
        default=DEFAULT_SUFFIX,
        help=f"with -o: write DIR/main.cf.SUFFIX and DIR/master.cf.SUFFIX (default: {DEFAULT_SUFFIX}); "
        f"the repository's snippets are: {SNIPPET_COMMAND}",
    )
    p.add_argument(
        "--policy-service",
        metavar="ENDPOINT",
        help="Twisted endpoint of the policy daemon as Postfix must reach it "
        "(default: the first policyd.listen of the file), e.g. tcp:10040:interface=127.0.0.1",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_REFUSED
    try:
        rendered = render(loaded.organization, args.policy_service)
    except ValueError as e:
        print(f"exmilter render-postfix: policy service: {e}", file=sys.stderr)
        return EXIT_REFUSED
    if not args.output:
        print(rendered.text(), end="")
        return 0
    try:
        main_path, master_path = rendered.write(args.output, args.suffix)
    except (ValueError, OSError) as e:
        print(f"exmilter render-postfix: {e}", file=sys.stderr)
        return EXIT_REFUSED
    tables = "".join(f", {main_path.parent / name}" for name in rendered.files)
    print(f"wrote {main_path} and {master_path}{tables} ({rendered.listeners} listener(s))")
    return 0
