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

    .venv/bin/python scripts/soak.py --requests 1000000 --workers 8
    .venv/bin/python scripts/soak.py --slowloris --slow 500
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from stubserver.tls.certificates import make_ca  # noqa: E402
from tests.support import StubProcess, start_stubserver, write_stub  # noqa: E402

SERVER_NAME = "soak.test"
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


def _worker(address: str, port: int, ca_pem: bytes, count: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    done = 0
    errors: Counter[str] = Counter()
    connection: Connection | None = None
    hostile_index = good_index = 0
    while done < count:
        if done % HOSTILE_EVERY == HOSTILE_EVERY - 1:
            case = f"hostile {hostile_index % len(HOSTILE)}"
            request, accepted, keep = HOSTILE[hostile_index % len(HOSTILE)]
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


def soak(stub: StubProcess, ca_pem: bytes, total: int, workers: int) -> None:
    """Run ``total`` requests over ``workers`` processes; print counts, memory, /version time."""
    pid = stub.process.pid
    warm_up = min(2000, total // 10)
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    _worker(stub.address, stub.port, ca_pem, warm_up, queue)
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
            target=_worker, args=(stub.address, stub.port, ca_pem, per_worker, queue)
        )
        for _ in range(workers)
    ]
    for p in processes:
        p.start()
    samples = [start_rss]
    while any(p.is_alive() for p in processes):
        time.sleep(max(1.0, per_worker * workers / 4000 / MEMORY_SAMPLES))
        samples.append(rss_kib(pid))
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
    print(f"hostile share: 1 in {HOSTILE_EVERY} ({len(HOSTILE)} hostile cases)")
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--slowloris", action="store_true")
    parser.add_argument("--slow", type=int, default=500)
    args = parser.parse_args()
    ca = make_ca("stubserver soak CA")
    with tempfile.TemporaryDirectory(prefix="stubserver-soak-") as folder:
        config = write_stub(Path(folder), SERVER_NAME, ca)
        with start_stubserver(config) as stub:
            if args.slowloris:
                slowloris(stub, ca.cert_pem, args.slow)
            else:
                soak(stub, ca.cert_pem, args.requests, args.workers)
            stderr = stub.stderr_text()
    print(
        f"server log lines with 'Unhandled' or 'Traceback': "
        f"{sum(1 for line in stderr.splitlines() if 'Unhandled' in line or 'Traceback' in line)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
