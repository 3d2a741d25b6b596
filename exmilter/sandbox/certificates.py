"""A throw-away certificate authority for the sandbox and the tests.

The sandbox offers STARTTLS where a connector's AuthMechanism has ``Tls`` and talks TLS
to test next hops, so it needs certificates an admin never has to provide: a private CA
made on first use under the state directory, and server certificates it signs for the
names and addresses a listener or a test server answers to. Made with the ``openssl``
command (Debian's ``openssl`` package): nothing here is meant for production, where the
admin's own certificate files are configured.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Days the throw-away certificates are valid: long enough never to expire under a sandbox.
VALID_DAYS = 3650
#: The key type: quick to make and accepted by every TLS stack the tests use.
KEY_ALGORITHM = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


class CertificateError(RuntimeError):
    """``openssl`` failed; the message carries its output."""


@dataclass(frozen=True)
class Certificate:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise CertificateError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip() or proc.stdout.strip()}")


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA under ``directory``: ``ca.pem`` (give it to clients as their trust anchor) and its key."""

    directory: Path

    @property
    def cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def key(self) -> Path:
        return self.directory / "ca.key"

    @classmethod
    def create(cls, directory: Path | str, name: str = "exmilter sandbox CA") -> CertificateAuthority:
        """The CA in ``directory``, made there unless it already exists (keys are mode 600)."""
        ca = cls(Path(directory))
        ca.directory.mkdir(parents=True, exist_ok=True)
        if not (ca.cert.exists() and ca.key.exists()):
            _openssl(
                "req", "-x509", *KEY_ALGORITHM, "-nodes", "-days", str(VALID_DAYS),
                "-subj", f"/CN={name}", "-keyout", ca.key.name, "-out", ca.cert.name,
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                cwd=ca.directory,
            )  # fmt: skip
            os.chmod(ca.key, 0o600)
        return ca

    def issue(self, name: str, hosts: Sequence[str]) -> Certificate:
        """A server certificate for ``hosts`` (DNS names or IP addresses), ``name`` for its files.

        Reissued when missing; the first host is the subject's common name.
        """
        if not hosts:
            raise ValueError("a certificate needs at least one host name or address")
        cert, key = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        if cert.exists() and key.exists():
            return Certificate(cert, key)
        csr = self.directory / f"{name}.csr"
        _openssl("req", *KEY_ALGORITHM, "-nodes", "-subj", f"/CN={hosts[0]}", "-keyout", key.name, "-out", csr.name,
                 cwd=self.directory)  # fmt: skip
        os.chmod(key, 0o600)
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(
            f"subjectAltName={','.join(_alt_name(h) for h in hosts)}\n"
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
        )
        _openssl(
            "x509", "-req", "-in", csr.name, "-CA", self.cert.name, "-CAkey", self.key.name, "-CAcreateserial",
            "-days", str(VALID_DAYS), "-extfile", extensions.name, "-out", cert.name,
            cwd=self.directory,
        )  # fmt: skip
        csr.unlink(missing_ok=True)
        extensions.unlink(missing_ok=True)
        return Certificate(cert, key)


def _alt_name(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"DNS:{host}"
    return f"IP:{host}"
