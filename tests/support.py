"""Helpers shared by the test suite: stub configs, the real ``stubserver run``, real HTTPS.

Stable API (other test modules import it; extend, do not change):

- :func:`write_stub` writes a signing key, a TLS certificate and key issued by a test
  CA (``make_ca()`` in ``stubserver.tls.certificates``) and a config into ``tmp_path``;
  returns the config path.
- :func:`start_stubserver` starts ``python -m stubserver run -c CONFIG`` and waits for
  its ready line; returns a :class:`StubProcess` (a context manager that terminates it).
- :func:`run_stubserver_cli` runs any ``stubserver`` command to completion.
- :func:`dns_server_process` runs ``python -m stubserver.devtools.dns_server`` on a zone
  (a context manager yielding its ``HOST:PORT``); :func:`named_peer` starts a
  ``stubserver.testing.Peer`` named ``HOST:PORT`` that resolves through it.
- :func:`https_request` / :func:`https_get_json` make one HTTPS request with Python's
  ``ssl`` and ``http.client``, verifying the server's certificate against the test CA
  for the given name (real verification, no bypass).
- :class:`FakeReactor`: ``MemoryReactorClock`` declared as the whole
  :class:`stubserver.reactor.IReactor`, for code typed with it.
- For in-memory unit tests of resources, typed for mypy --strict: :func:`stub_treq`
  (a ``treq.testing.StubTreq``), :func:`result_now`, :func:`failure_now` and
  :func:`has_fired` (Deferred inspection) and :func:`flush_logged_errors` (trial's).

Integration tests bind 127.0.0.x loopback addresses with port 0 so that they can run in
parallel with each other.
"""

from __future__ import annotations

import http.client
import json
import os
import selectors
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import yaml
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import IResource
from zope.interface import implementer

from stubserver.discovery.server_name import parse_server_name
from stubserver.reactor import IReactor
from stubserver.signing.keys import ServerSigningKey
from stubserver.tls.certificates import KeyPair, issue_cert

if TYPE_CHECKING:
    from stubserver.testing import Peer

_T = TypeVar("_T")

#: The repository root and its interpreter (the one running the tests).
REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
#: How long to wait for a ready line or an exit, in seconds.
DEFAULT_TIMEOUT_SECONDS = 20.0


