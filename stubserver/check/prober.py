"""The prober of ``stubserver check``: HTTPS to one given address with a given SNI and Host
header, recording what TLS showed (the chain, its verification errors, the name check, the
version and cipher suite), as the federation tester reports them; a probe that got no
answer is tried once more (:func:`probe_with_retry`).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.pyopenssl import verify_hostname, verify_ip_address
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.web.client import URI, Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from stubserver.check.tester_fields import CertificateSummary
from stubserver.client.blocklist import BlockedAddress, IPBlocklist
from stubserver.client.body import describe_failure, read_body_limited
from stubserver.logs.quiet import QuietHTTPConnectionPool
from stubserver.reactor import IReactor
from stubserver.signing.canonical_json import BadJson, parse_json_bytes
from stubserver.tls.client import SystemAndFileTrustRoot, is_ip_literal

#: Longest we wait for one probe (connect, TLS, request and body), in seconds.
PROBE_TIMEOUT_SECONDS = 15
#: Longest we wait for a TCP connection, in seconds.
CONNECT_TIMEOUT_SECONDS = 10
#: The cipher list of a probe: OpenSSL's defaults, at the security level that still lets
#: TLS 1.0/1.1 handshakes through, so that old TLS is shown (a warning) instead of failing.
OLD_TLS_CIPHERS = b"DEFAULT:@SECLEVEL=0"
#: Largest response body we read from a probed server, in bytes.
MAX_PROBE_BODY_BYTES = 512 * 1024


#: OpenSSL's names of common TLS 1.2 suites -> the IANA names Go (and so the tester)
#: prints. TLS 1.3 suites have the same name in both.
_IANA_CIPHER_NAMES = {
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "AES128-GCM-SHA256": "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "AES256-GCM-SHA384": "TLS_RSA_WITH_AES_256_GCM_SHA384",
}
_TLS_VERSION_NAMES = {
    "TLSv1": "TLS 1.0",
    "TLSv1.1": "TLS 1.1",
    "TLSv1.2": "TLS 1.2",
    "TLSv1.3": "TLS 1.3",
}


def go_tls_version_name(openssl_name: str) -> str:
    """Go's ``tls.VersionName`` spelling of an OpenSSL protocol name."""
    return _TLS_VERSION_NAMES.get(openssl_name, openssl_name)


def go_cipher_suite_name(openssl_name: str) -> str:
    """Go's (IANA) name of a cipher suite, from OpenSSL's; unknown names pass through."""
    return _IANA_CIPHER_NAMES.get(openssl_name, openssl_name)


def summarize_certificate(cert: x509.Certificate) -> CertificateSummary:
    """The tester's summary of a certificate."""

    def common_name(name: x509.Name) -> str:
        values = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(values[0].value) if values else ""

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns_names: tuple[str, ...] = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns_names = ()
    fingerprint = base64.b64encode(cert.fingerprint(hashes.SHA256())).decode("ascii")
    return CertificateSummary(
        subject_common_name=common_name(cert.subject),
        issuer_common_name=common_name(cert.issuer),
        sha256_fingerprint=fingerprint.rstrip("="),
        dns_names=dns_names or None,
    )


@dataclass(frozen=True)
class ProbeResult:
    """One HTTPS exchange with one address: the answer and what TLS showed."""

    status: int
    body: bytes
    headers: Headers
    certificates: tuple[CertificateSummary, ...]
    tls_version: str
    cipher_suite: str
    verify_errors: tuple[str, ...]
    name_error: str | None

    @property
    def certificate_errors(self) -> tuple[str, ...]:
        """Why the certificate is not valid for the expected name (empty when it is)."""
        return self.verify_errors + ((self.name_error,) if self.name_error else ())


class ProbeFailed(Exception):
    """A probe got no HTTP answer; ``str()`` says why, for a person."""


class Prober(Protocol):
    """HTTPS to one address (the :class:`AddressProber`; fakes in tests)."""

    def probe(
        self, address: str, port: int, *, tls_server_name: str, host_header: str, path: str
    ) -> Deferred[ProbeResult]:
        """The answer and what TLS showed; fails with :class:`ProbeFailed`."""


@implementer(IOpenSSLClientConnectionCreator)
class _RecordingCreator:
    """Makes the one TLS connection of a probe and keeps it, to read its details later."""

    def __init__(self, context: SSL.Context, tls_server_name: str) -> None:
        self._context = context
        self._sni = None if is_ip_literal(tls_server_name) else tls_server_name.encode("idna")
        self.connection: SSL.Connection | None = None

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """A client-side connection with our SNI (none for an IP literal)."""
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        connection.set_connect_state()
        self.connection = connection
        return connection


@implementer(IAgentEndpointFactory)
class _FixedEndpointFactory:
    """Every URI connects to the one endpoint given."""

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """The fixed endpoint."""
        return self._endpoint


def _verify_error_text(errno: int) -> str:
    lib: Any = SSL._lib  # type: ignore[attr-defined]
    ffi: Any = SSL._ffi  # type: ignore[attr-defined]
    text: bytes = ffi.string(lib.X509_verify_cert_error_string(errno))
    return text.decode("ascii", "replace")


