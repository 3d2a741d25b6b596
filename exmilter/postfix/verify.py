"""Does a live Postfix configuration let any listener relay without exmilter's answer?

Pure: it reads what ``postconf`` (every parameter), ``postconf -M`` and ``postconf -P``
printed, and the two files' text for line numbers; ``exmilter verify-postfix`` runs
postconf (:mod:`exmilter.postfix.postconf`). Every smtpd service (``inet`` and ``pass``)
is checked as Postfix evaluates it (its ``-o`` overrides, then main.cf, then Postfix's
defaults; ``$name`` references expanded), and each finding names the line to fix:

- **policy missing**: no exmilter ``check_policy_service`` in the RCPT lists
  (``smtpd_relay_restrictions``, ``smtpd_recipient_restrictions``): recipients are
  accepted on Postfix's own rules;
- **policy after permit**: something that can accept (``permit*``, a ``check_*`` lookup,
  another policy service, a restriction class) comes before exmilter's check in its list;
- **falls through**: after exmilter's check, something can still accept, or nothing
  refuses, so a ``DUNNO`` (a misconfigured daemon) accepts the recipient;
- **default action not temporary**: when the daemon cannot be asked, Postfix must answer
  4xx (``default_action``), never ``DUNNO``, ``OK`` or a permanent refusal;
- **milter missing**: a milter exmilter's listeners use (``--milter``, or present on some
  exmilter listeners) is not on this one, or ``milter_default_action`` lets mail through;
- **duplicate port**: two ``inet`` services on one port (only one can bind: the other
  fails at start, although ``postfix check`` passes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exmilter.postfix.apply import Service, service_port

#: Postfix 3.7's default of ``smtpd_policy_service_default_action``.
POSTFIX_POLICY_DEFAULT_ACTION = "451 4.3.5 Server configuration problem"
#: The RCPT lists, in the order smtpd evaluates them.
RCPT_LISTS = ("smtpd_relay_restrictions", "smtpd_recipient_restrictions")
#: Restrictions that can refuse or do nothing, but never accept.
NEVER_ACCEPTS = ("reject", "defer", "warn_if_reject", "sleep", "dunno")
#: What a temporary ``default_action`` starts with.
TEMPORARY = re.compile(r"^\s*(4\d\d(\s|$)|defer(_if_permit)?(\s|$))", re.IGNORECASE)
#: milter_default_action values that keep mail out while the milter cannot be asked.
MILTER_FAIL_CLOSED = ("tempfail", "shutdown", "reject")


@dataclass(frozen=True)
class Finding:
    """One way a listener could relay without exmilter's answer, located."""

    file: str
    line: int
    service: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.service}: {self.problem}"


@dataclass(frozen=True)
class PolicyCheck:
    endpoint: str
    options: dict[str, str]
    position: int  # index in its expanded list


def tokens(value: str) -> list[str]:
    """A restriction list's items: separated by blanks or commas, ``{ ... }`` kept whole."""
    out, depth, cur = [], 0, ""
    for ch in value:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if depth == 0 and (ch in ", \t\n"):
            if cur:
                out.append(cur)
            cur = ""
            continue
        cur += ch
    if cur:
        out.append(cur)
    return out


def _braced_items(group: str) -> list[str]:
    """``{ a, b = c, { d = e } }`` → ``["a", "b = c", "d = e"]``."""
    inner = group.strip()[1:-1]
    out, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "{":
            depth += 1
            if depth == 1:
                continue
        if ch == "}":
            depth -= 1
            if depth == 0:
                continue
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


class Listener:
    """One smtpd service's parameters as Postfix resolves them."""

    def __init__(self, service: Service, overrides: Mapping[str, str], main: Mapping[str, str]) -> None:
        self.service = service
        self.overrides = overrides
        self.main = main

    def value(self, name: str, default: str = "") -> str:
        if name in self.overrides:
            return self.overrides[name]
        return self.main.get(name, default)

    def origin(self, name: str) -> str:
        """Where the value of ``name`` comes from: ``master`` or ``main``."""
        return "master" if name in self.overrides else "main"

    def expand(self, name: str, depth: int = 0) -> list[str]:
        """A restriction list with ``$name`` items replaced by their own items."""
        out = []
        for t in tokens(self.value(name)):
            m = re.fullmatch(r"\$\{?(\w+)\}?", t)
            if m and depth < 10:
                out.extend(self.expand(m.group(1), depth + 1))
            else:
                out.append(t)
        return out


def policy_checks(items: Sequence[str]) -> list[PolicyCheck]:
    out = []
    for i, t in enumerate(items):
        if t.lower() == "check_policy_service" and i + 1 < len(items):
            arg = items[i + 1]
            if arg.startswith("{"):
                parts = _braced_items(arg)
                endpoint = parts[0] if parts else ""
                options = {}
                for p in parts[1:]:
                    k, _, v = p.partition("=")
                    options[k.strip()] = v.strip()
                out.append(PolicyCheck(endpoint, options, i))
            else:
                out.append(PolicyCheck(arg, {}, i))
    return out


def accepts(item: str) -> bool:
    """Whether a restriction can accept (anything but the refusing and neutral ones)."""
    return not item.lower().startswith(NEVER_ACCEPTS)


def _items_without_checks(items: Sequence[str], checks: Sequence[PolicyCheck]) -> list[tuple[int, str]]:
    args = {c.position + 1 for c in checks}
    return [(i, t) for i, t in enumerate(items) if i not in args]


