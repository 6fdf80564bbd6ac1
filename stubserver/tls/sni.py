"""Choosing a listener's certificate by SNI, for listeners several servers share (issue 23).

A TLS listener serves its own certificate (``stubserver.tls.server``) unless the client's
ClientHello names (SNI) the host of another server on that listener: then that server's
certificate is served, switching the connection's OpenSSL context in the servername
callback (pyOpenSSL's ``set_tlsext_servername_callback``; the way txsni does it). No SNI
(an IP literal, an old client) or an unknown name: the listener's own certificate, which
is the primary server's unless the listener names another.

A server's certificate is checked at start-up (:class:`ServerCertificate`: a fault is a
ConfigError before anything is served) but its OpenSSL context is built on the first
handshake that asks for it: about 20 KB and 0.5 ms per context, which a hundred servers
that are never all reached should not pay for at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from zope.interface import implementer

from stubserver.tls.server import load_key_pair, server_tls_options

log = Logger()


class ServerCertificate:
    """A server's certificate and key: checked when made, the context built on first use."""

    def __init__(self, cert_path: Path, key_path: Path, *, cert_key: str, key_key: str) -> None:
        """Raises ConfigError (naming ``cert_key`` or ``key_key``) for a fault."""
        load_key_pair(cert_path, key_path, cert_key=cert_key, key_key=key_key)
        self._paths = (cert_path, key_path)
        self._keys = (cert_key, key_key)
        self._options: CertificateOptions | None = None

    @property
    def built(self) -> bool:
        """True once the OpenSSL context exists."""
        return self._options is not None

    def context(self) -> SSL.Context:
        """The OpenSSL context serving this certificate (built now if not yet)."""
        if self._options is None:
            cert_path, key_path = self._paths
            cert_key, key_key = self._keys
            self._options = server_tls_options(
                cert_path, key_path, cert_key=cert_key, key_key=key_key
            )
        context: SSL.Context = self._options.getContext()
        return context


def sni_host(server_name: bytes | None) -> str | None:
    """The host an SNI value names, lower-cased and without a trailing dot (pure); None
    for none or one that is not ASCII."""
    if not server_name:
        return None
    try:
        return server_name.decode("ascii").rstrip(".").lower()
    except UnicodeDecodeError:
        return None


@implementer(IOpenSSLContextFactory)
class SniContextFactory:
    """A listener's TLS options (``getContext``, what ``listenSSL`` takes) that serve the
    certificate of the server an SNI names (``by_host``: lower-cased host to certificate),
    else ``default``'s."""

    def __init__(
        self, default: CertificateOptions, by_host: Mapping[str, ServerCertificate]
    ) -> None:
        self._default = default
        self._by_host = dict(by_host)
        self._context: SSL.Context | None = None

    def getContext(self) -> SSL.Context:
        """The listener's context, with the servername callback installed."""
        if self._context is None:
            context: SSL.Context = self._default.getContext()
            context.set_tlsext_servername_callback(self._choose)
            self._context = context
        return self._context

    def _choose(self, connection: SSL.Connection) -> None:
        host = sni_host(connection.get_servername())
        certificate = None if host is None else self._by_host.get(host)
        if certificate is None:
            return
        try:
            connection.set_context(certificate.context())
        except Exception:
            # An exception must not escape into OpenSSL's callback; the handshake goes on
            # with the listener's own certificate (and the client will refuse it).
            log.failure("Cannot serve the certificate for {host}", host=host)


#: What a TLS listener is given: its certificate, or that and the SNI choice.
ServerTlsOptions = CertificateOptions | SniContextFactory
