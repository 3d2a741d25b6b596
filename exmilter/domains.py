"""Accepted-domain matching (spec §1.5).

An exact entry beats a wildcard; among wildcards (and exact entries with MatchSubDomains)
the longest suffix wins. A wildcard ``*.contoso.com`` also matches ``contoso.com``.
Lookup walks the address's domain suffixes, so it costs O(labels), not O(domains).
Internationalised names (SMTPUTF8 addresses) are compared in their ASCII (``xn--``) form.
"""

from __future__ import annotations

from collections.abc import Iterable

from exmilter.model import AcceptedDomain


def address_domain(address: str) -> str:
    """Lower-cased domain of ``local@domain`` (angle brackets and a trailing dot ignored)."""
    addr = address.strip().strip("<>")
    _, at, domain = addr.rpartition("@")
    return domain.rstrip(".").lower() if at else ""


def ascii_domain(domain: str) -> str:
    """``bücher.example`` as ``xn--bcher-kva.example``; ASCII and unconvertible names unchanged."""
    domain = domain.rstrip(".").lower()
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


class AcceptedDomains:
    def __init__(self, domains: Iterable[AcceptedDomain]) -> None:
        self.domains = tuple(domains)
        self._exact: dict[str, AcceptedDomain] = {}
        self._suffix: dict[str, AcceptedDomain] = {}
        for d in self.domains:
            name = ascii_domain(d.suffix)
            if d.is_wildcard:
                self._suffix.setdefault(name, d)
            else:
                self._exact.setdefault(name, d)
                if d.match_sub_domains:
                    self._suffix[name] = d

    def match(self, domain: str) -> AcceptedDomain | None:
        """The accepted domain that best matches ``domain``, or None."""
        domain = ascii_domain(domain)
        if not domain:
            return None
        exact = self._exact.get(domain)
        if exact is not None:
            return exact
        labels = domain.split(".")
        for i in range(len(labels)):
            hit = self._suffix.get(".".join(labels[i:]))
            if hit is not None:
                return hit
        return None

    def match_address(self, address: str) -> AcceptedDomain | None:
        return self.match(address_domain(address))

    def is_internal(self, address: str) -> bool:
        """Internal = best match is Authoritative or InternalRelay."""
        hit = self.match_address(address)
        return hit is not None and hit.domain_type.is_internal
