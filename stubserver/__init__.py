"""stubserver: a small, fast, spec-exact Matrix federation peer on Twisted.

Public surface: the command line, the configuration file and the HTTP endpoints
(``../shared/DESIGN.md``), and the Python library ``stubserver.testing``. Everything else is
internal and may change without notice.

The package map: one folder per area of the Server-Server API, two transport folders that
every area shares, and the entry points.

- ``signing/``      canonical JSON, signing keys and key files, signed JSON (spec appendices)
- ``discovery/``    server names, resolution, ``.well-known`` (rules and cache), SRV, DNS client
- ``server_keys/``  our key document, the key fetcher, the notary
- ``auth/``         X-Matrix in both directions, and the inbound request filter
- ``tls/``          client and server TLS, certificates (used by ``generate``)
- ``rooms/``        room versions, events, redaction, hashes, auth rules, state resolution,
                    the in-memory room, the receive pipeline, the room service (its port
                    and errors) and its endpoints (map in ``rooms/__init__.py``)
- ``control/``      the control API a test drives a running server with (``/_stubserver/v1``)
- ``testing/``      ``stubserver.testing``: the public Python API (Peer, Homeserver, plugin)
- ``conformance/``  ``stubserver conformance``: the federation suite run against a homeserver
- ``client/``       outbound transport: agent, blocklist, bounded bodies, signed requests,
                    backoff, shared fetches, the bounded TTL cache
- ``server/``       inbound transport: router, limits, connection counting, site, request
                    log, the composition root of ``run``, version and profile routes
- ``check/``        the federation doctor: report model, verdicts, hints, rendering, prober,
                    the .well-known and DNS sections, signed probes, checker, HTTP API
- ``cli/``          one module per command
- ``devtools/``     the DNS server and the demo (for demo/, tests and bench; never ``run``)
- ``config/``       the configuration file, parsed once into frozen values
"""

# Written here rather than read with importlib.metadata: that import alone costs about 50 ms
# of start-up. tests/test_version.py checks it equals pyproject.toml's version.
__version__ = "0.1.0"

__all__ = ["__version__"]
