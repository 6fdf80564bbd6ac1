"""The rooms part of the soak run (issue 22 rows 2, 6, 7, 8): ``soak.py --rooms``.

One ``stubserver run`` holds a public room its user created (control API). A hostile
world on loopback (:class:`World`: one HTTPS server for every hostile name, a DNS server
pointing the names at it) plays servers that own real signing keys for their own names:

* ``evil.test`` joins the room (make_join, send_join) and is a member;
* ``outsider.test`` is not in the room;
* ``victim.test`` is a third server whose key requests are counted.

Cases, each with what it should cost (the world counts every request it gets):

* row 2: ``outsider.test`` sends transactions of 50 PDUs of ~63 KB of small JSON objects:
  dropped before parsing (0 events stored, 0 key fetches toward it);
* row 8: ``evil.test`` sends transactions of 50 rejected PDUs of ~63 KB (power levels it
  may not change): each kept without content; our own send still answers 200;
* row 6: ``evil.test`` sends transactions of 25 PDUs naming 25 unknown key IDs of
  ``victim.test``: at most 1 key request toward victim.test per minute;
* row 7: ``evil.test`` sends transactions of 50 PDUs with unknown prev_events, and
  answers get_missing_events with nothing: 1 request toward evil.test per transaction.

The run prints per case the requests the world got, the server's RSS before and after,
and the longest ``/version`` answer during each case and during the rooms cases.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from stubserver.auth.xmatrix import sign_request  # noqa: E402
from stubserver.rooms.builder import EventSigner  # noqa: E402
from stubserver.rooms.hashes import compute_event_id  # noqa: E402
from stubserver.rooms.membership import fill_template  # noqa: E402
from stubserver.rooms.signing import sign_event  # noqa: E402
from stubserver.rooms.versions import ROOM_VERSIONS  # noqa: E402
from stubserver.server_keys.key_document import build_key_document  # noqa: E402
from stubserver.signing.keys import ServerSigningKey  # noqa: E402
from stubserver.tls.certificates import KeyPair, issue_cert  # noqa: E402
from tests.support import dns_server_process  # noqa: E402

SERVER_NAME = "soak.test"
#: The hostile world's address (allowlisted in the server under test).
WORLD_ADDRESS = "127.0.0.84"
DNS_LISTEN = "127.0.0.85:0"
HOSTILE_NAMES = ("evil.test", "outsider.test", "victim.test")
CLIENT_TIMEOUT_SECONDS = 60.0
#: Transactions sent per case.
TRANSACTIONS_PER_CASE = 3
#: Small JSON objects per big PDU (``{}`` is 3 bytes with its comma: ~63 KB).
SMALL_OBJECTS_PER_PDU = 20_500
PROBE_INTERVAL_SECONDS = 0.05
VERSION_PATH = "/_matrix/federation/v1/version"


@dataclass
class World:
    """The hostile servers: keys, names with the world's port, and what they were asked."""

    port: int
    keys: dict[str, ServerSigningKey]
    hits: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def name(self, host: str) -> str:
        return f"{host}:{self.port}"

    def count(self, host: str, kind: str) -> int:
        with self.lock:
            return self.hits[f"{host} {kind}"]


