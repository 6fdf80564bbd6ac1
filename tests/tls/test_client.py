"""Outbound TLS, in memory (twisted.test.iosim): the certificate name, SNI and trust."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import connect, makeFakeClient, makeFakeServer
from zope.interface import implementer

from stubserver.tls.certificates import KeyPair, issue_cert, make_ca
from stubserver.tls.client import CaFileError, FederationTlsPolicy, InvalidTlsServerName

CA = make_ca("test CA")
OTHER_CA = make_ca("other CA")


class Receiver(Protocol):
    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class Sender(Protocol):
    def __init__(self) -> None:
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"hello")

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = reason


@implementer(IOpenSSLContextFactory)
class ServerOptions:
    """A server-side OpenSSL context for a certificate and key (an old-style context factory)."""

    def __init__(self, pair: KeyPair) -> None:
        self.context = SSL.Context(SSL.TLS_SERVER_METHOD)
        self.context.use_certificate(x509.load_pem_x509_certificate(pair.cert_pem))
        self.context.use_privatekey(serialization.load_pem_private_key(pair.key_pem, None))  # type: ignore[arg-type]

    def getContext(self) -> SSL.Context:
        return self.context


def handshake(policy: FederationTlsPolicy, name: str, server: KeyPair) -> tuple[bytes, Any, Sender]:
    """Connect a client for ``name`` to a server with ``server``'s certificate in memory;
    return what the server received, the SNI it saw and the client protocol."""
    options = ServerOptions(server)
    seen: dict[str, Any] = {"sni": None}

    def on_sni(connection: SSL.Connection) -> None:
        seen["sni"] = connection.get_servername()

    options.context.set_tlsext_servername_callback(on_sni)
    clock = Clock()
    receiver = Receiver()
    server_factory = TLSMemoryBIOFactory(
        options, False, Factory.forProtocol(lambda: receiver), clock=clock
    )
    sender = Sender()
    client_factory = TLSMemoryBIOFactory(
        policy.creator_for(name), True, Factory.forProtocol(lambda: sender), clock=clock
    )
    server_proto = server_factory.buildProtocol(None)
    client_proto = client_factory.buildProtocol(None)
    pump = connect(  # type: ignore[no-untyped-call]
        server_proto,
        makeFakeServer(server_proto),  # type: ignore[no-untyped-call]
        client_proto,
        makeFakeClient(client_proto),  # type: ignore[no-untyped-call]
        clock=clock,
    )
    pump.flush()
    return receiver.data, seen["sni"], sender


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "ca.crt"
    path.write_bytes(CA.cert_pem)
    return path


def test_dns_name_verified_and_sent(ca_file: Path) -> None:
    """A certificate for the name from a trusted CA is accepted; the name is the SNI."""
    data, sni, _ = handshake(
        FederationTlsPolicy([ca_file]), "delta.test", issue_cert(["delta.test"], CA)
    )
    assert data == b"hello"
    assert sni == b"delta.test"


def test_wrong_name_rejected(ca_file: Path) -> None:
    """A certificate for another name is rejected before any data is sent."""
    data, _, sender = handshake(
        FederationTlsPolicy([ca_file]), "delta.test", issue_cert(["other.test"], CA)
    )
    assert data == b""
    assert sender.lost is not None


def test_unknown_ca_rejected(ca_file: Path) -> None:
    """A certificate from a CA we do not trust is rejected."""
    data, _, _ = handshake(
        FederationTlsPolicy([ca_file]), "delta.test", issue_cert(["delta.test"], OTHER_CA)
    )
    assert data == b""


def test_expired_rejected(ca_file: Path) -> None:
    """An expired certificate is rejected."""
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    expired = issue_cert(["delta.test"], CA, not_before=old, days=1)
    data, _, _ = handshake(FederationTlsPolicy([ca_file]), "delta.test", expired)
    assert data == b""


def test_ip_literal_checks_ip_san_without_sni(ca_file: Path) -> None:
    """For an IP literal the IP SAN is checked and no SNI is sent."""
    data, sni, _ = handshake(
        FederationTlsPolicy([ca_file]), "127.0.0.5", issue_cert(["127.0.0.5"], CA)
    )
    assert data == b"hello"
    assert sni is None


def test_ip_literal_rejects_dns_only_cert(ca_file: Path) -> None:
    """For an IP literal a certificate naming only a DNS name is rejected."""
    data, _, _ = handshake(
        FederationTlsPolicy([ca_file]), "127.0.0.5", issue_cert(["delta.test"], CA)
    )
    assert data == b""


def test_ipv6_literal(ca_file: Path) -> None:
    """An IPv6 literal is checked against the IPv6 SAN, without SNI."""
    data, sni, _ = handshake(FederationTlsPolicy([ca_file]), "::1", issue_cert(["::1"], CA))
    assert (data, sni) == (b"hello", None)


def test_unverified_when_asked_by_name() -> None:
    """verify_certificates=False accepts any certificate, and still sends SNI."""
    policy = FederationTlsPolicy(verify_certificates=False)
    data, sni, _ = handshake(policy, "delta.test", issue_cert(["other.test"], OTHER_CA))
    assert (data, sni) == (b"hello", b"delta.test")


def test_bad_ca_file(tmp_path: Path) -> None:
    """A CA file without a certificate is a clear error."""
    path = tmp_path / "junk.pem"
    path.write_text("nothing here")
    with pytest.raises(CaFileError, match="no PEM certificate"):
        FederationTlsPolicy([path])
    with pytest.raises(CaFileError, match="cannot read"):
        FederationTlsPolicy([tmp_path / "missing.pem"])


@pytest.mark.parametrize("name", ["0", "00", "2130706433", "8448"])
def test_all_digit_name_refused_up_front(name: str) -> None:
    """An all-digit name is neither an IP literal nor a DNS-ID: creator_for refuses it at
    once with InvalidTlsServerName instead of service_identity raising mid-handshake."""
    with pytest.raises(InvalidTlsServerName) as info:
        FederationTlsPolicy().creator_for(name)
    assert repr(name) in str(info.value)
    assert info.value.temporary is False


@pytest.mark.parametrize("name", ["0x0", "example.com", "127.0.0.1", "::1", "a.0"])
def test_other_names_still_accepted(name: str) -> None:
    """DNS names (even odd ones) and IP literals still get a connection creator."""
    assert FederationTlsPolicy().creator_for(name) is not None
