"""Organization → Postfix configuration text: the two files ``render-postfix`` writes.

Pure functions, no I/O. :func:`render_main` writes the main.cf settings
(:mod:`exmilter.postfix.main`); :func:`render_master` one smtpd service per listener
(:mod:`exmilter.postfix.listeners` plans them, :mod:`exmilter.postfix.master` writes each
from its option groups). Postfix answers some things before any policy server is asked
(limits, relay checks, the banner), so the rendered settings make Postfix at least as
permissive as every connector and leave each decision to exmilter (postfix-notes §1.5,
§5). The policy service is wired fail-closed: when exmilter is down, slow or answers
nonsense, clients get a temporary failure, never an open relay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from exmilter.limits import POSTFIX_POLICY_RETRY_DELAY, POSTFIX_POLICY_TIMEOUT, POSTFIX_POLICY_TRY_LIMIT
from exmilter.model import Organization
from exmilter.postfix.listeners import ListenerLayout, ListenerPlan, connection_limits
from exmilter.postfix.main import main_settings
from exmilter.postfix.master import master_service
from exmilter.postfix.restrictions import DEFAULT_ACTION, policy_endpoint
from exmilter.postfix.scope import DEFAULT_PROCESS_LIMIT, capped, choose, descriptors_needed, process_total
from exmilter.postfix.transport import Outbound, render_outbound

#: ``render-postfix -o DIR`` writes DIR/main.cf.SUFFIX and DIR/master.cf.SUFFIX.
DEFAULT_SUFFIX = "exmilter"

#: The master.cf header: why each line of a service is there.
MASTER_WHY = (
    "#",
    "# Why each line (docs/render-postfix.md):",
    "#   maxproc column                 MaxInboundConnection of the listener's connectors, at most the",
    "#                                  process limit (render-postfix --process-limit; 0 = no limit)",
    "#   smtpd_delay_reject=no          exmilter is asked at MAIL (and CONNECT), not only at RCPT",
    "#   exmilter_policy                one check_policy_service for every list: one policy connection",
    f"#{'':34}per smtpd; timeout {POSTFIX_POLICY_TIMEOUT}s, {POSTFIX_POLICY_TRY_LIMIT} tries "
    f"{POSTFIX_POLICY_RETRY_DELAY}s apart, then a temporary 451",
    "#   sender, end_of_data            ask exmilter at MAIL and END-OF-MESSAGE",
    "#   client                         ask exmilter at CONNECT, or empty where every client",
    "#                                  selects a connector (exmilter would answer DUNNO)",
    "#   helo, data (empty)             exmilter answers DUNNO at EHLO/HELO and DATA: not asked",
    "#   relay = ..., defer             exmilter's OK accepts the recipient; no answer is a 4xx",
    "#   recipient = permit             nothing after exmilter's verdict can undo it",
    "#   connection_count_limit         MaxInboundConnectionPerSource (0 = no limit), no exceptions",
    "#   forbid_bare_newline            DATA ends only at <CR><LF>.<CR><LF> (no SMTP smuggling); reject",
    "#                                  where every connector has BareLinefeedRejectionEnabled; no exclusions",
    "#   cleanup_service_name           the listener's own cleanup + trivial-rewrite: Postfix completes",
    "#                                  unqualified addresses with the domain exmilter judges them by",
    "#   smtpd_tls_*, smtpd_sasl_*      STARTTLS where a connector has Tls and a certificate, AUTH where it",
    "#                                  has BasicAuth (after STARTTLS with BasicAuthRequireTLS)",
    "#   discard_ehlo_keyword_address_maps  per client: STARTTLS/AUTH hidden (and refused) where the",
    "#                                  client's connector does not offer them (docs/authentication.md)",
)


def render_master(
    plans: Sequence[ListenerPlan],
    org: Organization,
    endpoint: str,
    process_limit: int = 0,
    skipped: Sequence[str] = (),
    outbound: Outbound | None = None,
    milter: str | None = None,
) -> str:
    """master.cf: one smtpd service per plan (their own cleanup/rewrite services after each).

    ``endpoint`` is where Postfix reaches the policy daemon, in Postfix's syntax
    (:func:`exmilter.postfix.restrictions.policy_endpoint`); ``process_limit`` caps each
    service's maxproc (:mod:`exmilter.postfix.scope`; 0: Exchange's sum); ``skipped`` are the
    listeners left out, named in the header.
    """
    head = [
        f"# exmilter: smtpd services generated from {org.source or 'the configuration'} by exmilter render-postfix.",
        "# One service per Exchange listener; remove Postfix's own 'smtp inet' line for these ports.",
        f"# Policy server: {endpoint}; when it fails, clients get '{DEFAULT_ACTION}' (temporary).",
        *(
            [f"# Not rendered (internal listeners need --internal; or not in --listener): {', '.join(skipped)}"]
            if skipped
            else []
        ),
        *MASTER_WHY,
    ]
    layout = ListenerLayout(org)
    services = [master_service(p, org, endpoint, layout, process_limit=process_limit, milter=milter) for p in plans]
    services += (outbound or render_outbound(org)).services  # send connectors (docs/send-connectors.md)
    return "\n".join(head) + "\n\n" + "\n\n".join(services) + "\n"


def render_main(org: Organization, outbound: Outbound | None = None) -> str:
    """main.cf: the settings to append, each with the reason above it."""
    out = [
        f"# exmilter: main.cf settings generated from {org.source or 'the configuration'} by exmilter render-postfix.",
        "# Append to main.cf (a later line wins). The restriction lists are set per listener in master.cf.",
        "# Keep the accepted domains out of mydestination: exmilter, not local(8), decides who is accepted.",
        "",
    ]
    for s in main_settings(org):
        out.append(f"# {s.why}")
        out.append(f"{s.name} = {s.value}".rstrip())
    outbound = outbound or render_outbound(org)
    if not outbound.empty:
        out += ["", "# --- send connectors (docs/send-connectors.md) -----------------------------------"]
    for name, value, why in outbound.main:
        out += [f"# {why}", f"{name} = {value}"]
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Rendered:
    """Both fragments for one configuration, as ``render-postfix`` prints or writes them."""

    main: str
    master: str
    listeners: int
    #: Listeners of the configuration left out (internal ones, or not asked for), by context.
    skipped: tuple[str, ...] = ()
    #: Tables written beside main.cf (send connectors' transport and TLS policy maps): name -> text.
    files: dict[str, str] = field(default_factory=dict)
    #: smtpd processes the rendered listeners allow (sum of maxproc; None: some listener unlimited).
    processes: int | None = None

    @property
    def descriptors(self) -> int | None:
        """Open files the policy daemon needs for the rendered maxproc (None: some listener unlimited)."""
        return descriptors_needed(self.processes)

    def text(self) -> str:
        """Both parts, each under a header line (what ``render-postfix`` prints without ``-o``)."""
        tables = "".join(f"# ===== {name} =====\n{text}" for name, text in self.files.items())
        return f"# ===== main.cf =====\n{self.main}\n# ===== master.cf =====\n{self.master}{tables}"

    def write(self, directory: Path | str, suffix: str = DEFAULT_SUFFIX) -> tuple[Path, Path]:
        """Write ``main.cf.SUFFIX`` and ``master.cf.SUFFIX`` into ``directory`` (created if missing).

        Raises ValueError for a suffix that is not a file name suffix, OSError when writing fails.
        """
        if not suffix or "/" in suffix:
            raise ValueError(f"--suffix {suffix!r}: give a file name suffix")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        main_path, master_path = out / f"main.cf.{suffix}", out / f"master.cf.{suffix}"
        main_path.write_text(self.main)
        master_path.write_text(self.master)
        for name, text in self.files.items():  # main.cf names them: $config_directory/NAME
            (out / name).write_text(text)
        return main_path, master_path


def render(
    org: Organization,
    policy_service: str | None = None,
    *,
    include_internal: bool = False,
    only: Sequence[str] = (),
    process_limit: int = DEFAULT_PROCESS_LIMIT,
) -> Rendered:
    """Render both fragments; the policy daemon as Postfix must reach it is ``policy_service``
    (a Twisted endpoint string), by default the file's first ``policyd.listen``.

    Which listeners and how many processes each: :mod:`exmilter.postfix.scope` (by default
    the listeners relay clients use, maxproc at most :data:`DEFAULT_PROCESS_LIMIT`).
    Raises ValueError when that endpoint is missing or not one Postfix can reach, or when
    ``only`` names a listener the configuration does not have.
    """
    service = policy_service or next(iter(org.policyd.listen), None)
    if service is None:
        raise ValueError("the file's policyd.listen is empty; give --policy-service")
    endpoint = policy_endpoint(service)
    milter = policy_endpoint(org.milter.listen) if org.milter.enabled else None
    every = ListenerLayout(org).plans
    plans = choose(every, org.server.name, include_internal=include_internal, only=only)
    chosen = {p.context for p in plans}
    skipped = tuple(p.context for p in every if p.context not in chosen)
    layout = ListenerLayout(org)
    maxprocs = [capped(connection_limits(p, org, layout), process_limit).total for p in plans]
    outbound = render_outbound(org)
    return Rendered(
        render_main(org, outbound),
        render_master(plans, org, endpoint, process_limit, skipped, outbound, milter),
        len(plans),
        skipped,
        files=dict(outbound.files),
        processes=process_total(maxprocs),
    )