@implementer(IReactor)
class FakeReactor(MemoryReactorClock):
    """``MemoryReactorClock`` (connections and time in memory) as an
    :class:`~stubserver.reactor.IReactor`. It has no UDP and no threads: those raise
    NotImplementedError, so a test that reaches them says so instead of hanging."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def listenUDP(
        self, port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> IListeningPort:
        raise NotImplementedError("FakeReactor has no UDP")

    def callFromThread(self, callable: Any, *args: object, **kwargs: object) -> NoReturn:
        raise NotImplementedError("FakeReactor has no threads")

    def callInThread(self, callable: Any, *args: object, **kwargs: object) -> NoReturn:
        raise NotImplementedError("FakeReactor has no threads")

    def getThreadPool(self) -> ThreadPool:
        raise NotImplementedError("FakeReactor has no threads")

    def suggestThreadPoolSize(self, size: int) -> NoReturn:
        raise NotImplementedError("FakeReactor has no threads")


class StubserverFailed(Exception):
    """``stubserver run`` exited (or timed out) before printing its ready line."""

    def __init__(self, message: str, returncode: int | None, stderr: str) -> None:
        super().__init__(f"{message} (exit status {returncode}); stderr:\n{stderr}")
        self.returncode = returncode
        self.stderr = stderr


@dataclass(frozen=True)
class StubFiles:
    """What :func:`write_stub_files` wrote."""

    config_path: Path
    signing_key: ServerSigningKey
    tls: KeyPair


def write_stub_files(
    tmp_path: Path,
    server_name: str,
    ca: KeyPair | None,
    *,
    bind: str | Sequence[str] = "127.0.0.1",
    port: int = 0,
    resources: Sequence[str] = ("federation",),
    wellknown: str | None = None,
    tls_names: Sequence[str] | None = None,
    extra_config: Mapping[str, Any] | None = None,
) -> StubFiles:
    """Like :func:`write_stub`, also returning the signing key and TLS pair it made.

    ``bind`` is one address or several; ``tls_names`` defaults to the server name's
    bare host; ``ca`` None makes a self-signed certificate. ``extra_config`` entries are
    merged into the top level of the config (replacing generated ones).
    """
    stem = server_name.replace("[", "").replace("]", "").replace(":", "_")
    folder = tmp_path / stem
    folder.mkdir(parents=True, exist_ok=True)
    signing_key = ServerSigningKey.generate("a_test")
    names = list(tls_names) if tls_names else [parse_server_name(server_name).bare_host]
    tls = issue_cert(names, ca)
    (folder / "signing.key").write_text(signing_key.to_line())
    (folder / "tls.crt").write_bytes(tls.cert_pem)
    (folder / "tls.key").write_bytes(tls.key_pem)
    os.chmod(folder / "signing.key", 0o600)
    os.chmod(folder / "tls.key", 0o600)
    binds = [bind] if isinstance(bind, str) else list(bind)
    config: dict[str, Any] = {
        "server_name": server_name,
        "signing_key_path": "signing.key",
        "tls_certificate_path": "tls.crt",
        "tls_private_key_path": "tls.key",
        "listeners": [{"port": port, "bind_addresses": binds, "resources": list(resources)}],
    }
    if wellknown is not None:
        config["serve_server_wellknown"] = wellknown
    config.update(extra_config or {})
    config_path = folder / "stubserver.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return StubFiles(config_path=config_path, signing_key=signing_key, tls=tls)


def write_stub(
    tmp_path: Path,
    server_name: str,
    ca: KeyPair | None,
    *,
    bind: str | Sequence[str] = "127.0.0.1",
    port: int = 0,
    resources: Sequence[str] = ("federation",),
    wellknown: str | None = None,
    extra_config: Mapping[str, Any] | None = None,
) -> Path:
    """Write a complete stub (key, certificate from ``ca``, config) under ``tmp_path``.

    Files go to ``tmp_path/<server name>/``; returns the config's path.
    """
    return write_stub_files(
        tmp_path,
        server_name,
        ca,
        bind=bind,
        port=port,
        resources=resources,
        wellknown=wellknown,
        extra_config=extra_config,
    ).config_path


@dataclass
class StubProcess:
    """A running ``stubserver run``: its process, its parsed ready line and its stderr."""

    process: subprocess.Popen[bytes]
    ready: dict[str, Any]
    config_path: Path
    _stderr_file: IO[bytes] = field(repr=False)

    @property
    def listeners(self) -> list[dict[str, Any]]:
        """The ready line's ``listeners`` entries."""
        listeners: list[dict[str, Any]] = self.ready["listeners"]
        return listeners

    @property
    def address(self) -> str:
        """The first listener's address."""
        return str(self.listeners[0]["address"])

    @property
    def port(self) -> int:
        """The first listener's (actual) port."""
        return int(self.listeners[0]["port"])

    def stderr_text(self) -> str:
        """Everything the process wrote to stderr so far."""
        self._stderr_file.flush()
        self._stderr_file.seek(0)
        return self._stderr_file.read().decode("utf-8", "replace")

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> int:
        """Send ``sig`` (SIGTERM) and wait for the exit; return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def __enter__(self) -> StubProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.terminate()
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
            self._stderr_file.close()


def _read_line(stream: IO[bytes], deadline: float) -> bytes | None:
    """One line from ``stream``, or None at EOF or when ``deadline`` passes."""
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                return None
            chunk = os.read(stream.fileno(), 1)
            if not chunk:
                return None
            buffer += chunk
            if chunk == b"\n":
                return buffer


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_stubserver(
    config_path: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    extra_args: Sequence[str] = (),
    sigint_ignored: bool = False,
    launcher: Sequence[str] = ("-m", "stubserver"),
) -> StubProcess:
    """Start ``python -m stubserver run -c config_path`` and wait for its ready line.

    ``sigint_ignored``: start it with SIGINT ignored, as a shell starts a background job.
    ``launcher``: what runs instead of ``-m stubserver`` (a script that wraps it, as
    ``scripts/turn_timer.py OUT``).

    Raises :class:`StubserverFailed` when it exits or stays silent for ``timeout`` s.
    """
    stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 - owned by the StubProcess
    process = subprocess.Popen(
        [PYTHON, *launcher, "run", "-c", str(config_path), *extra_args],
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        cwd=REPO_ROOT,
        preexec_fn=_ignore_sigint if sigint_ignored else None,  # noqa: PLW1509 - no threads fork here
    )
    assert process.stdout is not None
    line = _read_line(process.stdout, time.monotonic() + timeout)
    if line is None:
        if process.poll() is None:
            process.kill()
        process.wait()
        stderr_file.seek(0)
        stderr = stderr_file.read().decode("utf-8", "replace")
        process.stdout.close()
        stderr_file.close()
        raise StubserverFailed("no ready line", process.returncode, stderr)
    return StubProcess(
        process=process,
        ready=json.loads(line),
        config_path=config_path,
        _stderr_file=stderr_file,
    )


def run_stubserver_cli(
    *args: str, timeout: float = DEFAULT_TIMEOUT_SECONDS, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m stubserver ARGS`` to completion; stdout and stderr captured as text."""
    return subprocess.run(
        [PYTHON, "-m", "stubserver", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO_ROOT,
        check=False,
    )


@dataclass(frozen=True)
class HttpsResponse:
    """One HTTPS response: status, headers (lower-case names), body and peer certificate."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    peer_certificate_der: bytes | None

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def https_request(
    address: str,
    port: int,
    path: str,
    *,
    ca_pem: bytes,
    server_hostname: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> HttpsResponse:
    """One HTTPS request to ``address:port``, verifying the certificate for ``server_hostname``.

    ``ca_pem`` is the only trust root; the ``Host`` header is ``server_hostname``.
    """
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    connection = _PinnedHTTPSConnection(
        address, port, server_hostname, context=context, timeout=timeout
    )
    try:
        connection.request(
            method, path, body=body, headers={"Host": server_hostname, **(headers or {})}
        )
        response = connection.getresponse()
        data = response.read()
        sock = connection.sock
        peer = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
        return HttpsResponse(
            status=response.status,
            headers={k.lower(): v for k, v in response.getheaders()},
            body=data,
            peer_certificate_der=peer,
        )
    finally:
        connection.close()


def https_get_json(
    address: str, port: int, path: str, *, ca_pem: bytes, server_hostname: str
) -> tuple[int, Any]:
    """GET ``path`` over verified HTTPS; return the status and the JSON body."""
    response = https_request(address, port, path, ca_pem=ca_pem, server_hostname=server_hostname)
    return response.status, response.json()


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to a fixed address while verifying the certificate for another name."""

    def __init__(
        self,
        address: str,
        port: int,
        server_hostname: str,
        *,
        context: ssl.SSLContext,
        timeout: float,
    ) -> None:
        super().__init__(address, port, context=context, timeout=timeout)
        self._server_hostname = server_hostname
        self._tls_context = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls_context.wrap_socket(self.sock, server_hostname=self._server_hostname)


def stub_treq(resource: IResource) -> Any:
    """A ``treq.testing.StubTreq`` serving ``resource`` in memory (typed Any: treq is untyped)."""
    from treq.testing import StubTreq

    return StubTreq(resource)  # type: ignore[no-untyped-call]


def flush_logged_errors(
    case: SynchronousTestCase, *error_types: type[BaseException]
) -> list[Failure]:
    """Trial's ``flushLoggedErrors``, typed: the errors logged so far of these types."""
    flushed: list[Failure] = case.flushLoggedErrors(*error_types)  # type: ignore[no-untyped-call]
    return flushed


class WorkClock(Clock):
    """A clock each reading of which costs ``step`` seconds (work that takes time), whose
    :meth:`advance` is one reactor turn: it runs the calls due when it starts, not those
    they schedule (a real reactor runs a ``callLater(0)`` made in this turn in the next)."""

    def __init__(self, step: float) -> None:
        super().__init__()
        self.step = step

    def seconds(self) -> float:
        self.rightNow += self.step
        return self.rightNow

    def advance(self, amount: float) -> None:
        self.rightNow += amount
        for call in [c for c in self.calls if c.getTime() <= self.rightNow]:
            self.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)