class AddressProber:
    """HTTPS to one given address with a given SNI and Host, recording the TLS details.

    The handshake does not stop at an untrusted certificate: the chain's verification
    errors and the name check are recorded instead, so that the report can show the
    certificate and say what is wrong with it, as the tester does. Nothing learnt over such
    a connection is trusted; it is only reported (and counts as a failed check).

    Every address goes through ``blocklist`` before anything is dialled: a blocked address
    (not excepted by the allowlist) fails with :class:`ProbeFailed` without a connection, so
    the report never shows the answer or certificate of a service it may not reach. The
    report endpoint probes for whoever asks; this is the one gate every probe passes.
    """

    def __init__(
        self,
        reactor: IReactor,
        ca_files: Sequence[Path],
        blocklist: IPBlocklist,
        *,
        use_system_store: bool = True,
    ):
        self._reactor = reactor
        self._trust = SystemAndFileTrustRoot(ca_files, use_system=use_system_store)
        self._blocklist = blocklist

    def probe(
        self,
        address: str,
        port: int,
        *,
        tls_server_name: str,
        host_header: str,
        path: str,
    ) -> Deferred[ProbeResult]:
        """GET ``path``; fails with :class:`ProbeFailed` when no answer arrives, or at once,
        without connecting, when ``address`` is blocked."""
        if self._blocklist.is_blocked(address):
            return fail(ProbeFailed(str(BlockedAddress(address, tls_server_name))))
        d = Deferred.fromCoroutine(self._probe(address, port, tls_server_name, host_header, path))
        d.addTimeout(PROBE_TIMEOUT_SECONDS, self._reactor)
        return d

    async def _probe(
        self, address: str, port: int, tls_server_name: str, host_header: str, path: str
    ) -> ProbeResult:
        verify_errors: list[str] = []

        def on_verify(conn: Any, cert: Any, errno: int, depth: int, ok: int) -> bool:
            if not ok:
                text = f"{_verify_error_text(errno)} (certificate {depth} of the chain)"
                if text not in verify_errors:
                    verify_errors.append(text)
            return True  # go on: the errors are reported, never trusted

        context = SSL.Context(SSL.TLS_METHOD)
        # TLS 1.0 and 1.1 are accepted here only to be reported (a warning): nothing
        # learnt over a probe is trusted beyond the report.
        context.set_min_proto_version(SSL.TLS1_VERSION)
        context.set_cipher_list(OLD_TLS_CIPHERS)
        context.set_verify(SSL.VERIFY_PEER, on_verify)
        self._trust._addCACertsToContext(context)
        creator = _RecordingCreator(context, tls_server_name)
        tcp: IStreamClientEndpoint
        if ":" in address:
            tcp = TCP6ClientEndpoint(  # type: ignore[no-untyped-call]
                self._reactor, address, port, timeout=CONNECT_TIMEOUT_SECONDS
            )
        else:
            tcp = TCP4ClientEndpoint(self._reactor, address, port, timeout=CONNECT_TIMEOUT_SECONDS)
        pool = QuietHTTPConnectionPool(  # type: ignore[no-untyped-call]
            self._reactor, persistent=False
        )
        pool.retryAutomatically = False
        agent = Agent.usingEndpointFactory(  # type: ignore[no-untyped-call]
            self._reactor, _FixedEndpointFactory(wrapClientTLS(creator, tcp)), pool=pool
        )
        headers = Headers()
        headers.addRawHeader(b"host", host_header.encode("ascii"))
        url = f"http://{host_header}{path}".encode("ascii")
        try:
            response = await agent.request(b"GET", url, headers, None)
            body = await read_body_limited(response, MAX_PROBE_BODY_BYTES)
        except CancelledError:
            raise
        except Exception as e:
            raise ProbeFailed(describe_failure(e)[0]) from None
        conn = creator.connection
        if conn is None:
            raise ProbeFailed("no TLS connection was made")
        chain = conn.get_peer_cert_chain(as_cryptography=True) or []
        name_error: str | None = None
        try:
            if is_ip_literal(tls_server_name):
                verify_ip_address(conn, tls_server_name)
            else:
                verify_hostname(conn, tls_server_name)
        except VerificationError:
            name_error = f"the certificate is not valid for {tls_server_name}"
        except Exception as e:  # an unparseable certificate
            name_error = f"the certificate's names cannot be checked: {e}"
        return ProbeResult(
            status=response.code,
            body=body,
            headers=response.headers,
            certificates=tuple(summarize_certificate(c) for c in chain),
            tls_version=go_tls_version_name(conn.get_protocol_version_name()),
            cipher_suite=go_cipher_suite_name(conn.get_cipher_name() or ""),
            verify_errors=tuple(verify_errors),
            name_error=name_error,
        )


#: Attempts per connection before its failure is final: one retry, as a federating server
#: retries, so that a single dropped connection is a warning, not a failure.
ATTEMPTS_PER_CONNECTION = 2


async def probe_with_retry(
    prober: Prober,
    address: str,
    port: int,
    *,
    tls_server_name: str,
    host_header: str,
    path: str,
    blocked: bool = False,
) -> tuple[ProbeResult, str | None]:
    """Probe once, and once more when the first attempt got no answer.

    Returns the answer and the first attempt's error when only the retry worked; raises the
    last ProbeFailed when every attempt failed. A ``blocked`` address is never retried
    (nothing was dialled: the same refusal would come again).
    """
    first_error: str | None = None
    for attempt in range(1 if blocked else ATTEMPTS_PER_CONNECTION):
        try:
            result = await prober.probe(
                address, port, tls_server_name=tls_server_name, host_header=host_header, path=path
            )
        except ProbeFailed as e:
            if attempt + 1 >= (1 if blocked else ATTEMPTS_PER_CONNECTION):
                raise
            first_error = str(e)
            continue
        return result, first_error
    raise AssertionError("unreachable")  # pragma: no cover


def json_or_none(body: bytes) -> Any:
    """``body`` parsed as strict JSON, or None when it is not."""
    try:
        return parse_json_bytes(body)
    except BadJson:
        return None
