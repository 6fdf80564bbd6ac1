"""Outbound against broken peers, over real sockets: each is bounded, others are unaffected.

One process (a real reactor, the real agent and key fetcher) fetches keys concurrently
from a healthy stubserver and from three broken peers on loopback:

* a peer whose listen queue is full, so SYNs are never answered;
* a peer that accepts TCP and then sends nothing;
* a TLS peer that sends headers and then trickles its body one byte a second.

Every broken fetch must end with a "timed out" error at the key-fetch deadline, and the
healthy fetch must have finished before any of them: a stuck peer does not hold others up.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stubserver.outbound.agent import CONNECT_TIMEOUT_SECONDS
from stubserver.server_keys.fetcher import KEY_FETCH_TIMEOUT_SECONDS
from stubserver.tls.certificates import KeyPair, issue_cert, make_ca
from tests.support import start_stubserver, write_stub

pytestmark = pytest.mark.integration

HEALTHY = "127.0.0.71"
NO_SYN = "127.0.0.72"
SILENT = "127.0.0.73"
TRICKLE = "127.0.0.74"
TRICKLE_INTERVAL_SECONDS = 1.0
#: Generous bound on the helper process: the deadline plus start-up, never a measurement.
HELPER_TIMEOUT_SECONDS = 60

Handler = Callable[[socket.socket, threading.Event], None]

FETCH_CONCURRENTLY = """
import json, sys
from pathlib import Path
from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList
from stubserver.outbound.build import build_federation_client
from stubserver.config import FederationSettings

ca, names = sys.argv[1], sys.argv[2:]
order = []

async def main(reactor):
    settings = FederationSettings(ca_files=(Path(ca),), ip_range_allowlist=("127.0.0.0/8",))
    context = build_federation_client(reactor, settings)
    results = {}

    async def one(name):
        try:
            await context.key_fetcher.fetch(name)
            results[name] = None
        except Exception as e:
            results[name] = str(e)
        order.append(name)

    await DeferredList([Deferred.fromCoroutine(one(n)) for n in names])
    print(json.dumps({"errors": results, "finished_in_order": order}))

task.react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
"""


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


def _no_syn_peer() -> Iterator[int]:
    """A listener whose accept queue is full: further SYNs are dropped, connects hang."""
    listener = socket.socket()
    listener.bind((NO_SYN, 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex((NO_SYN, port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for s in [*fillers, listener]:
            s.close()


def _serve(listener: socket.socket, handle: Handler, stop: threading.Event) -> None:
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        threading.Thread(target=handle, args=(conn, stop), daemon=True).start()


def _silent(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait()
    conn.close()


def _trickle_handler(tls: KeyPair, tmp: Path) -> Handler:
    (tmp / "trickle.crt").write_bytes(tls.cert_pem)
    (tmp / "trickle.key").write_bytes(tls.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp / "trickle.crt", tmp / "trickle.key")

    def handle(conn: socket.socket, stop: threading.Event) -> None:
        try:
            with context.wrap_socket(conn, server_side=True) as tls_conn:
                tls_conn.recv(65536)
                tls_conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000\r\n\r\n{"
                )
                while not stop.wait(TRICKLE_INTERVAL_SECONDS):
                    tls_conn.sendall(b" ")
        except OSError:
            return

    return handle


def test_broken_peers_are_bounded_and_do_not_delay_others(tmp_path: Path) -> None:
    """No-SYN, silent and trickling peers time out at the deadline; a healthy one answers first."""
    ca = make_ca()
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    healthy_port = _free_port(HEALTHY)
    healthy_name = f"{HEALTHY}:{healthy_port}"
    config = write_stub(tmp_path, healthy_name, ca, bind=HEALTHY, port=healthy_port)

    stop = threading.Event()
    silent = socket.socket()
    silent.bind((SILENT, 0))
    silent.listen(8)
    trickle = socket.socket()
    trickle.bind((TRICKLE, 0))
    trickle.listen(8)
    threads = [
        threading.Thread(target=_serve, args=(silent, _silent, stop), daemon=True),
        threading.Thread(
            target=_serve,
            args=(trickle, _trickle_handler(issue_cert([TRICKLE], ca), tmp_path), stop),
            daemon=True,
        ),
    ]
    for t in threads:
        t.start()
    no_syn = _no_syn_peer()
    no_syn_port = next(no_syn)
    names = {
        "no_syn": f"{NO_SYN}:{no_syn_port}",
        "silent": f"{SILENT}:{silent.getsockname()[1]}",
        "trickle": f"{TRICKLE}:{trickle.getsockname()[1]}",
        "healthy": healthy_name,
    }
    try:
        with start_stubserver(config):
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    FETCH_CONCURRENTLY,
                    str(tmp_path / "ca.crt"),
                    *names.values(),
                ],
                capture_output=True,
                text=True,
                timeout=HELPER_TIMEOUT_SECONDS,
                check=False,
            )
    finally:
        stop.set()
        silent.close()
        trickle.close()
        next(no_syn, None)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    errors = result["errors"]
    assert errors[names["healthy"]] is None
    # The unanswered SYN meets the connect timeout (same 10 s) before the fetch deadline.
    assert CONNECT_TIMEOUT_SECONDS == KEY_FETCH_TIMEOUT_SECONDS
    assert errors[names["no_syn"]].endswith(
        "cannot connect to " + names["no_syn"] + ": " + names["no_syn"] + ": timed out"
    )
    for kind in ("silent", "trickle"):
        error = errors[names[kind]]
        assert f"timed out after {KEY_FETCH_TIMEOUT_SECONDS:g} s" in error, (kind, error)
    assert result["finished_in_order"][0] == names["healthy"]
