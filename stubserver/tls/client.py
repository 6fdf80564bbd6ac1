"""Outbound TLS for federation: which certificates we trust and which name we check.

One :class:`FederationTlsPolicy` per process holds one OpenSSL context (minimum TLS 1.2,
trusting the system store plus ``federation_custom_ca_list`` / ``--ca-file``). For every
connection :meth:`FederationTlsPolicy.creator_for` returns a connection creator that

- for a DNS name: sends it as SNI and checks the leaf certificate's DNS SANs against it
  (``service_identity``, via Twisted's ``ClientTLSOptions``);
- for an IP literal: sends no SNI (RFC 6066 forbids literals there) and checks the
  certificate's IP SANs against the address.

The name given is always the one the spec prescribes for the resolution step (the server
name or the delegated name, never an SRV target): see :mod:`stubserver.discovery.resolution`.
Verification is off only with ``verify_certificates=False`` (``federation_verify_certificates:
false`` / ``--no-verify-certificates``); SNI is still sent then.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from OpenSSL import SSL
from service_identity.hazmat import DNS_ID
from twisted.internet._sslverify import ClientTLSOptions, IOpenSSLTrustRoot
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import CertificateOptions, TLSVersion
from zope.interface import implementer

#: The oldest protocol version we speak to peers.
MIN_TLS_VERSION = TLSVersion.TLSv1_2
#: Largest CA file we read, in bytes.
MAX_CA_FILE_BYTES = 4 * 1024 * 1024
#: Most names whose connection creators we keep.
MAX_CREATORS = 10_000


class InvalidTlsServerName(ValueError):
    """The name a certificate must be checked against is neither an IP literal nor a
    usable DNS name (an all-digit name such as ``0`` or ``2130706433``). Never temporary.

    Raised before any connection is made; left alone, service_identity raises "Invalid
    DNS-ID" inside the TLS handshake, where nothing handles it and the request hangs.
    """

    temporary = False

    def __init__(self, name: str) -> None:
        super().__init__(
            f"cannot check a certificate for {name!r}: it is neither an IP address"
            " nor a valid DNS name"
        )
        self.name = name


def check_tls_server_name(name: str) -> None:
    """Raise :class:`InvalidTlsServerName` unless ``name`` is an IP literal or a DNS name
    service_identity accepts (all-digit names such as ``0`` are refused)."""
    if is_ip_literal(name):
        return
    try:
        DNS_ID(name)
    except ValueError:
        raise InvalidTlsServerName(name) from None


class CaFileError(Exception):
    """A CA file cannot be read or holds no PEM certificate. Never temporary."""

    temporary = False


def load_ca_file(path: Path) -> list[x509.Certificate]:
    """The certificates in a PEM file, or :class:`CaFileError`."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CA_FILE_BYTES + 1)
    except OSError as e:
        raise CaFileError(f"cannot read CA file {path}: {e.strerror}") from None
    if len(data) > MAX_CA_FILE_BYTES:
        raise CaFileError(f"CA file {path} is larger than {MAX_CA_FILE_BYTES} bytes")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CaFileError(f"CA file {path} holds no PEM certificate") from None
    return certs


@implementer(IOpenSSLTrustRoot)
class SystemAndFileTrustRoot:
    """Trust the platform's default store plus the given CA certificates."""

    def __init__(self, ca_files: Sequence[Path], *, use_system: bool = True) -> None:
        for path in ca_files:
            load_ca_file(path)  # fail early, with a clear message
        self._ca_files = list(ca_files)
        self._use_system = use_system

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        if self._use_system:
            context.set_default_verify_paths()
        for path in self._ca_files:
            context.load_verify_locations(str(path))


def is_ip_literal(name: str) -> bool:
    """True for a bare IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedCreator:
    """No certificate check at all (only when the operator asked for it by name)."""

    def __init__(self, options: Any, name: str) -> None:
        self._options = options
        self._sni = None if is_ip_literal(name) else name.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection: SSL.Connection = self._options._makeTLSConnection(tlsProtocol)
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        return connection


class FederationTlsPolicy:
    """Connection creators for outbound federation TLS (see the module docstring)."""

    def __init__(
        self,
        ca_files: Sequence[Path] = (),
        *,
        verify_certificates: bool = True,
        use_system_store: bool = True,
    ) -> None:
        self.verify_certificates = verify_certificates
        trust = SystemAndFileTrustRoot(ca_files, use_system=use_system_store)
        if verify_certificates:
            self._options: Any = CertificateOptions(
                trustRoot=trust,
                raiseMinimumTo=MIN_TLS_VERSION,
            )
        else:
            self._options = CertificateOptions(verify=False, raiseMinimumTo=MIN_TLS_VERSION)
        self._creators: dict[str, IOpenSSLClientConnectionCreator] = {}

    def creator_for(self, tls_server_name: str) -> IOpenSSLClientConnectionCreator:
        """The connection creator that checks the certificate for ``tls_server_name``
        (a DNS name, or a bare IP address: then no SNI and an IP SAN check).

        Raises :class:`InvalidTlsServerName` for a name that is neither.
        """
        creator = self._creators.get(tls_server_name)
        if creator is None:
            check_tls_server_name(tls_server_name)
            if self.verify_certificates:
                creator = ClientTLSOptions(self._options._makeTLSConnection, tls_server_name)
            else:
                creator = _UnverifiedCreator(self._options, tls_server_name)
            if len(self._creators) >= MAX_CREATORS:
                self._creators.clear()
            self._creators[tls_server_name] = creator
        return creator
