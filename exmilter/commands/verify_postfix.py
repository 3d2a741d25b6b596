"""``exmilter verify-postfix``: fail when a Postfix listener could relay without exmilter's answer."""

from __future__ import annotations

import argparse
import sys

#: Exit statuses: every listener is wired fail-closed; some finding; postconf could not read the directory.
EXIT_OK, EXIT_FINDINGS, EXIT_UNREADABLE = 0, 1, 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify-postfix",
        help="check that every Postfix listener asks exmilter, fail-closed",
        description="Read a Postfix configuration with postconf (every parameter, -M, -P) and report, "
        "as FILE:LINE: SERVICE: problem, every smtpd listener that could relay without exmilter's "
        "answer: policy check missing, after a permit, falling through to accept, a default_action "
        "that is not temporary, a milter missing, two services on one port (docs/render-postfix.md).",
    )
    p.add_argument("--postfix-dir", default="/etc/postfix", metavar="DIR", help="configuration directory")
    p.add_argument(
        "--policy-service",
        metavar="ENDPOINT",
        help="exmilter's policy endpoint as Postfix writes it (unix:/run/exmilter/policy.sock); "
        "default: any check_policy_service with a policy_context",
    )
    p.add_argument(
        "--milter",
        metavar="ENDPOINT",
        help="a milter every exmilter listener must use (inet:127.0.0.1:10042); default: any milter some "
        "exmilter listeners use must be on all of them",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from exmilter.postfix.postconf import PostconfError, verify_directory

    try:
        findings = verify_directory(args.postfix_dir, policy_endpoint=args.policy_service, milter=args.milter)
    except (PostconfError, OSError) as e:
        print(f"exmilter verify-postfix: {e}", file=sys.stderr)
        return EXIT_UNREADABLE
    for f in findings:
        print(f)
    if findings:
        print(f"{args.postfix_dir}: {len(findings)} problem(s): a listener could relay without exmilter's answer")
        return EXIT_FINDINGS
    print(f"{args.postfix_dir}: every smtpd listener asks exmilter at RCPT, fail-closed")
    return EXIT_OK