def is_exmilter(check: PolicyCheck, endpoint: str | None) -> bool:
    """exmilter's check: the given endpoint, or (without one) any check with a policy_context."""
    if endpoint is not None:
        return check.endpoint == endpoint
    return "policy_context" in check.options


def milters(value: str) -> list[str]:
    return [_braced_items(t)[0] if t.startswith("{") else t for t in tokens(value)]


def verify(
    main: Mapping[str, str],
    services: Sequence[Service],
    params: Mapping[str, Mapping[str, str]],
    *,
    main_file: str = "main.cf",
    master_file: str = "master.cf",
    main_text: str = "",
    master_text: str = "",
    policy_endpoint: str | None = None,
    milter: str | None = None,
) -> list[Finding]:
    """Every finding, in master.cf order (empty: every listener asks exmilter, fail-closed)."""

    def line_of(service: Service) -> int:
        pattern = re.compile(rf"^{re.escape(service.name)}\s+{re.escape(service.type)}\s")
        for n, text in enumerate(master_text.splitlines(), 1):
            if pattern.match(text):
                return n
        return 0

    def main_line(name: str) -> int:
        pattern = re.compile(rf"^\s*{re.escape(name)}\s*=")
        found = 0
        for n, text in enumerate(main_text.splitlines(), 1):
            if pattern.match(text):
                found = n  # the last definition wins
        return found

    findings: list[Finding] = []

    def report(lst: Listener, name: str | None, problem: str) -> None:
        if name is not None and lst.origin(name) == "main" and main_line(name):
            findings.append(Finding(main_file, main_line(name), lst.service.key, problem))
        else:
            findings.append(Finding(master_file, line_of(lst.service), lst.service.key, problem))

    smtpd = [s for s in services if s.command == "smtpd" and s.type in ("inet", "pass")]
    listeners = [Listener(s, params.get(s.key, {}), main) for s in smtpd]
    exmilter_listeners: list[Listener] = []
    for lst in listeners:
        found = None
        for name in RCPT_LISTS:
            items = lst.expand(name)
            checks = policy_checks(items)
            mine = [c for c in checks if is_exmilter(c, policy_endpoint)]
            if mine:
                found = (name, items, checks, mine[0])
                break
        if found is None:
            shown = "; ".join(f"{n} = {lst.value(n)}" for n in RCPT_LISTS)
            report(
                lst,
                "smtpd_relay_restrictions",
                f"policy missing: no exmilter check_policy_service at RCPT ({shown}): "
                "recipients are accepted on Postfix's rules, without exmilter's answer",
            )
            continue
        exmilter_listeners.append(lst)
        name, items, checks, check = found
        others = _items_without_checks(items, [check])
        before = [t for i, t in others if i < check.position and accepts(t)]
        after = [t for i, t in others if i > check.position + 1]
        if before:
            report(
                lst,
                name,
                f"policy after permit: {before[0]} comes before exmilter's check in {name} "
                f"({lst.value(name)}): those clients are accepted without exmilter's answer",
            )
        accepting_after = [t for t in after if accepts(t)]
        if accepting_after:
            report(
                lst,
                name,
                f"falls through: {accepting_after[0]} after exmilter's check in {name} accepts what exmilter "
                "answers DUNNO to (a misconfigured daemon); end the list with defer",
            )
        elif not after:
            report(
                lst,
                name,
                f"falls through: nothing after exmilter's check in {name}: a DUNNO (a misconfigured "
                "daemon) accepts the recipient; end the list with defer",
            )
        action = check.options.get("default_action")
        where: str | None = None
        if action is None:
            where = "smtpd_policy_service_default_action"
            action = lst.value(where, POSTFIX_POLICY_DEFAULT_ACTION)
        if not TEMPORARY.match(action):
            report(
                lst,
                where,
                f"default action not temporary: when exmilter cannot be asked Postfix answers {action!r}; "
                "it must be a 4xx (e.g. 451 4.3.5 Server configuration problem)",
            )

    # Milters: the one asked for, or any one some exmilter listeners have and others lack.
    expected = [milter] if milter else []
    if not expected:
        seen: dict[str, int] = {}
        for lst in exmilter_listeners:
            for m in set(milters(lst.value("smtpd_milters"))):
                seen[m] = seen.get(m, 0) + 1
        expected = [m for m, n in seen.items() if n < len(exmilter_listeners)]
    for lst in exmilter_listeners:
        have = milters(lst.value("smtpd_milters"))
        missing = [m for m in expected if m not in have]
        if missing:
            report(
                lst,
                "smtpd_milters",
                f"milter missing: {', '.join(missing)} not in smtpd_milters ({lst.value('smtpd_milters')})",
            )
        elif have and expected:
            fallback = lst.value("milter_default_action", "tempfail")
            if fallback.lower() not in MILTER_FAIL_CLOSED:
                report(
                    lst,
                    "milter_default_action",
                    f"milter_default_action = {fallback}: mail passes when the milter cannot be asked",
                )

    # One service per port.
    bound: list[tuple[Service, str | None, int]] = []
    for s in services:
        if s.type != "inet":
            continue
        where_ = service_port(s.name)
        if where_ is None:
            continue
        host, port = where_
        for other, other_host, other_port in bound:
            if port == other_port and (host is None or other_host is None or host == other_host):
                findings.append(
                    Finding(
                        master_file,
                        line_of(s),
                        s.key,
                        f"duplicate port: {s.key} and {other.key} (line {line_of(other)}) both listen on port "
                        f"{port}; only one can bind",
                    )
                )
                break
        bound.append((s, host, port))
    return sorted(findings, key=lambda f: (f.file != master_file, f.line))
