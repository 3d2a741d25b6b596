"""``exmilter render-postfix``: the main.cf settings and master.cf services for a file."""

from __future__ import annotations

import argparse
import os
import sys

from exmilter.commands._common import EXIT_REFUSED, add_config_option, load_or_report
from exmilter.config import Loaded
from exmilter.limits import UNIT_LIMIT_NOFILE
from exmilter.postfix.dropins import SYSTEMD_DIR, UNITS, DropIns, plan_dropins
from exmilter.postfix.render import DEFAULT_SUFFIX, Rendered, render
from exmilter.postfix.scope import DEFAULT_PROCESS_LIMIT, UnknownListener

#: Exit status of ``--apply`` when the result still lets a listener relay without exmilter.
EXIT_UNSAFE = 1

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
        "(DIR/exmilter_transport, DIR/exmilter_tls_policy; copy them next to main.cf: docs/send-connectors.md). "
        "With --apply they are edited into a Postfix configuration directory with postconf "
        "(a diff first, a backup, postfix check, then verify-postfix's checks).",
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
    p.add_argument(
        "--internal",
        action="store_true",
        help="also render Exchange's internal listeners (all connectors HubTransport or usage Internal: "
        "2525, 465, 717 by default); they serve Exchange's own servers, not relay clients",
    )
    p.add_argument(
        "--listener",
        action="append",
        default=[],
        metavar="CONTEXT",
        help="render only this listener (as exmilter names it: *:25, 10.0.0.5:2727); repeatable",
    )
    p.add_argument(
        "--process-limit",
        type=int,
        default=DEFAULT_PROCESS_LIMIT,
        metavar="N",
        help="most smtpd processes per listener: maxproc = min(sum of the connectors' "
        f"MaxInboundConnection, N) (default {DEFAULT_PROCESS_LIMIT}, Postfix's default_process_limit; "
        "0: Exchange's sum, uncapped)",
    )
    p.add_argument(
        "--apply",
        action="store_true",
        help="edit the Postfix configuration in --postfix-dir (postconf -e/-M semantics): show the diff, "
        "back up main.cf and master.cf, write, run postfix check (restoring the backup if it fails)",
    )
    p.add_argument("--dry-run", action="store_true", help="with --apply: show the diff, change nothing")
    p.add_argument(
        "--postfix-dir", default="/etc/postfix", metavar="DIR", help="with --apply: the configuration directory"
    )
    p.add_argument(
        "--systemd-dir",
        metavar="DIR",
        help="with --apply: where the daemons' LimitNOFILE drop-ins go (DIR/exmilter-policyd.service.d/limits.conf "
        "and the milter's; default: /etc/systemd/system when --postfix-dir is /etc/postfix, else none)",
    )
    p.add_argument(
        "--limit-nofile",
        type=int,
        metavar="N",
        help="with --apply: write LimitNOFILE=N in the drop-ins instead of the one sized from the rendered "
        "process limits (docs/render-postfix.md)",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="with --apply: comment out any other service on a rendered listener's port (without it only "
        "Postfix's stock smtp/inet is, and anything else in the way is refused)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_REFUSED
    if args.limit_nofile is not None and args.limit_nofile < 1:
        print("exmilter render-postfix: --limit-nofile: give 1 or more", file=sys.stderr)
        return EXIT_REFUSED
    if args.process_limit < 0:
        print("exmilter render-postfix: --process-limit: give 0 or more", file=sys.stderr)
        return EXIT_REFUSED
    try:
        rendered = render(
            loaded.organization,
            args.policy_service,
            include_internal=args.internal,
            only=args.listener,
            process_limit=args.process_limit,
        )
    except UnknownListener as e:
        print(f"exmilter render-postfix: --listener: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except ValueError as e:
        print(f"exmilter render-postfix: policy service: {e}", file=sys.stderr)
        return EXIT_REFUSED
    if args.apply:
        return apply(args, loaded, rendered)
    if args.dry_run:
        print("exmilter render-postfix: --dry-run goes with --apply", file=sys.stderr)
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


def apply(args: argparse.Namespace, loaded: Loaded, rendered: Rendered) -> int:
    """``--apply [--dry-run]``: the diff, then (not dry) the backup, the files, the checks."""
    from exmilter.postfix.main import main_settings
    from exmilter.postfix.postconf import ApplyRefused, PostconfError, apply_rendering
    from exmilter.postfix.transport import render_outbound

    outbound = render_outbound(loaded.organization)  # send connectors: settings and tables too
    settings = [(s.name, s.value) for s in main_settings(loaded.organization)]
    settings += [(name, value) for name, value, _why in outbound.main]
    try:
        applied = apply_rendering(
            args.postfix_dir,
            settings,
            rendered.master,
            dry_run=args.dry_run,
            replace=args.replace,
            tables=rendered.files,
        )
    except ApplyRefused as e:
        for c in e.conflicts:
            print(f"exmilter render-postfix: {args.postfix_dir}: {c}", file=sys.stderr)
        return EXIT_REFUSED
    except (PostconfError, OSError) as e:
        print(f"exmilter render-postfix: {e}", file=sys.stderr)
        return EXIT_REFUSED
    print(applied.diff or f"# {args.postfix_dir}: already as rendered, nothing to change", end="")
    if rendered.skipped:
        print(
            f"# not rendered (internal listeners need --internal; or not in --listener): {', '.join(rendered.skipped)}"
        )
    for note in applied.edits.kept:
        print(f"# {note}")
    for w in applied.warnings:
        print(f"# postconf: {w}")
    if rendered.descriptors is not None:
        print(f"# the policy daemon needs LimitNOFILE >= {rendered.descriptors} for these process limits")
    dropins = _dropins(args, rendered)
    print(f"# postfix check: {'; '.join(applied.check) or 'ok'}")
    for f in applied.findings:
        print(f"exmilter render-postfix: verify: {f}", file=sys.stderr)
    if args.dry_run:
        print(f"# dry run: {args.postfix_dir} not changed")
    elif applied.backup is not None:
        print(f"# applied; the originals are in {applied.backup}; run 'postfix reload' to use it")
    if dropins is not None and dropins.diff() and not args.dry_run:
        try:
            dropins.write()
        except OSError as e:
            print(f"exmilter render-postfix: {e}", file=sys.stderr)
            return EXIT_REFUSED
        print(f"# wrote LimitNOFILE={dropins.limit}: run 'systemctl daemon-reload' and restart {' '.join(UNITS)}")
    if applied.findings:
        return EXIT_UNSAFE
    print("# verify-postfix: every smtpd listener asks exmilter, fail-closed")
    return 0


def _dropins(args: argparse.Namespace, rendered: Rendered) -> DropIns | None:
    """The LimitNOFILE drop-ins (exmilter.postfix.dropins), their diff printed; None: none to write."""
    systemd_dir = args.systemd_dir
    if systemd_dir is None and os.path.abspath(args.postfix_dir) == "/etc/postfix":
        systemd_dir = SYSTEMD_DIR  # the host's own Postfix: the host's units
    if systemd_dir is None:
        print("# LimitNOFILE drop-ins not written: give --systemd-dir for a Postfix other than /etc/postfix")
        return None
    dropins = plan_dropins(systemd_dir, rendered.processes, args.limit_nofile)
    if dropins is None:
        print(f"# a listener has no process limit: LimitNOFILE stays the units' {UNIT_LIMIT_NOFILE} (--limit-nofile)")
        return None
    if args.limit_nofile is not None and rendered.descriptors is not None and args.limit_nofile < rendered.descriptors:
        print(f"# --limit-nofile {args.limit_nofile} is below the {rendered.descriptors} these process limits need")
    diff = dropins.diff()
    print(diff or f"# {systemd_dir}: LimitNOFILE={dropins.limit} already\n", end="")
    return dropins
