"""Exchange value syntax (spec §1.1), including property tests for ranges."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exmilter.values import (
    IPRange,
    parse_binding,
    parse_bool,
    parse_byte_size,
    parse_ip,
    parse_ip_range,
    parse_timespan,
    parse_unlimited_int,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("37748736", 37748736),
        ("36MB", 37748736),
        ("36 MB", 37748736),
        ("36mb", 37748736),
        ("256KB", 262144),
        ("1GB", 1 << 30),
        ("100B", 100),
        ("36 MB (37,748,736 bytes)", 37748736),
        (65536, 65536),
    ],
)
def test_byte_size(text, expected):
    assert parse_byte_size(text) == expected


@pytest.mark.parametrize("text", ["", "36 XB", "MB", "-5", "1.5B", True])
def test_byte_size_refused(text):
    with pytest.raises(ValueError):
        parse_byte_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("unlimited", None), ("Unlimited", None), ("UNLIMITED", None), ("20", 20), (5, 5)],
)
def test_unlimited_int(text, expected):
    assert parse_unlimited_int(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:00:05", timedelta(seconds=5)),
        ("00:05:00", timedelta(minutes=5)),
        ("1.00:00:00", timedelta(days=1)),
        ("0.00:10:00", timedelta(minutes=10)),
    ],
)
def test_timespan(text, expected):
    assert parse_timespan(text) == expected


@pytest.mark.parametrize("text", ["5", "00:60:00", "24:00:00", "5 minutes", "00:5:00"])
def test_timespan_refused(text):
    with pytest.raises(ValueError):
        parse_timespan(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("$true", True), ("$false", False), ("true", True), ("False", False), (True, True), ("$TRUE", True)],
)
def test_bool(text, expected):
    assert parse_bool(text) is expected


@pytest.mark.parametrize(
    ("text", "first", "last", "size"),
    [
        ("192.168.1.1", "192.168.1.1", "192.168.1.1", 1),
        ("192.168.1.1-192.168.1.254", "192.168.1.1", "192.168.1.254", 254),
        ("192.168.1.0/24", "192.168.1.0", "192.168.1.255", 256),
        ("192.168.1.1/24", "192.168.1.0", "192.168.1.255", 256),  # host bits masked
        ("192.168.1.0(255.255.255.0)", "192.168.1.0", "192.168.1.255", 256),
        ("0.0.0.0-255.255.255.255", "0.0.0.0", "255.255.255.255", 1 << 32),
        ("2001:0DB8::CD3/60", "2001:db8::", "2001:db8:0:f:ffff:ffff:ffff:ffff", 1 << 68),
        ("fe80::39bd:88f7:6969:d223%11", "fe80::39bd:88f7:6969:d223", "fe80::39bd:88f7:6969:d223", 1),
    ],
)
def test_ip_range_forms(text, first, last, size):
    r = parse_ip_range(text)
    assert r.first == int(ipaddress.ip_address(first))
    assert r.last == int(ipaddress.ip_address(last))
    assert r.size == size


@pytest.mark.parametrize(
    "text",
    [
        "",
        "192.168.1.300",
        "10.0.0.9-10.0.0.1",
        "10.0.0.1-2001:db8::1",
        "10.0.0.0/33",
        "10.0.0.0(255.0.255.0)",
        "banana",
        "10.0.0.0/",
    ],
)
def test_ip_range_refused(text):
    with pytest.raises(ValueError):
        parse_ip_range(text)


def test_ipv4_mapped_address_is_ipv4():
    assert parse_ip("::ffff:192.0.2.1") == ipaddress.IPv4Address("192.0.2.1")


@pytest.mark.parametrize(
    ("text", "version", "wildcard", "port"),
    [
        ("0.0.0.0:25", 4, True, 25),
        ("10.1.1.1:25", 4, False, 25),
        ("[::]:25", 6, True, 25),
        ("[2001:db8::1]:587", 6, False, 587),
    ],
)
def test_binding(text, version, wildcard, port):
    b = parse_binding(text)
    assert (b.version, b.is_wildcard, b.port) == (version, wildcard, port)
    assert str(b) == text


@pytest.mark.parametrize(
    "text",
    ["25", "0.0.0.0", "0.0.0.0:0", "0.0.0.0:70000", "224.0.0.1:25", "255.255.255.255:25", "[10.0.0.1]:25", "::1:25"],
)
def test_binding_refused(text):
    with pytest.raises(ValueError):
        parse_binding(text)


v4 = st.integers(0, (1 << 32) - 1)


@given(v4, v4)
def test_dash_range_round_trip(a, b):
    lo, hi = min(a, b), max(a, b)
    text = f"{ipaddress.IPv4Address(lo)}-{ipaddress.IPv4Address(hi)}"
    r = parse_ip_range(text)
    assert (r.version, r.first, r.last, r.size) == (4, lo, hi, hi - lo + 1)


@given(v4, st.integers(0, 32))
def test_cidr_matches_ipaddress_module(addr, prefix):
    text = f"{ipaddress.IPv4Address(addr)}/{prefix}"
    net = ipaddress.ip_network(text, strict=False)
    r = parse_ip_range(text)
    assert (r.first, r.last) == (int(net.network_address), int(net.broadcast_address))
    assert r.size == net.num_addresses
    # the netmask form is the same range
    mask = parse_ip_range(f"{ipaddress.IPv4Address(addr)}({net.netmask})")
    assert (mask.first, mask.last) == (r.first, r.last)


@given(st.integers(0, (1 << 128) - 1), st.integers(0, 128))
def test_ipv6_cidr_matches_ipaddress_module(addr, prefix):
    text = f"{ipaddress.IPv6Address(addr)}/{prefix}"
    net = ipaddress.ip_network(text, strict=False)
    r = parse_ip_range(text)
    assert (r.version, r.first, r.last) == (6, int(net.network_address), int(net.broadcast_address))


@pytest.mark.parametrize(
    ("text", "shown", "kept"),
    [
        ("10.0.0.1", "10.0.0.1", ""),
        ("10.0.0.1-10.0.0.9", "10.0.0.1-10.0.0.9", ""),
        ("10.0.0.0/24", "10.0.0.0/24", ""),
        ("2001:db8::/48", "2001:db8::/48", ""),
        ("::1", "::1", ""),
        # written back as the file says: not the form str() would derive
        ("192.168.1.1/24", "192.168.1.1/24", "192.168.1.1/24"),
        ("10.0.0.0-10.0.0.255", "10.0.0.0-10.0.0.255", "10.0.0.0-10.0.0.255"),
        ("10.0.0.1/32", "10.0.0.1/32", "10.0.0.1/32"),
        ("10.0.0.1-10.0.0.1", "10.0.0.1-10.0.0.1", "10.0.0.1-10.0.0.1"),
        ("192.168.1.0(255.255.255.0)", "192.168.1.0(255.255.255.0)", "192.168.1.0(255.255.255.0)"),
        ("2001:0DB8::CD3/60", "2001:0DB8::CD3/60", "2001:0DB8::CD3/60"),
        ("fe80::1%11", "fe80::1%11", "fe80::1%11"),
        ("10.0.0.1 - 10.0.0.9", "10.0.0.1 - 10.0.0.9", "10.0.0.1 - 10.0.0.9"),
    ],
)
def test_ip_range_text_is_kept_only_when_str_would_not_give_it_back(text, shown, kept):
    r = parse_ip_range(text)
    assert (str(r), r.text) == (shown, kept)
    assert r == IPRange(r.version, r.first, r.last)  # equality is about addresses, not notation


def test_values_have_no_instance_dict():
    """10,000 connectors of 10 ranges: a __dict__ per range and binding would cost megabytes."""
    for value in (parse_ip_range("10.0.0.1"), parse_binding("0.0.0.0:25")):
        assert not hasattr(value, "__dict__")


def test_equal_binding_texts_share_one_object():
    assert parse_binding("0.0.0.0:25") is parse_binding("0.0.0.0:25")
    assert parse_binding("0.0.0.0:25") == parse_binding(" 0.0.0.0:25")


def test_a_decimal_size_too_long_for_a_float_is_refused_not_an_overflow():
    """Regression (config fuzz #157): ``99…9.5MB`` with 400 digits raised OverflowError (an internal error)."""
    with pytest.raises(ValueError, match="byte size"):
        parse_byte_size("9" * 400 + ".5MB")
