"""The sandbox's throw-away CA: certificates a real TLS client verifies, for the names asked."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from exmilter.sandbox.certificates import CertificateAuthority


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca"))


def _handshake(ca: CertificateAuthority, server_name: str, hosts: list[str], name: str) -> str:
    """A TLS server on 127.0.0.1 with a certificate for ``hosts``; a client verifying it as ``server_name``."""
    cert = ca.issue(name, hosts)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert.cert, cert.key)
    client_ctx = ssl.create_default_context(cafile=str(ca.cert))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_ctx.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            subject = dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]
            tls.sendall(b"x")
        t.join(10)
    return subject


def test_a_verifying_client_accepts_each_name_and_address(ca: CertificateAuthority) -> None:
    hosts = ["mail.labs.local", "127.0.0.1"]
    assert _handshake(ca, "mail.labs.local", hosts, "mail") == "mail.labs.local"
    assert _handshake(ca, "127.0.0.1", hosts, "mail") == "mail.labs.local"


def test_a_name_not_in_the_certificate_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        _handshake(ca, "other.labs.local", ["mail.labs.local"], "only-mail")


def test_the_ca_and_its_certificates_are_made_once_with_private_keys(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    first = ca.cert.read_bytes()
    cert = ca.issue("host", ["host.test"])
    assert CertificateAuthority.create(tmp_path).cert.read_bytes() == first
    assert ca.issue("host", ["host.test"]).cert.read_bytes() == cert.cert.read_bytes()
    assert ca.key.stat().st_mode & 0o777 == 0o600 and cert.key.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError):
        ca.issue("nobody", [])
