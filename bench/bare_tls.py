"""A bare Twisted TLS server that answers every HTTP request with the same fixed bytes.

The floor for this stack (Python + Twisted + pyOpenSSL), in two modes:

- ``--mode web`` (default): ``twisted.web``'s ``Site`` with one leaf ``Resource`` whose
  ``render`` returns the fixed bytes: the HTTP server stubserver is built on, minus
  routing, JSON and everything else. The reference for stubserver's targets.
- ``--mode raw``: a bare ``Protocol`` that answers each request head (``\r\n\r\n``)
  with a fixed response: no HTTP parsing at all; the ceiling of Twisted's TLS transport.

``bench/bench.py`` runs both beside stubserver, Synapse and nginx.

    python bench/bare_tls.py --listen 127.0.77.34:8448 --cert C.pem --key K.pem --body doc.json

Prints one JSON line ``{"ready": true, ...}`` when listening; serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import sys

from OpenSSL import crypto
from twisted.internet import defer, endpoints, protocol, ssl
from twisted.internet.task import react
from twisted.web import resource, server

#: Largest buffered request head we accept before dropping the connection, in bytes.
MAX_PENDING_BYTES = 64 * 1024


class FixedResponder(protocol.Protocol):
    """Answers each complete request head (``\\r\\n\\r\\n``) with the factory's fixed bytes."""

    def connectionMade(self) -> None:
        self._pending = b""

    def dataReceived(self, data: bytes) -> None:
        pending = self._pending + data
        count = pending.count(b"\r\n\r\n")
        if count:
            self.transport.write(self.factory.response * count)  # type: ignore[attr-defined]
            pending = pending[pending.rfind(b"\r\n\r\n") + 4 :]
        if len(pending) > MAX_PENDING_BYTES:
            self.transport.loseConnection()  # type: ignore[union-attr]
        self._pending = pending


class FixedFactory(protocol.Factory):
    protocol = FixedResponder

    def __init__(self, body: bytes) -> None:
        self.response = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )


class FixedResource(resource.Resource):
    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body
        self.length = str(len(body)).encode()

    def render(self, request):  # type: ignore[no-untyped-def]
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", self.length)
        return self.body


class QuietSite(server.Site):
    """A Site without the per-request access log (nothing is logged: the floor)."""

    def log(self, request):  # type: ignore[no-untyped-def]
        pass


def main(reactor, argv: list[str]):  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--body", required=True)
    parser.add_argument("--mode", choices=["web", "raw"], default="web")
    args = parser.parse_args(argv)
    host, port = args.listen.rsplit(":", 1)
    with open(args.cert, "rb") as f:
        chain = f.read()
    with open(args.key, "rb") as f:
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, f.read())
    cert = crypto.load_certificate(crypto.FILETYPE_PEM, chain)
    options = ssl.CertificateOptions(privateKey=key, certificate=cert)
    with open(args.body, "rb") as f:
        body = f.read()
    endpoint = endpoints.SSL4ServerEndpoint(reactor, int(port), options, interface=host)
    if args.mode == "web":
        site = QuietSite(FixedResource(body))
        site.noisy = False
        factory: protocol.Factory = site
    else:
        factory = FixedFactory(body)
    d = endpoint.listen(factory)

    def ready(listening_port):  # type: ignore[no-untyped-def]
        addr = listening_port.getHost()
        print(json.dumps({"ready": True, "address": addr.host, "port": addr.port}), flush=True)
        return defer.Deferred()  # serve until the reactor stops (SIGTERM/SIGINT)

    return d.addCallback(ready)


if __name__ == "__main__":
    react(main, (sys.argv[1:],))
