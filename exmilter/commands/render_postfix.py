"""``exmilter render-postfix``: the main.cf settings and master.cf services for a file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exmilter.commands._common import add_config_option, load_or_report
from exmilter.postfix.render import plan_listeners, policy_endpoint, render_main, render_master

SUFFIX = "exmilter"
MAIN_NAME = f"main.cf.{SUFFIX}"
MASTER_NAME = f"master.cf.{SUFFIX}"
#: How the shipped postfix/*.snippet files are regenerated (tests/test_render.py checks them).
SNIPPET_COMMAND = "exmilter render-postfix -c conf/exmilter.yaml -o postfix --suffix snippet"


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
        "--suffix",
        default=SUFFIX,
        help=f"with -o: write DIR/main.cf.SUFFIX and DIR/master.cf.SUFFIX (default: {SUFFIX}); "
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
        return 2
    org = loaded.organization
    try:
        endpoint = policy_endpoint(args.policy_service or org.policyd.listen[0])
    except (ValueError, IndexError) as e:
        print(f"exmilter render-postfix: policy service: {e}", file=sys.stderr)
        return 2
    plans = plan_listeners(org)
    main, master = render_main(org), render_master(plans, org, endpoint)
    if not args.output:
        print(f"# ===== main.cf =====\n{main}\n# ===== master.cf =====\n{master}", end="")
        return 0
    suffix = args.suffix
    if not suffix or "/" in suffix:
        print(f"exmilter render-postfix: --suffix {suffix!r}: give a file name suffix", file=sys.stderr)
        return 2
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    main_path, master_path = out / f"main.cf.{suffix}", out / f"master.cf.{suffix}"
    main_path.write_text(main)
    master_path.write_text(master)
    print(f"wrote {main_path} and {master_path} ({len(plans)} listener(s))")
    return 0
