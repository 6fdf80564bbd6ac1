"""stubserver: a small, fast, spec-exact Matrix federation peer on Twisted.

Public surface: the command line, the configuration file and the HTTP endpoints
(``../shared/DESIGN.md``), and the Python library ``stubserver.testing``. Everything else is
internal and may change without notice.

The package map: one folder per area of the Server-Server API, two transport folders that
every area shares, the outbound stack, the composition of ``run``, and the entry points.
Areas import the shared tools, and what is built on the areas imports them, never the
reverse: an area never imports control/, cli/, app/ or testing/, client/ and server/ import
no area, and no two folders import each other (tests/test_layout.py checks it).

Spec areas (rules, Twisted shell and endpoints of one part of the spec):

- ``signing/``      canonical JSON, signing keys, signed JSON (spec appendices), and the
                    key files ``generate`` writes
- ``discovery/``    server names, resolution, ``.well-known`` (rules and cache), SRV, DNS
                    client, and the typed failures of an unreachable destination
- ``server_keys/``  our key document and its endpoint, the key fetcher, the notary
- ``auth/``         X-Matrix in both directions, and the inbound request filter
- ``tls/``          client and server TLS, certificates (used by ``generate``)
- ``rooms/``        room versions, events, redaction, hashes, auth rules, state resolution,
                    the in-memory room, the receive pipeline, the room service (its port
                    and errors) and its endpoints (map in ``rooms/__init__.py``)

Shared tools, below every area that uses them:

- ``cache.py``      the one bounded TTL cache
- ``http_json.py``  one synchronous JSON request over ``http.client`` (control clients,
                    ``stubserver.testing``'s homeserver client)
- ``reactor.py``    ``IReactor``, the reactor interfaces handed down, and the only
                    functions that touch the global reactor
- ``client/``       outbound transport: bounded bodies, blocklist, backoff, concurrency
                    limits, shared fetches
- ``server/``       inbound transport: router, limits, connection counting, request log
- ``config/``       the configuration file, parsed once into frozen values
- ``logs/``         the log's one observer and its level; Twisted's connection machinery
                    (HTTP pool, twisted.names' UDP ports) made without start/stop lines

Built on the areas:

- ``outbound/``     the federation client stack: agent (resolution, TLS, pooling), signed
                    requests, and ``build_federation_client``, which wires them
- ``control/``      the control API a test drives a running server with
                    (``/_stubserver/v1``), and its client
- ``app/``          the composition of ``run``: which listener serves which routes
                    (key document, version, profile, ``.well-known``, notary, rooms,
                    control), filters and observers; start-up, binding and shutdown;
                    which of its servers answers (``hosting``: many in one process)
- ``check/``        the federation doctor: report model, verdicts, hints, rendering, prober,
                    the .well-known and DNS sections, signed probes, checker, HTTP API
- ``testing/``      ``stubserver.testing``: the public Python API (Peer, Homeserver, plugin)
- ``conformance/``  ``stubserver conformance``: the federation suite run against a homeserver
- ``cli/``          one module per command
- ``devtools/``     the DNS server and the demo (for demo/, tests and bench; never ``run``)
"""

# Written here rather than read with importlib.metadata: that import alone costs about 50 ms
# of start-up. tests/test_version.py checks it equals pyproject.toml's version.
__version__ = "0.1.0"

__all__ = ["__version__"]
