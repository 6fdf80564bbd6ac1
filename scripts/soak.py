"""Soak run (issue 7, outside CI): many requests, good and hostile mixed, against one process.

Starts one ``stubserver run`` on loopback (a stub made in a temporary folder with its own
CA), drives it from several client processes over keep-alive TLS, samples the server's
resident memory (VmRSS) as it goes and prints the request count, the error count and the
memory at start and end. With ``--slowloris`` it measures instead how long a connection
trickling one byte a second survives, and answers a normal request while ``--slow``
slow connections are held open.

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
import time
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

GOOD = [
    (b"GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: soak.test\r\n\r\n", 200, True),
    (b"GET /_matrix/key/v2/server HTTP/1.1\r\nHost: soak.test\r\n\r\n", 200, True),
    (b"GET /_matrix/nothing/here HTTP/1.1\r\nHost: soak.test\r\n\r\n", 404, True),
]


def _post(body: bytes) -> bytes:
    return (
        b"POST /_matrix/key/v2/query HTTP/1.1\r\nHost: soak.test\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )


#: (request bytes, expected status, connection stays open)
HOSTILE = [
    (_post(b'{"server_keys": NaN}'), 400, True),
    (_post(b"[" * 2000), 400, True),
    (_post(b'{"a":1,"a":2}'), 400, True),
    (_post(b"\xff\xfe"), 400, True),
    (
        b"POST /_matrix/key/v2/query HTTP/1.1\r\nHost: soak.test\r\nContent-Length: 70000\r\n\r\n",
        413,
        False,
    ),
    (
        b"POST /_matrix/key/v2/query HTTP/1.1\r\nHost: soak.test\r\n"
        b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        400,
        False,
    ),
    (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, False),
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
        """Send ``request`` and return the status of its response."""
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length:
            self._fill()
        self.buffer = self.buffer[length:]
        return status

    def close(self) -> None:
        self.sock.close()


def _worker(address: str, port: int, ca_pem: bytes, count: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    done = errors = 0
    connection: Connection | None = None
    hostile_index = good_index = 0
    while done < count:
        if done % HOSTILE_EVERY == HOSTILE_EVERY - 1:
            request, expected, keep = HOSTILE[hostile_index % len(HOSTILE)]
            hostile_index += 1
        else:
            request, expected, keep = GOOD[good_index % len(GOOD)]
            good_index += 1
        try:
            if connection is None:
                connection = Connection(address, port, context)
            status = connection.exchange(request)
            if status != expected:
                errors += 1
            if not keep:
                connection.close()
                connection = None
        except (OSError, ValueError, IndexError):
            errors += 1
            if connection is not None:
                connection.close()
            connection = None
        done += 1
    out.put((done, errors))


def rss_kib(pid: int) -> int:
    """The process's resident memory, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def soak(stub: StubProcess, ca_pem: bytes, total: int, workers: int) -> None:
    """Run ``total`` requests over ``workers`` processes; print counts and memory."""
    pid = stub.process.pid
    warm_up = 2000
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    _worker(stub.address, stub.port, ca_pem, warm_up, queue)
    warm_done, warm_errors = queue.get()
    start_rss = rss_kib(pid)
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
    requests = warm_done + sum(r[0] for r in results)
    errors = warm_errors + sum(r[1] for r in results)
    end_rss = rss_kib(pid)
    print(f"requests: {requests}")
    print(f"errors: {errors}")
    print(f"hostile share: 1 in {HOSTILE_EVERY}")
    print(f"elapsed: {elapsed:.0f} s ({(requests - warm_done) / elapsed:.0f} requests/s)")
    print(f"rss at start (after {warm_done} warm-up requests): {start_rss} KiB")
    print(f"rss at end: {end_rss} KiB")
    print(f"rss samples (KiB): {[*samples, end_rss]}")


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
        if connection.exchange(GOOD[0][0]) == 200:
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