def result_now(d: Deferred[_T]) -> _T:
    """The result of ``d``, which must already have succeeded (else AssertionError)."""
    results: list[_T] = []
    failures: list[Failure] = []
    d.addCallbacks(results.append, failures.append)
    if failures:
        failures[0].raiseException()
    assert results, "the Deferred has not fired"
    return results[0]


def failure_now(d: Deferred[Any]) -> Failure:
    """The failure of ``d``, which must already have failed; the failure is consumed."""
    failures: list[Failure] = []
    results: list[Any] = []
    d.addCallbacks(results.append, failures.append)
    assert failures, f"the Deferred has not failed (result: {results!r})"
    return failures[0]


def has_fired(d: Deferred[Any]) -> bool:
    """True when ``d`` has a result now (a Deferred waiting on another has none)."""
    fired: list[bool] = []

    def note(result: object) -> object:
        fired.append(True)
        return result

    d.addBoth(note)
    return bool(fired)


@contextmanager
def dns_server_process(
    zone_dir: Path, records: Sequence[Mapping[str, Any]], listen: str
) -> Iterator[str]:
    """Our DNS server answering ``records`` (zone JSON entries, written to
    ``zone_dir/zone.json``) at ``listen`` (``HOST:0`` picks a port); yields its ``HOST:PORT``
    and stops it on exit."""
    zone = zone_dir / "zone.json"
    zone.write_text(json.dumps({"records": list(records)}))
    process = subprocess.Popen(
        [PYTHON, "-m", "stubserver.devtools.dns_server", "--zone", str(zone), "--listen", listen],
        stdout=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        yield str(ready["listen"][0])
    finally:
        process.terminate()
        process.wait(DEFAULT_TIMEOUT_SECONDS)
        if process.stdout is not None:
            process.stdout.close()


def a_and_b_records(address_a: str, address_b: str) -> list[dict[str, str]]:
    """The zone of two named peers: A records ``a.test`` and ``b.test``."""
    return [
        {"name": "a.test", "type": "A", "value": address_a},
        {"name": "b.test", "type": "A", "value": address_b},
    ]


#: What named peers may dial (the blocklist's loopback exception).
LOOPBACK_RANGE = "127.0.0.0/8"


def named_peer(directory: Path, host: str, address: str, dns: str, **kwargs: Any) -> Peer:
    """A ``stubserver.testing.Peer`` named ``host:<free port>`` on ``address``, resolving
    with the DNS server ``dns`` and allowed to dial loopback; ``kwargs`` go to
    ``Peer.start``."""
    from stubserver.testing import Peer, free_port

    return Peer.start(
        directory,
        server_name=f"{host}:{free_port(address)}",
        bind=address,
        dns_servers=[dns],
        allow_ips=[LOOPBACK_RANGE],
        **kwargs,
    )