def _handler(world: World, documents: dict[str, bytes]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _kind(self) -> tuple[str, str]:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            path = self.path.split("?", 1)[0]
            kind = path.split("/")[4] if path.startswith("/_matrix/federation/") else path
            if path.startswith("/_matrix/key/"):
                kind = "keys"
            with world.lock:
                world.hits[f"{host} {kind}"] += 1
            return host, kind

        def do_GET(self) -> None:
            host, kind = self._kind()
            if kind == "keys" and host in documents:
                self._answer(200, documents[host])
            else:
                self._answer(404, b'{"errcode": "M_NOT_FOUND", "error": "no"}')

        def do_POST(self) -> None:
            _, kind = self._kind()
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            # get_missing_events: nothing divulged.
            self._answer(200, b'{"events": []}' if kind == "get_missing_events" else b"{}")

        def do_PUT(self) -> None:
            self._kind()
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer(200, b'{"pdus": {}}')

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def hostile_world(folder: Path, ca: KeyPair) -> Iterator[tuple[World, str]]:
    """The world's HTTPS server and DNS server; yields the world and the DNS address."""
    listener = socket.socket()
    listener.bind((WORLD_ADDRESS, 0))
    listener.listen(128)
    port: int = listener.getsockname()[1]
    world = World(port, {h: ServerSigningKey.generate("soak") for h in HOSTILE_NAMES})
    until = int(time.time() * 1000) + 24 * 3600 * 1000
    documents = {
        h: json.dumps(build_key_document(world.name(h), [k], {}, until)).encode()
        for h, k in world.keys.items()
    }
    pair = issue_cert(list(HOSTILE_NAMES), ca)
    (folder / "world.crt").write_bytes(pair.cert_pem)
    (folder / "world.key").write_bytes(pair.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "world.crt", folder / "world.key")
    server = ThreadingHTTPServer((WORLD_ADDRESS, 0), _handler(world, documents), False)
    server.socket.close()
    server.daemon_threads = True
    server.socket = context.wrap_socket(listener, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    records = [{"name": h, "type": "A", "value": WORLD_ADDRESS} for h in HOSTILE_NAMES]
    dns_folder = folder / "rooms-dns"
    dns_folder.mkdir()
    try:
        with dns_server_process(dns_folder, records, DNS_LISTEN) as dns_address:
            yield world, dns_address
    finally:
        server.shutdown()
        server.server_close()


def rooms_config(folder: Path, world_dns: str, ca: KeyPair) -> dict[str, Any]:
    """The server under test's extra settings: a control listener, the world's DNS and CA
    (the federation listener takes the top-level certificate)."""
    ca_path = folder / "rooms-ca.crt"
    ca_path.write_bytes(ca.cert_pem)
    return {
        "listeners": [
            {"port": 0, "bind_addresses": ["127.0.0.1"], "resources": ["federation"]},
            {"port": 0, "bind_addresses": ["127.0.0.1"], "resources": ["control"]},
        ],
        "control_token": CONTROL_TOKEN,
        "federation_dns_servers": [world_dns],
        "federation_custom_ca_list": [str(ca_path)],
        "ip_range_allowlist": [f"{WORLD_ADDRESS}/32"],
    }


CONTROL_TOKEN = secrets.token_urlsafe(16)


def _client_context(ca_pem: bytes) -> ssl.SSLContext:
    """Trusts the soak CA; the certificate names soak.test and we dial its address."""
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    context.check_hostname = False
    return context


@dataclass
class Server:
    """The server under test's two listeners."""

    address: str
    port: int
    control_port: int
    ca_pem: bytes

    def federation(
        self, method: str, path: str, origin: str, key: ServerSigningKey, body: Any = None
    ) -> tuple[int, Any]:
        """A request signed by ``origin`` (X-Matrix)."""
        auth = sign_request(
            method, path, origin=origin, destination=SERVER_NAME, key=key, content=body
        )
        context = _client_context(self.ca_pem)
        connection = http.client.HTTPSConnection(
            self.address, self.port, context=context, timeout=CLIENT_TIMEOUT_SECONDS
        )
        headers = {"Authorization": auth.decode(), "Host": SERVER_NAME}
        return _json_exchange(connection, method, path, headers, body, content_type=True)

    def control(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection(
            self.address, self.control_port, timeout=CLIENT_TIMEOUT_SECONDS
        )
        headers = {"Authorization": f"Bearer {CONTROL_TOKEN}"}
        return _json_exchange(connection, method, path, headers, body, content_type=False)


def _json_exchange(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    headers: dict[str, str],
    body: Any,
    *,
    content_type: bool,
) -> tuple[int, Any]:
    """One request with ``body`` as JSON (``Content-Type`` named when ``content_type``);
    the status and the JSON answer (None when empty). The connection is closed."""
    data = None if body is None else json.dumps(body).encode()
    if data is not None and content_type:
        headers = {**headers, "Content-Type": "application/json"}
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def _server_of(stub: Any, ca_pem: bytes) -> Server:
    listeners = stub.listeners
    fed = next(entry for entry in listeners if "federation" in entry["resources"])
    control = next(entry for entry in listeners if "control" in entry["resources"])
    return Server(str(fed["address"]), int(fed["port"]), int(control["port"]), ca_pem)


def _prober(server: Server, stop: threading.Event, out: list[float]) -> None:
    context = _client_context(server.ca_pem)
    while not stop.wait(PROBE_INTERVAL_SECONDS):
        started = time.monotonic()
        connection = http.client.HTTPSConnection(
            server.address, server.port, context=context, timeout=CLIENT_TIMEOUT_SECONDS
        )
        try:
            connection.request("GET", VERSION_PATH, headers={"Host": SERVER_NAME})
            connection.getresponse().read()
        except OSError:
            pass
        finally:
            connection.close()
        out.append(time.monotonic() - started)


class Room:
    """The room under test, as the hostile servers build on it."""

    def __init__(self, server: Server, world: World, room_id: str) -> None:
        self.server = server
        self.world = world
        self.room_id = room_id
        self.version = ROOM_VERSIONS["12"]
        self._txn = 0
        self.state_cache: tuple[dict[tuple[str, str], str], list[str], int] = ({}, [], 0)

    def state(self) -> tuple[dict[tuple[str, str], str], list[str], int]:
        """Current state IDs, forward extremities and their greatest depth."""
        status, answer = self.server.control("GET", f"/_stubserver/v1/rooms/{quote(self.room_id)}")
        assert status == 200, answer
        state = {}
        for pdu in answer["state"]:
            state[(pdu["type"], pdu["state_key"])] = compute_event_id(pdu, self.version)
        return state, list(answer["forward_extremities"]), max(p["depth"] for p in answer["state"])

    def pdu(
        self,
        host: str,
        user: str,
        event_type: str,
        content: dict[str, Any],
        *,
        state_key: str | None = None,
        prev: list[str] | None = None,
        signer_host: str | None = None,
    ) -> dict[str, Any]:
        """A signed PDU of ``user`` built on the current extremities (or ``prev``)."""
        state, extremities, depth = self.state_cache
        auth = [state[("m.room.power_levels", "")]]
        member = state.get(("m.room.member", user))
        if member is not None:
            auth.append(member)
        pdu: dict[str, Any] = {
            "type": event_type,
            "room_id": self.room_id,
            "sender": user,
            "content": content,
            "depth": depth + 1,
            "prev_events": prev if prev is not None else extremities,
            "auth_events": auth,
            "origin_server_ts": int(time.time() * 1000),
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        key = self.world.keys[signer_host or host]
        return sign_event(pdu, self.version, self.world.name(host), key.key_id, key.key)

    def refresh(self) -> None:
        self.state_cache = self.state()

    def send(self, host: str, pdus: list[dict[str, Any]]) -> int:
        self._txn += 1
        origin = self.world.name(host)
        body = {"origin": origin, "origin_server_ts": int(time.time() * 1000), "pdus": pdus}
        status, answer = self.server.federation(
            "PUT",
            f"/_matrix/federation/v1/send/soak{self._txn}",
            origin,
            self.world.keys[host],
            body,
        )
        results = answer.get("pdus", {}) if isinstance(answer, dict) else {}
        errors = Counter(str(r.get("error"))[:80] for r in results.values() if r)
        print(f"  /send from {host}: {status}, {len(results)} PDUs answered, errors {dict(errors)}")
        return status

    def stored(self, origin: str) -> list[dict[str, Any]]:
        """The room's events from ``origin`` (control API)."""
        status, answer = self.server.control(
            "GET", f"/_stubserver/v1/rooms/{quote(self.room_id)}/events?from=0"
        )
        assert status == 200, answer
        return [e for e in answer["events"] if e["origin"] == origin]


def _join(server: Server, world: World, room_id: str) -> None:
    evil = world.name("evil.test")
    user = f"@mallory:{evil}"
    path = f"/_matrix/federation/v1/make_join/{quote(room_id)}/{quote(user)}?ver=12"
    status, answer = server.federation("GET", path, evil, world.keys["evil.test"])
    assert status == 200, answer
    key = world.keys["evil.test"]
    built = fill_template(
        answer["event"],
        ROOM_VERSIONS["12"],
        EventSigner(evil, key.key_id, key.key),
        user_id=user,
        membership="join",
        now=int(time.time() * 1000),
    )
    path = f"/_matrix/federation/v2/send_join/{quote(room_id)}/{quote(built.event.event_id)}"
    status, answer = server.federation("PUT", path, evil, key, built.pdu)
    assert status == 200, answer


def _small_objects() -> dict[str, Any]:
    return {"body": "x", "objects": [{} for _ in range(SMALL_OBJECTS_PER_PDU)]}


def _longest(probes: list[float], first: int) -> str:
    """The longest ``/version`` answer among ``probes[first:]`` (one case's), as text."""
    return f", longest /version meanwhile {max(probes[first:], default=0.0) * 1000:.0f} ms"


def _longest_turn(pid: int, turns: Path | None) -> str:
    """The longest reactor turn since the last call, as text, when the server runs under
    ``scripts/turn_timer.py`` writing ``turns`` (SIGUSR2 asks for the dump)."""
    if turns is None:
        return ""
    turns.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS
    while not turns.exists():
        if time.monotonic() > deadline:
            return "; no reactor turn dump"
        time.sleep(0.02)
    dump = json.loads(turns.read_text())
    if not dump["longest"]:
        return "; no reactor turn"
    top = dump["longest"][0]
    where = ", ".join(f"{name} x{count}" for name, count in top["samples"].items())
    return (
        f"; longest of {dump['turns']} reactor turns {top['wall_ms']:.0f} ms"
        f" (CPU {top['cpu_ms']:.0f} ms, GC {top['gc_ms']:.0f} ms, longest GC"
        f" {top['longest_gc_ms']:.0f} ms; CPU samples: {where or 'none'})"
    )


def rooms_soak(
    stub: Any, ca_pem: bytes, world: World, rss_kib: Any, turns: Path | None = None
) -> None:
    """Run the four cases; print what each cost (with ``turns``, the longest reactor turn
    of each: ``_longest_turn``)."""
    server = _server_of(stub, ca_pem)
    pid = stub.process.pid
    status, created = server.control(
        "POST",
        "/_stubserver/v1/rooms",
        {"creator": f"@alice:{SERVER_NAME}", "preset": "public_chat", "room_version": "12"},
    )
    assert status == 200, created
    room_id = created["room_id"]
    _join(server, world, room_id)
    room = Room(server, world, room_id)
    stop = threading.Event()
    probes: list[float] = []
    prober = threading.Thread(target=_prober, args=(server, stop, probes), daemon=True)
    prober.start()
    start_rss = rss_kib(pid)
    print(f"rooms: rss at start {start_rss} KiB")
    evil, outsider, victim = (world.name(h) for h in HOSTILE_NAMES)

    # Row 2: a server outside the room.
    room.refresh()
    _longest_turn(pid, turns)
    first_probe = len(probes)
    before = rss_kib(pid)
    for _ in range(TRANSACTIONS_PER_CASE):
        pdus = [
            room.pdu("outsider.test", f"@o:{outsider}", "m.room.message", _small_objects())
            for _ in range(50)
        ]
        room.send("outsider.test", pdus)
    kept = room.stored(outsider)
    print(
        f"row 2 (outsider, {TRANSACTIONS_PER_CASE} x 50 PDUs of ~63 KB): stored {len(kept)}, "
        f"key requests toward it {world.count('outsider.test', 'keys')}, "
        f"rss {before} -> {rss_kib(pid)} KiB{_longest(probes, first_probe)}"
        f"{_longest_turn(pid, turns)}"
    )

    # Row 8: a member's rejected events.
    room.refresh()
    _longest_turn(pid, turns)
    first_probe = len(probes)
    before = rss_kib(pid)
    for n in range(TRANSACTIONS_PER_CASE):
        pdus = [
            room.pdu(
                "evil.test",
                f"@mallory:{evil}",
                "m.room.power_levels",
                {**_small_objects(), "n": n * 50 + i},
                state_key="",
            )
            for i in range(50)
        ]
        room.send("evil.test", pdus)
    rejected = [e for e in room.stored(evil) if e["outcome"] == "rejected"]
    biggest = max((len(json.dumps(e["pdu"])) for e in rejected), default=0)
    status, _ = server.control(
        "POST",
        f"/_stubserver/v1/rooms/{quote(room_id)}/send",
        {"sender": f"@alice:{SERVER_NAME}", "type": "m.room.message", "content": {"body": "ours"}},
    )
    print(
        f"row 8 (member's rejected, {TRANSACTIONS_PER_CASE} x 50 PDUs of ~63 KB): "
        f"{len(rejected)} rejected kept, largest kept PDU {biggest} bytes, our send after: "
        f"{status}, rss {before} -> {rss_kib(pid)} KiB{_longest(probes, first_probe)}"
        f"{_longest_turn(pid, turns)}"
    )

    # Row 6: unknown key IDs of a third server.
    room.refresh()
    first_probe = len(probes)
    for n in range(TRANSACTIONS_PER_CASE):
        pdus = []
        for i in range(25):
            pdu = room.pdu("victim.test", f"@v:{victim}", "m.room.message", {"body": f"{n}.{i}"})
            pdu["signatures"] = {victim: {f"ed25519:made_up_{n}_{i}": "A" * 86}}
            pdus.append(pdu)
        room.send("evil.test", pdus)
    print(
        f"row 6 ({TRANSACTIONS_PER_CASE} x 25 PDUs naming unknown key IDs of victim.test): "
        f"key requests toward victim.test {world.count('victim.test', 'keys')}"
        f"{_longest(probes, first_probe)}"
    )

    # Row 7: unknown prev_events, an origin that divulges nothing.
    room.refresh()
    first_probe = len(probes)
    asked_before = sum(
        world.count("evil.test", kind)
        for kind in ("get_missing_events", "state_ids", "event", "event_auth")
    )
    for n in range(TRANSACTIONS_PER_CASE):
        pdus = [
            room.pdu(
                "evil.test",
                f"@mallory:{evil}",
                "m.room.message",
                {"body": f"{n}.{i}"},
                prev=[f"${secrets.token_urlsafe(32)}"],
            )
            for i in range(50)
        ]
        room.send("evil.test", pdus)
    deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS
    while (
        time.monotonic() < deadline
        and world.count("evil.test", "get_missing_events") < TRANSACTIONS_PER_CASE
    ):
        time.sleep(0.1)
    time.sleep(1.0)
    asked = (
        sum(
            world.count("evil.test", kind)
            for kind in ("get_missing_events", "state_ids", "event", "event_auth")
        )
        - asked_before
    )
    print(
        f"row 7 ({TRANSACTIONS_PER_CASE} x 50 PDUs with unknown prev_events): "
        f"requests toward evil.test {asked} ({asked / TRANSACTIONS_PER_CASE:.1f} per /send)"
        f"{_longest(probes, first_probe)}"
    )
    stop.set()
    prober.join()
    print(f"rooms: rss at end {rss_kib(pid)} KiB (start {start_rss} KiB)")
    if probes:
        print(f"rooms: /version probes {len(probes)}, longest {max(probes) * 1000:.0f} ms")
