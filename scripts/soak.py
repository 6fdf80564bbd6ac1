"""Soak run (issue 7, outside CI): many requests, good and hostile mixed, against one process.

Starts one ``stubserver run`` on loopback (a stub made in a temporary folder with its own
CA), drives it from several client processes over keep-alive TLS, samples the server's
resident memory (VmRSS) as it goes and prints the request count, the error count and the
memory at start and end. A prober meanwhile asks ``/version`` every
:data:`PROBE_INTERVAL_SECONDS` on its own connection and the run reports the longest answer,
and :data:`IDLE_SOCKETS` idle sockets from one other loopback address are held open for
the whole run (issue 12, row 8: they must lock nobody out). The hostile mix covers issue 7
(framing, body caps, hostile JSON) and issue 12 (lone surrogates in paths, queries and key
IDs, a Unicode digit in an integer, over-long request and header lines, ``OPTIONS *``);
errors are also counted per case. With ``--slowloris`` it measures instead how long a
connection trickling one byte a second survives, and answers a normal request while
``--slow`` slow connections are held open.

The hostile mix also covers the outbound side (issue 12, rows 1, 2, 3, 5, 7, 14; leave it
out with ``--no-outbound``): the server under test resolves through our DNS server
(``stubserver.devtools.dns_server``), trusts the soak CA and allowlists only the hostile
key server's address and the address its SRV targets name. Notary queries (GET and POST)
and signed requests whose X-Matrix ``origin`` name servers resolving to our own host
(``127.0.0.1``, ``0.0.0.0``, ``::1``, ``::``, ``::ffff:127.0.0.1``, ``::ffff:0.0.0.0``),
an SRV name with :data:`SRV_TARGETS` targets, and key servers answering with 370
signatures, ``1e400``, a lone surrogate, a 60 KB document or 200 verify keys, and notary
queries with a far-future ``minimum_valid_until_ts``. A loopback listener counts the
connections that reach our own host (there must be none) and the key server counts the
fetches it answered. The request loops stop after ``--requests`` or ``--max-seconds``;
all traffic stays on loopback.

Rooms under attack (issue 22 rows 3, 4 and 5; ``--rooms`` runs only these, and every
soak run ends with them): in memory, on rooms a hostile member made
(``stubserver.devtools.room_attacks``), the work counted. Row 3: 10,050 displayname
changes, then ``state_ids`` answers with the whole auth chain (the count of its IDs);
row 4: 2,000 forks, then state resolutions and state maps per accepted event (0 and 0,
as with one extremity), per event we send the extremity heap entries looked at (about
20, whatever the forks), the dummy events that leave 10 or fewer extremities (105 in 2
runs), and the events one resolution visits after 50 or 10,050 earlier
displayname changes (the same few); row 5: 100 messages under ``history_visibility: joined`` and a
redaction, then what backfill serves a server that joined later (0 in full).

    .venv/bin/python scripts/soak.py --requests 1000000 --workers 8
    .venv/bin/python scripts/soak.py --slowloris --slow 500
    .venv/bin/python scripts/soak.py --rooms    # issue 22 rows 2 to 8

With ``--rooms`` it runs only the rooms cases: first those of ``scripts/soak_rooms.py`` (rows
2, 6, 7, 8: a hostile server that owns a real key for its own name, in and out of a room
the server holds); then those that cost per request (rows 1, 9 and 10), each a number of
times, against a server with a control listener, printing what each was answered, the RSS
before and after and the longest ``/version`` meanwhile: unauthenticated 8 MiB bodies on
``/send``, ``send_join``, ``send_leave`` and ``invite`` (row 1); signed transactions of
100 EDUs of 80 KB (dropped) and of 60 KB (kept, bounded) and signed invites with 100
``invite_room_state`` entries of 60 KB (row 9), from the honest peer of the outbound world;
and :data:`CONTROL_LONG_POLLS` long polls on the control API from one address (row 10);
then the in-memory cases of rows 3, 4 and 5.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from stubserver.auth.xmatrix import sign_request  # noqa: E402
from stubserver.devtools import room_attacks  # noqa: E402
from stubserver.devtools.loopback_listeners import LoopbackListeners  # noqa: E402
from stubserver.rooms.builder import EventSigner  # noqa: E402
from stubserver.rooms.create import create_room  # noqa: E402
from stubserver.rooms.membership import build_membership  # noqa: E402
from stubserver.rooms.versions import ROOM_VERSIONS  # noqa: E402
from stubserver.server_keys.key_document import build_key_document  # noqa: E402
from stubserver.signing.keys import ServerSigningKey, sign_json  # noqa: E402
from stubserver.tls.certificates import KeyPair, issue_cert, make_ca  # noqa: E402
from tests.support import StubProcess, start_stubserver, write_stub  # noqa: E402

SERVER_NAME = "soak.test"
#: Longest the request loops run by default, in seconds.
DEFAULT_MAX_SECONDS = 1800.0
#: Client socket timeout, in seconds.
CLIENT_TIMEOUT_SECONDS = 30.0
#: Memory samples taken over a run.
MEMORY_SAMPLES = 10
#: How often the prober asks /version during a run, in seconds.
PROBE_INTERVAL_SECONDS = 0.05
#: Idle sockets held open from one address during a run (issue 12, row 8).
IDLE_SOCKETS = 1024
#: The loopback address the idle sockets come from (the clients use 127.0.0.1).
IDLE_SOURCE = "127.0.0.9"
#: Longest line twisted.web reads (stubserver.server.limits.MAX_REQUEST_LINE_BYTES), in bytes.
MAX_LINE_BYTES = 16 * 1024
VERSION_REQUEST = b"GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: soak.test\r\n\r\n"

#: (request bytes, accepted statuses, connection stays open)
GOOD = [
    (VERSION_REQUEST, {200}, True),
    (b"GET /_matrix/key/v2/server HTTP/1.1\r\nHost: soak.test\r\n\r\n", {200}, True),
    (b"GET /_matrix/nothing/here HTTP/1.1\r\nHost: soak.test\r\n\r\n", {404}, True),
]


def _post(body: bytes) -> bytes:
    return (
        b"POST /_matrix/key/v2/query HTTP/1.1\r\nHost: soak.test\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )


#: (request bytes, accepted statuses, connection stays open): each must be a JSON answer
#: that is never a 500.
HOSTILE = [
    (_post(b'{"server_keys": NaN}'), {400}, True),
    (_post(b"[" * 2000), {400}, True),
    (_post(b'{"a":1,"a":2}'), {400}, True),
    (_post(b"\xff\xfe"), {400}, True),
    (
        b"POST /_matrix/key/v2/query HTTP/1.1\r\nHost: soak.test\r\nContent-Length: 70000\r\n\r\n",
        {413},
        False,
    ),
    (
        b"POST /_matrix/key/v2/query HTTP/1.1\r\nHost: soak.test\r\n"
        b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        {400},
        False,
    ),
    (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", {400}, False),
    # Issue 12, row 6: lone surrogates (path, query, key ID in a body), a Unicode digit.
    (b"GET /_matrix/key/v2/query/%ED%A0%80 HTTP/1.1\r\nHost: soak.test\r\n\r\n", {400}, True),
    (
        b"GET /_matrix/key/v2/query/soak.test?minimum_valid_until_ts=%ED%A0%80 HTTP/1.1\r\n"
        b"Host: soak.test\r\n\r\n",
        {400},
        True,
    ),
    (
        b"GET /_matrix/key/v2/query/soak.test?minimum_valid_until_ts=%C2%B2 HTTP/1.1\r\n"
        b"Host: soak.test\r\n\r\n",
        {400},
        True,
    ),
    (_post(b'{"server_keys": {"soak.test": {"ed25519:\\ud800": {}}}}'), {200, 400}, True),
    (_post(b'{"server_keys": {"soak.test\\udc00": {}}}'), {200, 400}, True),
    # Issue 12, row 15: over-long request and header lines, OPTIONS *.
    (b"GET /" + b"a" * MAX_LINE_BYTES, {414}, False),
    (
        b"GET /_matrix/federation/v1/version HTTP/1.1\r\nX-Long: " + b"a" * MAX_LINE_BYTES,
        {431},
        False,
    ),
    (b"OPTIONS * HTTP/1.1\r\nHost: soak.test\r\n\r\n", {400}, True),
]
#: Every ``HOSTILE_EVERY``-th request is hostile.
HOSTILE_EVERY = 5

# --- Hostile outbound cases (issue 12, rows 1, 2, 3, 5, 7, 14) -------------------------
#
# The server under test resolves through our DNS server (stubserver.devtools.dns_server)
# and trusts the soak CA. Its allowlist holds only PEER_ADDRESS (the hostile key server)
# and SRV_TARGET_ADDRESS (where the 100 SRV targets point, nothing listening): the names
# spelling our own host must stay blocked by the default blocklist, and a loopback
# listener on LOOPBACK_PORT counts every connection that reaches it (it must see none).

#: The hostile key server's address (allowlisted).
PEER_ADDRESS = "127.0.0.81"
#: Where the SRV name's targets point (allowlisted; nothing listens: refused at once).
SRV_TARGET_ADDRESS = "127.0.0.82"
#: The soak's DNS server.
DNS_LISTEN = "127.0.0.83:0"
#: SRV targets of SRV_NAME (issue 12, row 7).
SRV_TARGETS = 100
SRV_NAME = "srv100.test"
#: Names whose A/AAAA answer spells our own host (row 1).
LOOPBACK_ANSWERS = {
    "a-127.test": ("A", "127.0.0.1"),
    "a-0.test": ("A", "0.0.0.0"),  # noqa: S104 - a DNS answer; nothing binds it
    "aaaa-1.test": ("AAAA", "::1"),
    "aaaa-0.test": ("AAAA", "::"),
    "aaaa-m127.test": ("AAAA", "::ffff:127.0.0.1"),
    "aaaa-m0.test": ("AAAA", "::ffff:0.0.0.0"),
}
#: Signatures by other servers on the many-signatures document (row 2).
MANY_SIGNATURES = 370
#: Size of the padded key document, in bytes (row 3; under the 64 KiB response cap).
BIG_DOCUMENT_BYTES = 60 * 1024
#: Verify keys on the many-keys document (row 3).
MANY_VERIFY_KEYS = 200
#: A minimum_valid_until_ts far in the future (row 14), in ms.
FAR_FUTURE_MS = 10**15
#: Validity of the honest peer's keys, in ms: shorter than the far-future minimum, so
#: every far-future query asks for a refetch.
HONEST_VALIDITY_MS = 3600 * 1000
#: Validity of the other peers' keys, in ms.
PEER_VALIDITY_MS = 24 * 3600 * 1000
PROFILE_PATH = "/_matrix/federation/v1/query/profile?user_id=%40alice%3Asoak.test"


def _peer_documents(now_ms: int, port: int) -> tuple[dict[str, bytes], dict[str, ServerSigningKey]]:
    """The hostile key server's documents and signing keys, by bare host name.

    Each server name is ``host:port`` (the key server's port), as a document must name it.
    """
    documents: dict[str, bytes] = {}
    keys: dict[str, ServerSigningKey] = {}

    def signed(host: str, extra: dict[str, Any] | None = None, until: int = 0) -> dict[str, Any]:
        key = keys[host] = ServerSigningKey.generate("soak")
        name = f"{host}:{port}"
        doc = build_key_document(name, [key], {}, until or now_ms + PEER_VALIDITY_MS)
        if extra:
            doc = sign_json({**doc, **extra}, name, key)
        return doc

    honest = signed("honest.test", until=now_ms + HONEST_VALIDITY_MS)
    documents["honest.test"] = json.dumps(honest).encode()
    many = signed("sigs.test")
    for i in range(MANY_SIGNATURES):
        many["signatures"][f"s{i}.test"] = {"ed25519:x": "A" * 86}
    documents["sigs.test"] = json.dumps(many).encode()
    documents["inf.test"] = (
        json.dumps(signed("inf.test"))
        .encode()
        .replace(b'"valid_until_ts": ', b'"valid_until_ts": 1e400, "x": ')
    )
    surrogate = f'"server_name": "surrogate.test:{port}'.encode()
    documents["surrogate.test"] = (
        json.dumps(signed("surrogate.test")).encode().replace(surrogate, surrogate + rb"\ud800")
    )
    padding = "a" * BIG_DOCUMENT_BYTES
    documents["big.test"] = json.dumps(signed("big.test", {"padding": padding})).encode()
    extra_keys = {
        f"ed25519:k{i}": {"key": ServerSigningKey.generate(f"k{i}").verify_key_base64}
        for i in range(MANY_VERIFY_KEYS)
    }
    manykeys = signed("manykeys.test")
    manykeys = sign_json(
        {**manykeys, "verify_keys": {**manykeys["verify_keys"], **extra_keys}},
        f"manykeys.test:{port}",
        keys["manykeys.test"],
    )
    documents["manykeys.test"] = json.dumps(manykeys).encode()
    return documents, keys


def _zone(loopback_port: int, srv_port: int) -> dict[str, Any]:
    records: list[dict[str, Any]] = [
        {"name": name, "type": kind, "value": value}
        for name, (kind, value) in LOOPBACK_ANSWERS.items()
    ]
    for host in ("honest.test", "sigs.test", "inf.test", "surrogate.test", "big.test"):
        records.append({"name": host, "type": "A", "value": PEER_ADDRESS})
    records.append({"name": "manykeys.test", "type": "A", "value": PEER_ADDRESS})
    for i in range(SRV_TARGETS):
        target = f"t{i}.{SRV_NAME}"
        records.append({"name": target, "type": "A", "value": SRV_TARGET_ADDRESS})
        records.append(
            {
                "name": f"_matrix-fed._tcp.{SRV_NAME}",
                "type": "SRV",
                "priority": 10,
                "weight": 5,
                "port": srv_port,
                "target": target,
            }
        )
    return {"records": records}


def _peer(
    ca: KeyPair,
    documents: dict[str, bytes],
    listener: socket.socket,
    stop: Any,
    out: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    """The hostile key server (its own process): serve ``documents`` by Host on
    ``listener`` until ``stop``, then put the requests answered, by host, on ``out``."""
    hits: Counter[str] = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            with lock:
                hits[host] += 1
            body = documents.get(host, b'{"errcode": "M_NOT_FOUND", "error": "no"}')
            self.send_response(200 if host in documents else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with tempfile.TemporaryDirectory(prefix="stubserver-soak-peer-") as folder:
        pair = issue_cert(sorted(documents), ca)
        (Path(folder) / "peer.crt").write_bytes(pair.cert_pem)
        (Path(folder) / "peer.key").write_bytes(pair.key_pem)
        server = ThreadingHTTPServer((PEER_ADDRESS, 0), Handler, bind_and_activate=False)
        server.socket.close()
        server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(Path(folder) / "peer.crt", Path(folder) / "peer.key")
    server.socket = context.wrap_socket(listener, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stop.wait()
    server.shutdown()
    server.server_close()
    with lock:
        out.put(dict(hits))


@dataclass
class Outbound:
    """The hostile outbound world: DNS server, key server, loopback listener."""

    ca: KeyPair
    dns_address: str
    peer_port: int
    loopback_port: int
    listeners: LoopbackListeners
    keys: dict[str, ServerSigningKey]
    peer_stop: Any
    peer_out: multiprocessing.Queue  # type: ignore[type-arg]
    loopback_connections: int = 0

    def drain(self) -> int:
        """Accept (and close) what reached the loopback listener; return the total so far."""
        self.loopback_connections += self.listeners.accept_all()
        return self.loopback_connections

    def config(self, folder: Path) -> dict[str, Any]:
        """The server under test's extra settings."""
        ca_path = folder / "soak-ca.crt"
        ca_path.write_bytes(self.ca.cert_pem)
        return {
            "federation_dns_servers": [self.dns_address],
            "federation_custom_ca_list": [str(ca_path)],
            "ip_range_allowlist": [f"{PEER_ADDRESS}/32", f"{SRV_TARGET_ADDRESS}/32"],
        }

    def cases(self) -> list[tuple[str, bytes, set[int], bool]]:
        """(name, request bytes, accepted statuses, connection stays open) per case."""
        peers = [f"{h}:{self.peer_port}" for h in sorted(self.keys) if h != "honest.test"]
        loops = [f"{h}:{self.loopback_port}" for h in sorted(LOOPBACK_ANSWERS)]
        cases: list[tuple[str, bytes, set[int], bool]] = []
        for name in [*loops, *peers]:
            cases.append(
                (
                    f"notary GET {name}",
                    b"GET /_matrix/key/v2/query/%s HTTP/1.1\r\nHost: soak.test\r\n\r\n"
                    % name.encode(),
                    {200},
                    True,
                )
            )
        for group in (loops, peers):
            body = json.dumps({"server_keys": {n: {} for n in group}}).encode()
            cases.append((f"notary POST {len(group)} servers", _post(body), {200}, True))
        honest = f"honest.test:{self.peer_port}"
        cases.append(
            (
                "notary GET far-future minimum_valid_until_ts",
                b"GET /_matrix/key/v2/query/%s?minimum_valid_until_ts=%d HTTP/1.1\r\n"
                b"Host: soak.test\r\n\r\n" % (honest.encode(), FAR_FUTURE_MS),
                {200},
                True,
            )
        )
        cases.append(
            (
                "notary POST far-future minimum_valid_until_ts",
                _post(
                    json.dumps(
                        {
                            "server_keys": {
                                honest: {"ed25519:soak": {"minimum_valid_until_ts": FAR_FUTURE_MS}}
                            }
                        }
                    ).encode()
                ),
                {200},
                True,
            )
        )
        origins = [*loops, SRV_NAME, *peers]
        for origin in origins:
            host = origin.rsplit(":", 1)[0]
            key = self.keys.get(host, self.keys["honest.test"])
            auth = sign_request(
                "GET", PROFILE_PATH, origin=origin, destination=SERVER_NAME, key=key
            )
            cases.append(
                (
                    f"signed, origin {origin}",
                    b"GET %s HTTP/1.1\r\nHost: soak.test\r\nAuthorization: %s\r\n\r\n"
                    % (PROFILE_PATH.encode(), auth),
                    # big.test's document is valid (60 KB, under the cap): the request
                    # authenticates and finds no such user; every other origin fails.
                    {404} if host == "big.test" else {401},
                    True,
                )
            )
        return cases

    def peer_hits(self) -> dict[str, int]:
        """Stop the key server; the requests it answered, by host."""
        self.peer_stop.set()
        hits: dict[str, int] = self.peer_out.get(timeout=CLIENT_TIMEOUT_SECONDS)
        return hits


def _closed_port(address: str) -> int:
    """A port with nothing listening on ``address`` now."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def outbound_world(folder: Path) -> Iterator[Outbound]:
    """Start the DNS server, the hostile key server and the loopback listener."""
    ca = make_ca("stubserver soak peers CA")
    peer_listener = socket.socket()
    peer_listener.bind((PEER_ADDRESS, 0))
    peer_listener.listen(128)
    peer_port: int = peer_listener.getsockname()[1]
    documents, keys = _peer_documents(int(time.time() * 1000), peer_port)
    listeners = LoopbackListeners.open(backlog=1024)
    loopback_port = listeners.port
    out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    stop = multiprocessing.Event()
    peer = multiprocessing.Process(target=_peer, args=(ca, documents, peer_listener, stop, out))
    peer.start()
    zone = folder / "zone.json"
    zone.write_text(json.dumps(_zone(loopback_port, _closed_port(SRV_TARGET_ADDRESS))))
    dns = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stubserver.devtools.dns_server",
            "--zone",
            str(zone),
            "--listen",
            DNS_LISTEN,
        ],
        stdout=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    try:
        assert dns.stdout is not None
        dns_address = json.loads(dns.stdout.readline())["listen"][0]
        yield Outbound(ca, dns_address, peer_port, loopback_port, listeners, keys, stop, out)
    finally:
        stop.set()
        peer.join(CLIENT_TIMEOUT_SECONDS)
        dns.terminate()
        dns.wait(CLIENT_TIMEOUT_SECONDS)
        if dns.stdout is not None:
            dns.stdout.close()
        listeners.close()
        peer_listener.close()


class Connection:
    """A keep-alive TLS connection reading HTTP/1.1 responses with Content-Length."""

    def __init__(self, address: str, port: int, context: ssl.SSLContext) -> None:
        raw = socket.create_connection((address, port), timeout=CLIENT_TIMEOUT_SECONDS)
        self.sock = context.wrap_socket(raw, server_hostname=SERVER_NAME)
        self.buffer = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buffer += chunk

    def exchange(self, request: bytes) -> int:
        """Send ``request`` and return the status of its (JSON) response; ValueError if not JSON."""
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        length = 0
        json_answer = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            if name.strip().lower() == b"content-type":
                json_answer = value.strip() == b"application/json"
        if not json_answer:
            raise ValueError(f"a {status} answer that is not JSON")
        while len(self.buffer) < length:
            self._fill()
        self.buffer = self.buffer[length:]
        return status

    def close(self) -> None:
        self.sock.close()


#: One case: (name, request bytes, accepted statuses, connection stays open).
Case = tuple[str, bytes, set[int], bool]


def inbound_hostile_cases() -> list[Case]:
    """The inbound hostile mix, named by index."""
    return [(f"hostile {i}", r, a, k) for i, (r, a, k) in enumerate(HOSTILE)]


@dataclass(frozen=True)
class Target:
    """What every worker drives: the server, its CA, the hostile mix and the deadline."""

    address: str
    port: int
    ca_pem: bytes
    hostile: list[Case]
    #: time.monotonic() after which the request loops stop
    deadline: float


def _worker(target: Target, count: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Make ``count`` requests (fewer if the target's deadline passes first)."""
    address, port, hostile, deadline = target.address, target.port, target.hostile, target.deadline
    context = ssl.create_default_context(cadata=target.ca_pem.decode("ascii"))
    done = 0
    errors: Counter[str] = Counter()
    connection: Connection | None = None
    hostile_index = good_index = 0
    while done < count and time.monotonic() < deadline:
        if done % HOSTILE_EVERY == HOSTILE_EVERY - 1:
            case, request, accepted, keep = hostile[hostile_index % len(hostile)]
            hostile_index += 1
        else:
            case = f"good {good_index % len(GOOD)}"
            request, accepted, keep = GOOD[good_index % len(GOOD)]
            good_index += 1
        try:
            if connection is None:
                connection = Connection(address, port, context)
            status = connection.exchange(request)
            if status not in accepted:
                errors[f"{case}: {status}"] += 1
            if not keep:
                connection.close()
                connection = None
        except (OSError, ValueError, IndexError) as e:
            errors[f"{case}: {type(e).__name__}"] += 1
            if connection is not None:
                connection.close()
            connection = None
        done += 1
    out.put((done, dict(errors)))


def _prober(
    address: str, port: int, ca_pem: bytes, stop: threading.Event, out: list[float]
) -> None:
    """Ask /version every PROBE_INTERVAL_SECONDS until ``stop``; append each answer's time."""
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    connection: Connection | None = None
    while not stop.wait(PROBE_INTERVAL_SECONDS):
        started = time.monotonic()
        try:
            if connection is None:
                connection = Connection(address, port, context)
            connection.exchange(VERSION_REQUEST)
        except (OSError, ValueError):
            connection = None
        out.append(time.monotonic() - started)


def _hold_idle_sockets(address: str, port: int) -> tuple[list[socket.socket], int]:
    """IDLE_SOCKETS connection attempts from IDLE_SOURCE that never send a byte.

    Returns the sockets connected and how many attempts failed (the server drops those
    past its per-address cap; the kernel may then refuse a few more).
    """
    held = []
    failed = 0
    for _ in range(IDLE_SOCKETS):
        try:
            held.append(
                socket.create_connection(
                    (address, port), timeout=CLIENT_TIMEOUT_SECONDS, source_address=(IDLE_SOURCE, 0)
                )
            )
        except OSError:
            failed += 1
    return held, failed


def rss_kib(pid: int) -> int:
    """The process's resident memory, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def soak(
    stub: StubProcess,
    ca_pem: bytes,
    total: int,
    workers: int,
    *,
    max_seconds: float,
    outbound: Outbound | None,
) -> None:
    """Run ``total`` requests over ``workers`` processes (for at most ``max_seconds``);
    print counts, errors per case, memory, /version time and what reached the peers."""
    pid = stub.process.pid
    hostile = inbound_hostile_cases()
    if outbound is not None:
        hostile += outbound.cases()
    target = Target(stub.address, stub.port, ca_pem, hostile, time.monotonic() + max_seconds)
    warm_up = min(2000, total // 10)
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    _worker(target, warm_up, queue)
    warm_done, warm_errors = queue.get()
    start_rss = rss_kib(pid)
    idle, idle_failed = _hold_idle_sockets(stub.address, stub.port)
    stop = threading.Event()
    probe_times: list[float] = []
    prober = threading.Thread(
        target=_prober, args=(stub.address, stub.port, ca_pem, stop, probe_times), daemon=True
    )
    prober.start()
    started = time.monotonic()
    per_worker = (total - warm_done) // workers
    processes = [
        multiprocessing.Process(
            target=_worker,
            args=(target, per_worker, queue),
        )
        for _ in range(workers)
    ]
    for p in processes:
        p.start()
    samples = [start_rss]
    while any(p.is_alive() for p in processes):
        time.sleep(max(1.0, per_worker * workers / 4000 / MEMORY_SAMPLES))
        samples.append(rss_kib(pid))
        if outbound is not None:
            outbound.drain()
    results = [queue.get() for _ in processes]
    for p in processes:
        p.join()
    elapsed = time.monotonic() - started
    stop.set()
    prober.join()
    for sock in idle:
        sock.close()
    requests = warm_done + sum(r[0] for r in results)
    errors: Counter[str] = Counter(warm_errors)
    for _, worker_errors in results:
        errors.update(worker_errors)
    end_rss = rss_kib(pid)
    print(f"requests: {requests}")
    print(f"errors: {sum(errors.values())}")
    for case, count in sorted(errors.items()):
        print(f"  {case}: {count}")
    print(
        f"hostile share: 1 in {HOSTILE_EVERY} ({len(hostile)} hostile cases, "
        f"{len(hostile) - len(HOSTILE)} of them outbound)"
    )
    if outbound is not None:
        print(f"connections that reached our own loopback listener: {outbound.drain()}")
        hits = outbound.peer_hits()
        print(f"key fetches the hostile key server answered: {sum(hits.values())}")
        for host, count in sorted(hits.items()):
            print(f"  {host}: {count}")
    print(
        f"idle sockets from {IDLE_SOURCE}: {len(idle)} connected, {idle_failed} refused "
        f"(of {IDLE_SOCKETS}; the server keeps its per-address cap of them)"
    )
    print(f"elapsed: {elapsed:.0f} s ({(requests - warm_done) / elapsed:.0f} requests/s)")
    print(f"rss at start (after {warm_done} warm-up requests): {start_rss} KiB")
    print(f"rss at end: {end_rss} KiB")
    print(f"rss samples (KiB): {[*samples, end_rss]}")
    if probe_times:
        print(
            f"/version probes: {len(probe_times)}, longest answer "
            f"{max(probe_times) * 1000:.0f} ms, median "
            f"{sorted(probe_times)[len(probe_times) // 2] * 1000:.1f} ms"
        )


def rooms() -> None:
    """Print the issue 22 rooms cases (rows 3, 4, 5) with their counts."""
    for name, case in (
        ("row 3, auth chains", room_attacks.auth_chain_case),
        ("row 4, forward extremities", room_attacks.extremities_case),
        ("row 4, history", room_attacks.resolution_history_case),
        ("row 5, visibility", room_attacks.visibility_case),
    ):
        print(f"rooms {name}: {json.dumps(case(), sort_keys=True)}")


# --- Issue 22: what one request may cost (rows 1, 9, 10) ----------------------------------

#: Unauthenticated 8 MiB bodies sent to each of the four large-body endpoints (row 1).
UNAUTHENTICATED_PER_ENDPOINT = 5
#: Signed transactions of each EDU kind, and signed invites (row 9).
SIGNED_PER_CASE = 20
#: EDUs per transaction (the spec's cap) and invite_room_state entries per invite.
EDUS_PER_TRANSACTION = 100
#: Size of an EDU's padding dropped (over the 64 KiB bound) and kept, in bytes.
DROPPED_EDU_BYTES = 80_000
KEPT_EDU_BYTES = 60_000
#: Long polls held at once on the control API from one address (row 10).
CONTROL_LONG_POLLS = 300
CONTROL_TOKEN = "soak-control-token"  # noqa: S105 - a loopback test server's token
#: An 8 MiB body of empty objects (the largest a /send may carry).
HUGE_BODY = b'{"pdus": [' + b"{}," * (8 * 1024 * 1024 // 3 - 8) + b"{}]}"
LARGE_BODY_PATHS = [
    "/_matrix/federation/v1/send/soak",
    "/_matrix/federation/v2/send_join/!r:soak.test/$e",
    "/_matrix/federation/v2/send_leave/!r:soak.test/$e",
    "/_matrix/federation/v2/invite/!r:soak.test/$e",
]


def _put(path: str, body: bytes, auth: bytes | None = None) -> bytes:
    head = b"PUT %s HTTP/1.1\r\nHost: soak.test\r\nContent-Type: application/json\r\n" % (
        path.encode()
    )
    if auth is not None:
        head += b"Authorization: %s\r\n" % auth
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def _signed_put(path: str, content: dict[str, Any], origin: str, key: ServerSigningKey) -> bytes:
    auth = sign_request(
        "PUT", path, origin=origin, destination=SERVER_NAME, key=key, content=content
    )
    return _put(path, json.dumps(content).encode(), auth)


def _edu_transactions(origin: str, key: ServerSigningKey, size: int, tag: str) -> Iterator[bytes]:
    for n in range(SIGNED_PER_CASE):
        edus = [
            {"edu_type": "org.soak", "content": {"n": i, "padding": "e" * size}}
            for i in range(EDUS_PER_TRANSACTION)
        ]
        yield _signed_put(
            f"/_matrix/federation/v1/send/{tag}{n}", {"pdus": [], "edus": edus}, origin, key
        )


def _invites(origin: str, key: ServerSigningKey) -> Iterator[bytes]:
    signer = EventSigner(origin, key.key_id, key.key)
    version = ROOM_VERSIONS["12"]
    inviter = f"@inviter:{origin}"
    entry = {"type": "m.room.topic", "state_key": "", "content": {"topic": "s" * KEPT_EDU_BYTES}}
    state = [dict(entry, sender=f"@u{i}:{origin}") for i in range(EDUS_PER_TRANSACTION)]
    for n in range(SIGNED_PER_CASE):
        now = int(time.time() * 1000)
        created = create_room(
            version,
            signer,
            creator=inviter,
            now=now,
            rng=random.Random(n),  # noqa: S311 - room ID entropy in a test, not a secret
            preset="private_chat",
        )
        invite = build_membership(
            created.room,
            signer,
            sender=inviter,
            membership="invite",
            target=f"@invitee{n}:{SERVER_NAME}",
            now=now,
        )
        path = f"/_matrix/federation/v2/invite/{created.room.room_id}/{invite.event.event_id}"
        body = {"event": invite.pdu, "room_version": "12", "invite_room_state": state}
        yield _signed_put(path.replace("!", "%21").replace("$", "%24"), body, origin, key)


def _long_polls(address: str, port: int, count: int, results: list[int]) -> list[socket.socket]:
    """Open ``count`` long polls on the control API for the next inbound request; a thread
    per poll appends its status (0: none)."""
    request = (
        b"GET /_stubserver/v1/requests?from=%d&wait_ms=%d HTTP/1.1\r\nHost: c\r\n"
        b"Authorization: Bearer %s\r\n\r\n"
    )
    token = CONTROL_TOKEN.encode()
    with socket.create_connection((address, port), timeout=CLIENT_TIMEOUT_SECONDS) as first:
        first.sendall(request % (0, 0, token))
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += first.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += first.recv(65536)
    start = json.loads(body)["next"]
    socks = []
    for _ in range(count):
        sock = socket.create_connection((address, port), timeout=CLIENT_TIMEOUT_SECONDS)
        sock.sendall(request % (start, 60_000, token))
        socks.append(sock)

    def read(sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
            results.append(int(data.split(b" ", 2)[1]) if data else 0)
        except OSError:
            results.append(0)

    for sock in socks:
        threading.Thread(target=read, args=(sock,), daemon=True).start()
    return socks


def rooms_soak(stub: StubProcess, ca_pem: bytes, outbound: Outbound) -> None:
    """The cases of issue 22, rows 1, 9 and 10 (module doc); print what each was answered."""
    pid = stub.process.pid
    control = next(x for x in stub.listeners if "control" in x.get("resources", ["control"]))
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    origin = f"honest.test:{outbound.peer_port}"
    key = outbound.keys["honest.test"]
    statuses: dict[str, Counter[int | str]] = {}
    longest: dict[str, float] = {}
    probe_times: list[float] = []

    def run(case: str, requests: Iterator[bytes]) -> None:
        seen = statuses.setdefault(case, Counter())
        first_probe = len(probe_times)
        for request in requests:
            try:
                connection = Connection(stub.address, stub.port, context)
                seen[connection.exchange(request)] += 1
                connection.close()
            except (OSError, ValueError) as e:
                seen[type(e).__name__] += 1
        longest[case] = max(probe_times[first_probe:], default=0.0)

    start_rss = rss_kib(pid)
    stop = threading.Event()
    prober = threading.Thread(
        target=_prober, args=(stub.address, stub.port, ca_pem, stop, probe_times), daemon=True
    )
    prober.start()
    started = time.monotonic()
    for path in LARGE_BODY_PATHS:
        run(
            f"row 1: unauthenticated 8 MiB PUT {path.split('/')[4]}",
            iter([_put(path, HUGE_BODY)] * UNAUTHENTICATED_PER_ENDPOINT),
        )
    run(
        "row 9: signed /send, 100 EDUs of 80 KB",
        _edu_transactions(origin, key, DROPPED_EDU_BYTES, "d"),
    )
    run(
        "row 9: signed /send, 100 EDUs of 60 KB",
        _edu_transactions(origin, key, KEPT_EDU_BYTES, "k"),
    )
    run("row 9: signed invite, 100 state entries of 60 KB", _invites(origin, key))
    polls: list[int] = []
    try:
        socks = _long_polls(
            str(control["address"]), int(control["port"]), CONTROL_LONG_POLLS, polls
        )
    except (OSError, ValueError) as e:
        print(f"row 10: reading the request feed's position failed: {type(e).__name__}: {e}")
        socks = []
        polls = [0] * CONTROL_LONG_POLLS
    run("row 10: a request while the long polls wait", iter([VERSION_REQUEST]))
    deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS
    while len(polls) < CONTROL_LONG_POLLS and time.monotonic() < deadline:
        time.sleep(0.05)
    for sock in socks:
        sock.close()
    elapsed = time.monotonic() - started
    stop.set()
    prober.join()
    end_rss = rss_kib(pid)
    for case, seen in statuses.items():
        print(
            f"{case}: {sum(seen.values())} requests, answered {dict(seen)};"
            f" longest /version meanwhile {longest[case] * 1000:.0f} ms"
        )
    answered = Counter(polls)
    print(
        f"row 10: {CONTROL_LONG_POLLS} control long polls from one address: "
        f"answered {dict(answered)}, {CONTROL_LONG_POLLS - len(polls)} unanswered"
    )
    print(f"elapsed: {elapsed:.0f} s")
    print(f"rss before: {start_rss} KiB, after: {end_rss} KiB")
    if probe_times:
        print(
            f"/version probes: {len(probe_times)}, longest answer "
            f"{max(probe_times) * 1000:.0f} ms, median "
            f"{sorted(probe_times)[len(probe_times) // 2] * 1000:.1f} ms"
        )


def slowloris(stub: StubProcess, ca_pem: bytes, slow: int) -> None:
    """Measure a trickling connection's survival; answer requests while ``slow`` are held."""
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    request = b"GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: soak.test\r\nX-Slow: "
    held = []
    for _ in range(slow):
        raw = socket.create_connection((stub.address, stub.port), timeout=CLIENT_TIMEOUT_SECONDS)
        held.append(context.wrap_socket(raw, server_hostname=SERVER_NAME))
    for sock in held:
        sock.sendall(b"G")
    answered = 0
    for _ in range(10):
        connection = Connection(stub.address, stub.port, context)
        if connection.exchange(VERSION_REQUEST) == 200:
            answered += 1
        connection.close()
    print(f"slow connections held: {slow}; normal requests answered meanwhile: {answered}/10")
    for sock in held:
        sock.close()
    raw = socket.create_connection((stub.address, stub.port), timeout=CLIENT_TIMEOUT_SECONDS)
    sock = context.wrap_socket(raw, server_hostname=SERVER_NAME)
    opened = time.monotonic()
    sock.settimeout(1.0)
    index = 0
    answer = b""
    while True:
        try:
            sock.sendall(request[index % len(request) : index % len(request) + 1] or b"a")
        except OSError:
            break
        index += 1
        try:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
        except TimeoutError:
            continue
        except OSError:
            break
    survived = time.monotonic() - opened
    status = answer.split(b"\r\n", 1)[0].decode("ascii", "replace")
    print(f"slowloris connection survived {survived:.1f} s; server said: {status!r}")


def rooms_main() -> int:
    """``--rooms``: one server holding a room, a hostile world, the cases of
    ``scripts/soak_rooms.py``."""
    import soak_rooms  # noqa: PLC0415 - a sibling script, only for this mode

    ca = make_ca("stubserver soak CA")
    with tempfile.TemporaryDirectory(prefix="stubserver-soak-rooms-") as folder_name:
        folder = Path(folder_name)
        with soak_rooms.hostile_world(folder, ca) as (world, dns_address):
            extra = soak_rooms.rooms_config(folder, dns_address, ca)
            config = write_stub(folder, SERVER_NAME, ca, extra_config=extra)
            turns = folder / "turns.json"
            timed = ("scripts/turn_timer.py", str(turns))
            with start_stubserver(config, launcher=timed) as stub:
                soak_rooms.rooms_soak(stub, ca.cert_pem, world, rss_kib, turns)
                stderr = stub.stderr_text()
    print(
        f"server log lines with 'Unhandled' or 'Traceback': "
        f"{sum(1 for line in stderr.splitlines() if 'Unhandled' in line or 'Traceback' in line)}"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=DEFAULT_MAX_SECONDS,
        help="stop the request loops after this many seconds (default %(default)s)",
    )
    parser.add_argument(
        "--no-outbound",
        action="store_true",
        help="leave out the hostile outbound cases (no DNS server, no hostile key server)",
    )
    parser.add_argument("--slowloris", action="store_true")
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument(
        "--rooms",
        action="store_true",
        help="only the rooms cases of issue 22 (rows 2, 6, 7, 8; 1, 9, 10; then 3, 4, 5)",
    )
    args = parser.parse_args()
    status = rooms_main() if args.rooms else 0
    ca = make_ca("stubserver soak CA")
    with (
        tempfile.TemporaryDirectory(prefix="stubserver-soak-") as folder_name,
        ExitStack() as stack,
    ):
        folder = Path(folder_name)
        outbound = None
        extra: dict[str, Any] = {}
        if not (args.slowloris or args.no_outbound):
            outbound = stack.enter_context(outbound_world(folder))
            extra = outbound.config(folder)
        if args.rooms:
            extra["control_token"] = CONTROL_TOKEN
            extra["listeners"] = [
                {"port": 0, "bind_addresses": ["127.0.0.1"], "resources": ["federation"]},
                {"port": 0, "bind_addresses": ["127.0.0.1"], "resources": ["control"]},
            ]
        config = write_stub(folder, SERVER_NAME, ca, extra_config=extra)
        with start_stubserver(config) as stub:
            if args.rooms:
                assert outbound is not None, "--rooms needs the outbound world (its honest peer)"
                rooms_soak(stub, ca.cert_pem, outbound)
            elif args.slowloris:
                slowloris(stub, ca.cert_pem, args.slow)
            else:
                soak(
                    stub,
                    ca.cert_pem,
                    args.requests,
                    args.workers,
                    max_seconds=args.max_seconds,
                    outbound=outbound,
                )
            stderr = stub.stderr_text()
    if not args.slowloris:
        rooms()
    print(
        f"server log lines with 'Unhandled' or 'Traceback': "
        f"{sum(1 for line in stderr.splitlines() if 'Unhandled' in line or 'Traceback' in line)}"
    )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
