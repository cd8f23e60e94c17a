"""Certificates for TLS tests, made on the fly with ``trustme``.

One :class:`TLSBundle` per test session holds:

* ``ca``: the CA the tests trust, and ``server_cert`` issued by it for
  ``localhost``, ``127.0.0.1`` and ``::1`` (every name a loopback test can dial);
* ``other_ca`` and ``untrusted_server_cert``: an unrelated CA and a cert it
  issued for the same names, for "certificate not trusted" tests;
* ``wrong_host_cert``: issued by the trusted CA, but only for
  ``wrong.example``, for "hostname mismatch" tests;
* ``expired_server_cert``: trusted CA, right names, validity long past;
* ``client_cert``: issued by the trusted CA, for mutual-TLS tests.

Everything is also written to files under ``directory`` because client APIs
often take paths (``ca_certs=...``, ``certfile=...``) rather than contexts.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import trustme

#: Every name a loopback test may put in a ``wss://`` URL.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WRONG_HOST = "wrong.example"
CLIENT_IDENTITY = "client.lomond.test"

ServerCertChoice = Literal["default", "untrusted", "wrong_host", "expired"]
TrustChoice = Literal["ca", "other_ca", "none"]


@dataclass
class TLSBundle:
    """The session's CAs, certificates and the files they were written to."""

    directory: Path
    ca: trustme.CA
    other_ca: trustme.CA
    server_cert: trustme.LeafCert
    untrusted_server_cert: trustme.LeafCert
    wrong_host_cert: trustme.LeafCert
    expired_server_cert: trustme.LeafCert
    client_cert: trustme.LeafCert

    # -- files -----------------------------------------------------------------
    @property
    def ca_file(self) -> str:
        """PEM of the trusted CA (what a client passes as ``cafile``)."""
        return str(self.directory / "ca.pem")

    @property
    def other_ca_file(self) -> str:
        return str(self.directory / "other-ca.pem")

    @property
    def server_cert_file(self) -> str:
        """Chain of the default server cert (leaf first)."""
        return str(self.directory / "server.pem")

    @property
    def server_key_file(self) -> str:
        return str(self.directory / "server.key")

    @property
    def client_cert_file(self) -> str:
        """Client certificate chain (leaf first), for mutual TLS."""
        return str(self.directory / "client.pem")

    @property
    def client_key_file(self) -> str:
        return str(self.directory / "client.key")

    @property
    def client_combined_file(self) -> str:
        """Client key and chain in one PEM file (``certfile`` without ``keyfile``)."""
        return str(self.directory / "client-combined.pem")

    # -- contexts ----------------------------------------------------------------
    def _leaf(self, which: ServerCertChoice) -> trustme.LeafCert:
        return {
            "default": self.server_cert,
            "untrusted": self.untrusted_server_cert,
            "wrong_host": self.wrong_host_cert,
            "expired": self.expired_server_cert,
        }[which]

    def server_context(
        self, cert: ServerCertChoice = "default", require_client_cert: bool = False
    ) -> ssl.SSLContext:
        """A fresh server context presenting ``cert``.

        With ``require_client_cert`` the server demands a certificate issued by
        the trusted CA. Note that under TLS 1.3 a client whose certificate is
        refused only learns it on its first read after the handshake.
        """
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._leaf(cert).configure_cert(ctx)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(ctx)
        return ctx

    def client_context(
        self, trust: TrustChoice = "ca", client_cert: bool = False
    ) -> ssl.SSLContext:
        """A fresh client context with hostname checking on.

        ``trust="ca"`` trusts the session CA, ``"other_ca"`` only the unrelated
        one (so the default server cert fails verification), ``"none"`` nothing
        at all (not even the system store). ``client_cert`` loads the client
        certificate for mutual TLS.
        """
        # Not create_default_context(): that loads the system store, and only the
        # CAs asked for should be trusted so results don't depend on the machine.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        if trust == "ca":
            self.ca.configure_trust(ctx)
        elif trust == "other_ca":
            self.other_ca.configure_trust(ctx)
        if client_cert:
            self.client_cert.configure_cert(ctx)
        return ctx


def _write_leaf(cert: trustme.LeafCert, chain: Path, key: Path, combined: Optional[Path]) -> None:
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    if combined is not None:
        cert.private_key_and_cert_chain_pem.write_to_path(str(combined))


def make_bundle(directory: Path) -> TLSBundle:
    """Create every CA and certificate and write them into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="lomond test CA")
    other_ca = trustme.CA(organization_name="unrelated test CA")
    long_ago = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    bundle = TLSBundle(
        directory=directory,
        ca=ca,
        other_ca=other_ca,
        server_cert=ca.issue_cert(*LOOPBACK_NAMES),
        untrusted_server_cert=other_ca.issue_cert(*LOOPBACK_NAMES),
        wrong_host_cert=ca.issue_cert(WRONG_HOST),
        expired_server_cert=ca.issue_cert(
            *LOOPBACK_NAMES,
            not_before=long_ago,
            not_after=long_ago + datetime.timedelta(days=1),
        ),
        client_cert=ca.issue_cert(CLIENT_IDENTITY),
    )
    ca.cert_pem.write_to_path(bundle.ca_file)
    other_ca.cert_pem.write_to_path(bundle.other_ca_file)
    _write_leaf(
        bundle.server_cert, Path(bundle.server_cert_file), Path(bundle.server_key_file), None
    )
    _write_leaf(
        bundle.client_cert,
        Path(bundle.client_cert_file),
        Path(bundle.client_key_file),
        Path(bundle.client_combined_file),
    )
    return bundle
