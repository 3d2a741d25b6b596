"""``exmilter render-postfix``: the main.cf settings and master.cf services for a file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exmilter.commands._common import add_config_option, load_or_report
from exmilter.postfix.render import plan_listeners, policy_endpoint, render_main, render_master

MAIN_NAME = "main.cf.exmilter"
MASTER_NAME = "master.cf.exmilter"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render-postfix",
        help="print the Postfix configuration for this file",
        description="Render main.cf settings and one master.cf smtpd service per Exchange listener, "
        "wired to the policy daemon fail-closed (docs/render-postfix.md). Without -o both parts "
        f"are printed; with -o DIR they are written to DIR/{MAIN_NAME} and DIR/{MASTER_NAME}.",
    )
    add_config_option(p)
    p.add_argument("-o", "--output", metavar="DIR", help="write the two fragments into DIR instead of printing")
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
        return 2
    org = loaded.organization
    try:
        endpoint = policy_endpoint(args.policy_service or org.policyd.listen[0])
    except (ValueError, IndexError) as e:
        print(f"exmilter render-postfix: policy service: {e}", file=sys.stderr)
        return 2
    plans = plan_listeners(org)
    main, master = render_main(org, endpoint), render_master(plans, org, endpoint)
    if not args.output:
        print(f"# ===== main.cf =====\n{main}\n# ===== master.cf =====\n{master}", end="")
        return 0
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / MAIN_NAME).write_text(main)
    (out / MASTER_NAME).write_text(master)
    print(f"wrote {out / MAIN_NAME} and {out / MASTER_NAME} ({len(plans)} listener(s))")
    return 0
