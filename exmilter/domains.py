"""Accepted-domain matching (spec §1.5), on the names Postfix routes to.

An exact entry beats a wildcard; among wildcards (and exact entries with MatchSubDomains)
the longest suffix wins. A wildcard ``*.contoso.com`` also matches ``contoso.com``.
Lookup walks the address's domain suffixes, so it costs O(labels), not O(domains).

Names are compared in the ASCII form Postfix 3.7 resolves them to (postfix-notes §9):
ASCII names lower-cased, internationalised names converted like Postfix's ICU calls
(``src/util/midna_domain.c``: UTS #46, non-transitional, no STD3 rules), so ``straße.de``
is ``xn--strae-oqa.de`` and never ``strasse.de`` (Python's ``encodings.idna`` is IDNA 2003
and gets this wrong). The ``idna`` package applies IDNA 2008's code point, bidi and
joiner rules on top of UTS #46, so it refuses a few names ICU converts (symbols such as
``☃``, an ``_`` in a label of a non-ASCII name): those match nothing, which is the safe
direction — such a recipient is refused, never routed to a domain it was not judged by.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import idna

from exmilter.model import AcceptedDomain, AcceptedDomainType

#: Code points whose UTS #46 mapping changed after Unicode 15.0, the version of Debian 12's
#: ICU 72 that Postfix uses: UTS #46 for Unicode 15.1 maps U+1E9E (ẞ) to ß, ICU 72 to "ss",
#: so ``STRAẞE.de`` would be judged as ``xn--strae-oqa.de`` and routed to ``strasse.de``.
#: A name containing one converts to nothing. Compared code point by code point against
#: libicu72 (docs/render-postfix.md "Internationalised domains"), this is the only one where
#: both convert and disagree; names only ``idna`` converts are refused by Postfix's smtpd first.
UNSTABLE_CODE_POINTS = frozenset("\u1e9e")


class DomainError(ValueError):
    """A domain name that has no ASCII form Postfix would route to."""


def routed_domain(address: str) -> str:
    """The domain part of an envelope address as Postfix keeps it, case preserved.

    The text after the last ``@``; one trailing dot is dropped unless it follows another
    dot or the ``@`` (Postfix's rewrite and resolve do exactly that:
    ``user@labs.local.`` is routed to ``labs.local``, ``user@labs.local..`` is not).
    """
    _, at, domain = address.rpartition("@")
    if not at:
        return ""
    if domain.endswith(".") and len(domain) > 1 and domain[-2] != ".":
        domain = domain[:-1]
    return domain


def address_domain(address: str) -> str:
    """The routed domain of ``local@domain`` as written (angle brackets ignored).

    Not lower-cased: a non-ASCII name must reach UTS #46 mapping as the client wrote it
    (``STRAẞE.de`` is ``strasse.de``, ``straße.de`` is not); :func:`ascii_domain` compares.
    """
    return routed_domain(address.strip().strip("<>"))


def to_ascii(domain: str) -> str:
    """``domain`` in the ASCII form Postfix routes to; :class:`DomainError` when it has none.

    ASCII names are only lower-cased (Postfix does not convert them); others are converted
    with UTS #46 non-transitional processing: ``BÜCHER.example`` is ``xn--bcher-kva.example``,
    ``straße.de`` is ``xn--strae-oqa.de``.
    """
    if domain.isascii():
        return domain.lower()
    if not UNSTABLE_CODE_POINTS.isdisjoint(domain):
        raise DomainError(f"{domain!r}: its UTS #46 mapping differs between Unicode versions (ICU 72: 'ss')")
    try:
        return idna.encode(domain, uts46=True, transitional=False, std3_rules=False).decode("ascii")
    except (idna.IDNAError, UnicodeError) as e:
        raise DomainError(f"{domain!r} has no IDNA 2008 (UTS #46) ASCII form: {e}") from None


@functools.lru_cache(maxsize=4096)
def ascii_domain(domain: str) -> str | None:
    """:func:`to_ascii`, or None when the name does not convert (it then matches nothing).

    Cached (bounded), as Postfix caches its conversions: a UTS #46 conversion costs tens
    of microseconds, and the same few domains come back with every message.
    """
    try:
        return to_ascii(domain)
    except DomainError:
        return None


def to_unicode(ascii_name: str) -> str | None:
    """The U-label form of an ASCII name with ``xn--`` labels (``bücher.example``), else None.

    Postfix matches ``relay_domains`` on the name as the client wrote it (case-folded), so
    a domain list needs both forms to route ``user@bücher.example`` as the accepted domain.
    """
    if "xn--" not in ascii_name:
        return None
    try:
        name = idna.decode(ascii_name, uts46=True, std3_rules=False)
    except (idna.IDNAError, UnicodeError):
        return None
    return name if name != ascii_name and ascii_domain(name) == ascii_name else None


class AcceptedDomains:
    def __init__(self, domains: Iterable[AcceptedDomain]) -> None:
        self.domains = tuple(domains)
        self._exact: dict[str, AcceptedDomain] = {}
        self._suffix: dict[str, AcceptedDomain] = {}
        for d in self.domains:
            name = ascii_domain(d.suffix)
            if name is None:  # cannot happen for a loaded file (config converts); never match
                continue
            if d.is_wildcard:
                self._suffix.setdefault(name, d)
            else:
                self._exact.setdefault(name, d)
                if d.match_sub_domains:
                    self._suffix[name] = d

    def match(self, domain: str) -> AcceptedDomain | None:
        """The accepted domain that best matches ``domain``, or None (also when it does not convert)."""
        name = ascii_domain(domain) if domain else None
        if not name:
            return None
        exact = self._exact.get(name)
        if exact is not None:
            return exact
        labels = name.split(".")
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


def default_domain_name(default: str | None, accepted: Sequence[AcceptedDomain]) -> str | None:
    """The domain a connector's DefaultDomain names, in ASCII form, or None.

    Exchange only lets DefaultDomain name an accepted domain, by its Name or its
    DomainName (a wildcard's parent for ``*.contoso.com``). Anything else completes
    nothing: an unqualified address is then refused, as without DefaultDomain.
    """
    if not default or not default.strip():
        return None
    key = default.strip()
    key = key[:-1] if key.endswith(".") else key
    wanted = ascii_domain(key.removeprefix("*."))
    for d in accepted:
        if d.name.lower() == key.lower() or (wanted is not None and ascii_domain(d.suffix) == wanted):
            return ascii_domain(d.suffix)
    return None


def organization_default_domain(accepted: Sequence[AcceptedDomain]) -> str | None:
    """The organisation's default accepted domain: the first Authoritative one, else the first.

    Exchange's postmaster is ``postmaster@<default accepted domain>``; exmilter has no
    ``-MakeDefault`` flag, so the order of the file decides.
    """
    authoritative = [d for d in accepted if d.domain_type is AcceptedDomainType.Authoritative]
    for d in [*authoritative, *accepted]:
        name = ascii_domain(d.suffix)
        if name:
            return name
    return None
