"""The real-homeserver interop environment: a network namespace with its own DNS, stubs and
Synapse (here) or Dendrite (tests/interop/dendrite.py, on the same :func:`stub_world`).

Everything of the environment runs inside one Linux network namespace (``ip netns``), so
that Synapse, the stubservers and the DNS server share a private loopback (all of
127.0.0.0/8 is local on ``lo``) and a private ``resolv.conf`` pointing at the tests' own
DNS server. Synapse therefore finds the stubs exactly as it finds any homeserver: through
``.well-known`` on port 443, ``_matrix-fed._tcp`` SRV records and port 8448, with
certificates from the tests' CA.

The process that drives the environment (pytest, a benchmark) stays outside the
namespace and reaches in through subprocesses run with ``ip netns exec``:
:meth:`NetworkNamespace.run` for the stubserver CLI, :func:`http_request` for plain HTTPS
calls (this module run as a program inside the namespace is the client).

Nothing here imports pytest; tests/interop/conftest.py turns :class:`EnvironmentUnavailable`
into a skip. Used by the interop tests and, later, by the ``check`` tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import hmac
import http.client
import json
import os
import secrets
import select
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The pinned Synapse; the cached virtual environment is keyed on this file's contents.
SYNAPSE_REQUIREMENTS = Path(__file__).with_name("synapse-requirements.txt")
#: Git-ignored home of the Synapse virtual environment (see .gitignore: tests/.cache/).
CACHE_DIR = REPO_ROOT / "tests" / ".cache"
#: The stubserver command of the project's own virtual environment.
STUBSERVER = Path(sys.executable).with_name("stubserver")

#: Prefix of the namespaces we create; the suffix is the creating process's id, then the
#: environment's tag if it has one (``stubtest-1234``, ``stubtest-1234-dendrite``).
NAMESPACE_PREFIX = "stubtest-"
#: The DNS server's address inside the namespace (resolv.conf names it).
DNS_ADDRESS = "127.0.0.53"
DNS_PORT = 53

#: How long a process may take to print its ready line, in seconds.
READY_TIMEOUT_S = 30.0
#: How long Synapse may take to answer on a fresh database, in seconds.
SYNAPSE_START_TIMEOUT_S = 120.0
#: How long one command run inside the namespace may take, in seconds.
COMMAND_TIMEOUT_S = 90.0
#: How long a process has to exit after SIGTERM before it is killed, in seconds.
STOP_TIMEOUT_S = 10.0
#: How long pip may take to install Synapse, in seconds.
INSTALL_TIMEOUT_S = 900.0
#: Pause between polls while waiting for something to start, in seconds.
POLL_INTERVAL_S = 0.2
#: How long a request may take to show up in a stub's request log, in seconds.
LOG_WAIT_S = 5.0
#: Largest response body the in-namespace client reads, in bytes.
MAX_BODY_BYTES = 4 * 1024 * 1024


class EnvironmentUnavailable(Exception):
    """This machine cannot host the environment (not root, no ``ip``, no namespaces)."""


class HarnessError(Exception):
    """A piece of the environment failed to start or to answer; the message says which."""


def unavailable_reason() -> str | None:
    """Why the environment cannot run here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "interop tests need Linux network namespaces"
    if os.geteuid() != 0:
        return "interop tests need root to create network namespaces (ip netns); CI runs as root"
    if shutil.which("ip") is None:
        return "interop tests need the `ip` command (Debian package iproute2)"
    return None


# --------------------------------------------------------------------------- processes


class ManagedProcess:
    """A child process with its stderr (and stdout after the ready line) in a log file."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path
        self._drain: threading.Thread | None = None

    @property
    def pid(self) -> int:
        """The process id (``ip netns exec`` execs the command, so this is the command)."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the process's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def read_ready_line(self, timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """Wait for the one JSON line the process prints when ready, and return it parsed.

        Afterwards the rest of stdout is copied to the log so that the pipe never fills.
        """
        stdout = self.popen.stdout
        if stdout is None:
            raise HarnessError(f"{self.name}: stdout is not a pipe")
        line = _read_line(stdout, time.monotonic() + timeout)
        if line is None:
            state = "exited" if not self.alive() else f"printed nothing in {timeout:.0f}s"
            raise HarnessError(
                f"{self.name} {state} (exit status {self.popen.poll()}); log:\n{self.log_tail()}"
            )
        try:
            ready = json.loads(line)
        except ValueError:
            raise HarnessError(
                f"{self.name}: ready line is not JSON: {line!r}; log:\n{self.log_tail()}"
            ) from None
        if not isinstance(ready, dict) or ready.get("ready") is not True:
            raise HarnessError(f"{self.name}: unexpected ready line {line!r}")
        self.drain_stdout()
        return ready

    def drain_stdout(self) -> None:
        """Copy stdout to the log from now on, so that the pipe never fills (for a process
        that prints no ready line, call it right after the start)."""
        if self.popen.stdout is not None and self._drain is None:
            self._drain = threading.Thread(
                target=self._copy_stdout, args=(self.popen.stdout,), daemon=True
            )
            self._drain.start()

    def _copy_stdout(self, stdout: IO[bytes]) -> None:
        with self.log_path.open("ab") as log:
            for chunk in iter(lambda: os.read(stdout.fileno(), 65536), b""):
                log.write(chunk)
                log.flush()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; return the exit status."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout is not None and self._drain is None:
            self.popen.stdout.close()
        if self._drain is not None:
            self._drain.join(timeout)
        return self.popen.returncode


def _read_line(stream: IO[bytes], deadline: float) -> bytes | None:
    """One line from a pipe, or None at EOF or at the deadline; reads byte-exact."""
    fd = stream.fileno()
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        # One byte at a time so that nothing after the line is taken from the pipe.
        byte = os.read(fd, 1)
        if not byte:
            return None
        data += byte
    return data


# --------------------------------------------------------------------------- namespace


@dataclasses.dataclass(frozen=True)
class NetworkNamespace:
    """A network namespace made by :func:`create_namespace`; commands run in it via ``ip``."""

    name: str

    def argv(self, argv: Sequence[str | Path]) -> list[str]:
        """``argv`` wrapped to run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *(str(a) for a in argv)]

    def run(
        self,
        argv: Sequence[str | Path],
        *,
        input_text: str | None = None,
        timeout: float = COMMAND_TIMEOUT_S,
        cwd: Path = REPO_ROOT,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace to completion, capturing its output."""
        return subprocess.run(
            self.argv(argv),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            check=False,
        )

    def spawn(
        self,
        name: str,
        argv: Sequence[str | Path],
        *,
        log_path: Path,
        cwd: Path = REPO_ROOT,
        env: Mapping[str, str] | None = None,
    ) -> ManagedProcess:
        """Start a long-running process inside the namespace; stderr goes to ``log_path``."""
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                self.argv(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=cwd,
                env=None if env is None else {**os.environ, **env},
                start_new_session=True,
            )
        return ManagedProcess(name, popen, log_path)


def _netns_dir(name: str) -> Path:
    # `ip netns exec` bind-mounts every file of /etc/netns/NAME/ over its /etc/ namesake.
    return Path("/etc/netns") / name


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)


def remove_stale_namespaces() -> list[str]:
    """Delete namespaces left behind by harness processes that no longer exist."""
    listing = _ip("netns", "list")
    removed = []
    for line in listing.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        pid = name.removeprefix(NAMESPACE_PREFIX).split("-", 1)[0]
        if name.startswith(NAMESPACE_PREFIX) and pid.isdigit():
            if Path(f"/proc/{pid}").exists():
                continue
            delete_namespace(NetworkNamespace(name))
            removed.append(name)
    return removed


def create_namespace(
    name: str | None = None, dns_address: str = DNS_ADDRESS, *, tag: str = ""
) -> NetworkNamespace:
    """A fresh namespace with ``lo`` up and resolv.conf naming ``dns_address``.

    Without a ``name`` it is ``stubtest-<pid>``, or ``stubtest-<pid>-<tag>`` so that one
    process can hold several environments at once. Raises :class:`EnvironmentUnavailable`
    when the kernel or container refuses.
    """
    reason = unavailable_reason()
    if reason is not None:
        raise EnvironmentUnavailable(reason)
    name = name or f"{NAMESPACE_PREFIX}{os.getpid()}" + (f"-{tag}" if tag else "")
    remove_stale_namespaces()
    added = _ip("netns", "add", name)
    if added.returncode != 0:
        raise EnvironmentUnavailable(
            f"`ip netns add {name}` failed: {added.stderr.strip() or added.returncode}"
        )
    ns = NetworkNamespace(name)
    try:
        etc = _netns_dir(name)
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(
            f"# written by stubserver's interop harness\nnameserver {dns_address}\n"
        )
        up = _ip("-n", name, "link", "set", "lo", "up")
        if up.returncode != 0:
            raise EnvironmentUnavailable(f"cannot bring up lo in {name}: {up.stderr.strip()}")
        probe = ns.run(["true"], timeout=30)
        if probe.returncode != 0:
            raise EnvironmentUnavailable(
                f"`ip netns exec {name}` does not work here: {probe.stderr.strip()}"
            )
    except BaseException:
        delete_namespace(ns)
        raise
    return ns


def delete_namespace(ns: NetworkNamespace) -> None:
    """Remove the namespace and its /etc/netns folder.

    Processes still inside (left by a run that was killed, or children of ours) are
    killed by their ids first: a namespace lives on while any process holds it.
    """
    pids = _ip("netns", "pids", ns.name)
    for pid in pids.stdout.split():
        if pid.isdigit():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "del", ns.name)
    shutil.rmtree(_netns_dir(ns.name), ignore_errors=True)


# --------------------------------------------------------------------------- HTTP in the NS


@dataclasses.dataclass(frozen=True)
class HttpResult:
    """What the in-namespace client saw: a status and body, or the error that stopped it."""

    status: int | None
    body: Any
    raw_body: str
    error: str | None


def http_request(
    ns: NetworkNamespace,
    method: str,
    url: str,
    *,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    ca_file: Path | None = None,
    retry_until_s: float = 0.0,
    timeout: float = COMMAND_TIMEOUT_S,
) -> HttpResult:
    """One HTTP(S) request made from inside the namespace (names resolve through its DNS).

    ``retry_until_s`` keeps retrying connection failures and 5xx for that long: for
    waiting until a server answers.
    """
    spec = {
        "method": method,
        "url": url,
        "body": body,
        "headers": dict(headers or {}),
        "ca_file": None if ca_file is None else str(ca_file),
        "retry_until_s": retry_until_s,
        "timeout_s": timeout,
    }
    done = ns.run(
        [sys.executable, "-m", "tests.interop.harness", "http"],
        input_text=json.dumps(spec),
        timeout=timeout + retry_until_s + 30,
    )
    if done.returncode != 0:
        raise HarnessError(f"in-namespace HTTP client failed: {done.stderr.strip()}")
    out = json.loads(done.stdout)
    return HttpResult(out["status"], out["body"], out["raw_body"], out["error"])


def _client_main(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The in-namespace side of :func:`http_request` (stdlib only, so it starts fast)."""
    url = urllib.parse.urlsplit(spec["url"])
    deadline = time.monotonic() + float(spec["retry_until_s"])
    payload = None if spec["body"] is None else json.dumps(spec["body"]).encode()
    headers = dict(spec["headers"])
    if payload is not None:
        headers.setdefault("Content-Type", "application/json")
    path = url.path + (f"?{url.query}" if url.query else "")
    error = "not tried"
    while True:
        conn: http.client.HTTPConnection
        if url.scheme == "https":
            context = ssl.create_default_context(cafile=spec["ca_file"])
            conn = http.client.HTTPSConnection(
                url.hostname or "", url.port or 443, timeout=spec["timeout_s"], context=context
            )
        else:
            conn = http.client.HTTPConnection(
                url.hostname or "", url.port or 80, timeout=spec["timeout_s"]
            )
        try:
            conn.request(spec["method"], path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read(MAX_BODY_BYTES).decode("utf-8", "replace")
            status = response.status
        except (OSError, http.client.HTTPException) as e:
            error = f"{type(e).__name__}: {e}"
        else:
            if status < 500 or time.monotonic() >= deadline:
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    parsed = None
                return {"status": status, "body": parsed, "raw_body": raw, "error": None}
            error = f"HTTP {status}: {raw[:200]}"
        finally:
            conn.close()
        if time.monotonic() >= deadline:
            return {"status": None, "body": None, "raw_body": "", "error": error}
        time.sleep(POLL_INTERVAL_S)


# --------------------------------------------------------------------------- X-Matrix


def x_matrix_header(
    *,
    origin: str,
    destination: str,
    method: str,
    uri: str,
    key: Any,
    content: Any = None,
) -> str:
    """An ``Authorization: X-Matrix ...`` value signed with ``key`` (a ServerSigningKey).

    Spec: Server-Server API, "Request Authentication". The tests forge requests with it
    (a real key, then a wrong one) to see how a server judges them.
    """
    from stubserver.signing.keys import sign_json

    request: dict[str, Any] = {
        "method": method,
        "uri": uri,
        "origin": origin,
        "destination": destination,
    }
    if content is not None:
        request["content"] = content
    signature = sign_json(request, origin, key)["signatures"][origin][key.key_id]
    return (
        f'X-Matrix origin="{origin}",destination="{destination}",'
        f'key="{key.key_id}",sig="{signature}"'
    )


# --------------------------------------------------------------------------- certificates


@dataclasses.dataclass(frozen=True)
class TestCA:
    """The tests' CA: its files on disk and an issuer of leaf certificates."""

    cert_path: Path
    key_path: Path

    @classmethod
    def create(cls, directory: Path) -> TestCA:
        """A new CA written into ``directory``."""
        from stubserver.tls.certificates import make_ca

        ca = make_ca("stubserver interop CA")
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / "ca.crt", directory / "ca.key"
        cert_path.write_bytes(ca.cert_pem)
        key_path.write_bytes(ca.key_pem)
        key_path.chmod(0o600)
        return cls(cert_path, key_path)

    def issue(self, names: Sequence[str], directory: Path, stem: str) -> tuple[Path, Path]:
        """A certificate for ``names`` and its key, written as ``stem.crt`` and ``stem.key``."""
        from stubserver.tls.certificates import KeyPair, issue_cert

        ca = KeyPair(self.cert_path.read_bytes(), self.key_path.read_bytes())
        pair = issue_cert(list(names), ca)
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert.write_bytes(pair.cert_pem)
        key.write_bytes(pair.key_pem)
        key.chmod(0o600)
        return cert, key


# --------------------------------------------------------------------------- DNS


def a_record(name: str, address: str, ttl: int = 60) -> dict[str, Any]:
    """An A record for the zone file."""
    return {"name": name, "type": "A", "value": address, "ttl": ttl}


def srv_record(
    name: str, target: str, port: int, *, priority: int = 10, weight: int = 10, ttl: int = 60
) -> dict[str, Any]:
    """An SRV record (``name`` is the full ``_service._proto.host`` owner)."""
    return {
        "name": name,
        "type": "SRV",
        "priority": priority,
        "weight": weight,
        "port": port,
        "target": target,
        "ttl": ttl,
    }


def start_dns_server(
    ns: NetworkNamespace,
    directory: Path,
    records: Sequence[Mapping[str, Any]],
    *,
    address: str = DNS_ADDRESS,
    port: int = DNS_PORT,
) -> ManagedProcess:
    """Our DNS server (``python -m stubserver.devtools.dns_server``) serving ``records``."""
    directory.mkdir(parents=True, exist_ok=True)
    zone = directory / "zone.json"
    zone.write_text(json.dumps({"records": list(records)}, indent=1))
    process = ns.spawn(
        "dns server",
        [
            sys.executable,
            "-m",
            "stubserver.devtools.dns_server",
            "--zone",
            zone,
            "--listen",
            f"{address}:{port}",
        ],
        log_path=directory / "dns.log",
    )
    try:
        process.read_ready_line()
    except BaseException:
        process.stop()
        raise
    return process


# --------------------------------------------------------------------------- stubs


@dataclasses.dataclass(frozen=True)
class StubSpec:
    """One stubserver of the environment and how it is published."""

    server_name: str
    #: (address, port, certificate names) of the federation listener.
    federation: tuple[str, int, tuple[str, ...]]
    #: (address, port, certificate names) of a .well-known listener, if any.
    well_known: tuple[str, int, tuple[str, ...]] | None = None
    #: The m.server value the stub publishes, if any.
    serve_server_wellknown: str | None = None
    #: localpart -> displayname, answered at /_matrix/federation/v1/query/profile.
    users: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: How Synapse should find it, for test ids: "direct", "well_known", "srv".
    method: str = "direct"
    #: Port of the control listener (plain HTTP, on the federation address).
    control_port: int = 8009
    #: More server names served by the same process on the federation listener (its
    #: ``servers:``, issue 23), each with a signing key of its own; the certificate
    #: names them too, and the DNS zone must point them at the federation address.
    extra_servers: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class StubFiles:
    """A stub's config and what the tests need to know about it."""

    spec: StubSpec
    config_path: Path
    request_log_path: Path
    key_id: str
    verify_key: str
    signing_key_path: Path
    control_token: str = ""

    @property
    def control_url(self) -> str:
        """The base URL of the stub's control API (reachable inside the namespace)."""
        return f"http://{self.spec.federation[0]}:{self.spec.control_port}"

    def signing_key(self) -> Any:
        """The stub's signing key (a stubserver ServerSigningKey), to forge its requests."""
        from stubserver.signing.keys import parse_signing_key_file

        return parse_signing_key_file(self.signing_key_path.read_text())[0]


@dataclasses.dataclass
class RunningStub:
    """A started stub: its files and its process."""

    files: StubFiles
    process: ManagedProcess
    ready: dict[str, Any]

    @property
    def server_name(self) -> str:
        """The stub's server name."""
        return self.files.spec.server_name

    def request_log(self) -> list[dict[str, Any]]:
        """Every inbound request logged so far, oldest first."""
        try:
            text = self.files.request_log_path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def wait_for_log_entries(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        after: int = 0,
        timeout: float = LOG_WAIT_S,
    ) -> list[dict[str, Any]]:
        """Logged requests past the first ``after`` lines that match ``predicate``.

        Waits (up to ``timeout``) until there is at least one, since the stub may write
        its log line just after it answered; an empty list means none came.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.request_log()[after:] if predicate(e)]
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(POLL_INTERVAL_S)


def write_stub_config(
    directory: Path, spec: StubSpec, ca: TestCA, *, dns_server: str = f"{DNS_ADDRESS}:{DNS_PORT}"
) -> StubFiles:
    """A stub's config, signing key and certificates per DESIGN.md's config format."""
    import yaml

    from stubserver.signing.keys import ServerSigningKey

    directory.mkdir(parents=True, exist_ok=True)
    key = ServerSigningKey.generate("stub1")
    key_path = directory / "signing.key"
    key_path.write_text(key.to_line())
    key_path.chmod(0o600)
    address, port, names = spec.federation
    cert, cert_key = ca.issue((*names, *spec.extra_servers), directory, "federation")
    listeners: list[dict[str, Any]] = [
        {
            "port": port,
            "bind_addresses": [address],
            "resources": ["federation"],
            "tls_certificate_path": str(cert),
            "tls_private_key_path": str(cert_key),
        }
    ]
    if spec.well_known is not None:
        wk_address, wk_port, wk_names = spec.well_known
        wk_cert, wk_key = ca.issue(wk_names, directory, "well-known")
        listeners.append(
            {
                "port": wk_port,
                "bind_addresses": [wk_address],
                "resources": ["well_known"],
                "tls_certificate_path": str(wk_cert),
                "tls_private_key_path": str(wk_key),
            }
        )
    listeners.append(
        {"port": spec.control_port, "bind_addresses": [address], "resources": ["control"]}
    )
    control_token = secrets.token_urlsafe(16)
    log_path = directory / "requests.jsonl"
    config: dict[str, Any] = {
        "server_name": spec.server_name,
        "signing_key_path": str(key_path),
        "tls_certificate_path": str(cert),
        "tls_private_key_path": str(cert_key),
        "listeners": listeners,
        "users": {local: {"displayname": name} for local, name in spec.users.items()},
        "request_log_path": str(log_path),
        "federation_verify_certificates": True,
        "federation_custom_ca_list": [str(ca.cert_path)],
        "federation_dns_servers": [dns_server],
        "ip_range_allowlist": ["127.0.0.0/8"],
        "control_token": control_token,
    }
    if spec.serve_server_wellknown is not None:
        config["serve_server_wellknown"] = spec.serve_server_wellknown
    if spec.extra_servers:
        config["servers"] = [
            _extra_server(directory, name, cert, cert_key) for name in spec.extra_servers
        ]
    config_path = directory / "stubserver.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return StubFiles(
        spec, config_path, log_path, key.key_id, key.verify_key_base64, key_path, control_token
    )


def _extra_server(directory: Path, name: str, cert: Path, cert_key: Path) -> dict[str, Any]:
    """One more server of a stub's process: a signing key of its own, the shared
    certificate."""
    from stubserver.signing.keys import ServerSigningKey

    key_path = directory / f"{name}.signing.key"
    key_path.write_text(ServerSigningKey.generate("stub1").to_line())
    key_path.chmod(0o600)
    return {
        "server_name": name,
        "signing_key_path": str(key_path),
        "tls_certificate_path": str(cert),
        "tls_private_key_path": str(cert_key),
    }


def start_stub(ns: NetworkNamespace, files: StubFiles) -> RunningStub:
    """``stubserver run -c CONFIG`` inside the namespace, once its ready line is printed."""
    process = ns.spawn(
        f"stubserver {files.spec.server_name}",
        [STUBSERVER, "run", "-c", files.config_path],
        log_path=files.config_path.with_name("stubserver.log"),
    )
    try:
        ready = process.read_ready_line()
    except BaseException:
        process.stop()
        raise
    return RunningStub(files, process, ready)


# --------------------------------------------------------------------------- Synapse


def synapse_venv_dir(requirements: Path = SYNAPSE_REQUIREMENTS, cache: Path = CACHE_DIR) -> Path:
    """Where the virtual environment for these requirements lives (keyed on their hash)."""
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    pins = [
        line.split("==", 1)[1].strip()
        for line in requirements.read_text().splitlines()
        if line.startswith("matrix-synapse==")
    ]
    version = pins[0] if pins else "unpinned"
    return cache / f"synapse-{version}-{digest}"


def install_once(
    target: Path,
    steps: Sequence[Sequence[str | Path]],
    *,
    what: str,
    stamp: str,
    cache: Path = CACHE_DIR,
    env: Mapping[str, str] | None = None,
    log: Callable[[str], None] | None = None,
) -> None:
    """Run ``steps`` (commands) to fill ``target``, unless an earlier run completed it.

    A lock file in ``cache`` serialises concurrent test runs; the stamp file (holding
    ``stamp``) is written last, so an interrupted install is redone rather than trusted.
    Each step has :data:`INSTALL_TIMEOUT_S`; ``env`` is added to the environment.
    """
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"{what.lower()}-install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".installed").exists():
            return
        if log is not None:
            log(f"installing {what} into {target} (first use; takes a minute or two)")
        shutil.rmtree(target, ignore_errors=True)
        for step in steps:
            argv = [str(a) for a in step]
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
                check=False,
                env=None if env is None else {**os.environ, **env},
            )
            if done.returncode != 0:
                raise HarnessError(
                    f"installing {what} failed: {' '.join(argv)}\n{done.stderr[-3000:]}"
                )
        (target / ".installed").write_text(stamp)


def ensure_synapse(
    requirements: Path = SYNAPSE_REQUIREMENTS,
    cache: Path = CACHE_DIR,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The python of a virtual environment with the pinned Synapse, installed on first use."""
    venv = synapse_venv_dir(requirements, cache)
    python = venv / "bin" / "python"
    steps: list[list[str | Path]] = [
        [sys.executable, "-m", "venv", venv],
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", requirements],
    ]
    install_once(venv, steps, what="Synapse", stamp=requirements.read_text(), cache=cache, log=log)
    return python


@dataclasses.dataclass(frozen=True)
class HomeserverSpec:
    """Where a real homeserver listens and what it is called."""

    server_name: str
    address: str
    #: TLS listener: federation and client, as other homeservers reach it.
    federation_port: int = 8448
    #: Plain HTTP client listener for the tests' admin calls.
    client_port: int = 8008

    @property
    def client_url(self) -> str:
        """Base URL of the plain client listener."""
        return f"http://{self.address}:{self.client_port}"

    @property
    def federation_url(self) -> str:
        """Base URL of the TLS listener, by name (resolved through the tests' DNS)."""
        return f"https://{self.server_name}:{self.federation_port}"


@dataclasses.dataclass(frozen=True)
class SynapseSpec(HomeserverSpec):
    """Where Synapse listens and what it is called."""

    server_name: str = "synapse.test"
    address: str = "127.0.0.30"


@dataclasses.dataclass(frozen=True)
class SynapseFiles:
    """Synapse's generated config and secrets."""

    spec: SynapseSpec
    directory: Path
    config_path: Path
    log_path: Path
    signing_key_path: Path
    registration_shared_secret: str

    def signing_key(self) -> Any:
        """Synapse's signing key as a stubserver ServerSigningKey (same file format)."""
        from stubserver.signing.keys import parse_signing_key_file

        return parse_signing_key_file(self.signing_key_path.read_text())[0]


def write_synapse_config(directory: Path, spec: SynapseSpec, ca: TestCA) -> SynapseFiles:
    """homeserver.yaml for a test Synapse: TLS from ``ca``, trusting only ``ca``, sqlite."""
    import yaml

    from stubserver.signing.keys import ServerSigningKey

    directory.mkdir(parents=True, exist_ok=True)
    key = ServerSigningKey.generate("a_interop")
    key_path = directory / f"{spec.server_name}.signing.key"
    key_path.write_text(key.to_line())
    key_path.chmod(0o600)
    cert, cert_key = ca.issue([spec.server_name], directory, spec.server_name)
    log_path = directory / "homeserver.log"
    log_config = directory / "log.yaml"
    log_config.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "formatters": {
                    "precise": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}
                },
                "handlers": {
                    "file": {
                        "class": "logging.FileHandler",
                        "formatter": "precise",
                        "filename": str(log_path),
                    }
                },
                "loggers": {"synapse.storage.SQL": {"level": "WARNING"}},
                "root": {"level": "INFO", "handlers": ["file"]},
                "disable_existing_loggers": False,
            }
        )
    )
    secret = secrets.token_hex(16)
    relaxed = {"per_second": 1000, "burst_count": 1000}
    config: dict[str, Any] = {
        "server_name": spec.server_name,
        "pid_file": str(directory / "homeserver.pid"),
        "listeners": [
            {
                "port": spec.federation_port,
                "bind_addresses": [spec.address],
                "type": "http",
                "tls": True,
                "x_forwarded": False,
                "resources": [{"names": ["federation", "client"], "compress": False}],
            },
            {
                "port": spec.client_port,
                "bind_addresses": [spec.address],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            },
        ],
        "tls_certificate_path": str(cert),
        "tls_private_key_path": str(cert_key),
        "federation_verify_certificates": True,
        "federation_custom_ca_list": [str(ca.cert_path)],
        "federation_client_minimum_tls_version": "1.2",
        # Outbound federation to the stubs is on loopback, which Synapse blocks by default.
        "ip_range_whitelist": ["127.0.0.0/8"],
        "database": {"name": "sqlite3", "args": {"database": str(directory / "homeserver.db")}},
        "log_config": str(log_config),
        "media_store_path": str(directory / "media_store"),
        "signing_key_path": str(key_path),
        "macaroon_secret_key": secrets.token_hex(16),
        "form_secret": secrets.token_hex(16),
        "registration_shared_secret": secret,
        "enable_registration": False,
        "report_stats": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "enable_metrics": False,
        # Presence both ways is a conformance area (issue 20); Synapse's default is on.
        "presence": {"enabled": True},
        # The public room directory over federation (issue 20): off by default in Synapse,
        # and its default publication rules let no one publish.
        "allow_public_rooms_over_federation": True,
        "room_list_publication_rules": [{"action": "allow"}],
        "url_preview_enabled": False,
        # Work for its local clients only, which no test here uses, spared on every event
        # (issue 20's time budget; Synapse's CPU is the conformance run's limit): push
        # rules are evaluated for each local member of a room (notification counts,
        # pushers), the user directory (client-side user search) is updated on each
        # membership and profile change. Neither is sent over federation or changes what
        # it sends or accepts.
        "push": {"enabled": False},
        "update_user_directory": False,
        # Its users' password hashes at bcrypt's lowest cost (Synapse's default, 12 rounds,
        # costs ~0.24 s of its CPU per registration; a conformance run registers three):
        # the password never leaves the test's homeserver.
        "bcrypt_rounds": 4,
        "rc_message": relaxed,
        "rc_registration": relaxed,
        "rc_login": {"address": relaxed, "account": relaxed, "failed_attempts": relaxed},
        "rc_federation": {
            "window_size": 1000,
            "sleep_limit": 1000,
            "sleep_delay": 1,
            "reject_limit": 1000,
            "concurrent": 100,
        },
        "rc_key_requests": relaxed,
        "rc_presence": {"per_user": relaxed},
        # Rooms tests join, invite and leave many times a minute (rooms.md, pitfall 21).
        "rc_joins": {"local": relaxed, "remote": relaxed},
        "rc_joins_per_room": relaxed,
        "rc_room_creation": relaxed,
        "rc_invites": {"per_room": relaxed, "per_user": relaxed, "per_issuer": relaxed},
    }
    config_path = directory / "homeserver.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return SynapseFiles(spec, directory, config_path, log_path, key_path, secret)


@dataclasses.dataclass
class RunningSynapse:
    """A started Synapse."""

    files: SynapseFiles
    process: ManagedProcess
    python: Path

    @property
    def server_name(self) -> str:
        """Synapse's server name."""
        return self.files.spec.server_name


#: How Synapse's python is told to run the homeserver: its own entry point.
SYNAPSE_LAUNCHER: tuple[str, ...] = ("-m", "synapse.app.homeserver")


def start_synapse(
    ns: NetworkNamespace,
    python: Path,
    files: SynapseFiles,
    ca: TestCA,
    launcher: Sequence[str | Path] = SYNAPSE_LAUNCHER,
) -> RunningSynapse:
    """Start Synapse in the namespace and wait until its TLS listener answers by name.

    ``launcher`` is what comes between the python and ``-c CONFIG``: Synapse's own entry
    point, or a script that runs it (scripts/mutation/boot.py starts it with one function
    replaced)."""
    process = ns.spawn(
        "synapse",
        [python, *launcher, "-c", files.config_path],
        log_path=files.directory / "stderr.log",
        cwd=files.directory,
    )
    wait_for_homeserver(ns, files.spec, ca, process, log_path=files.log_path)
    return RunningSynapse(files, process, python)


def wait_for_homeserver(
    ns: NetworkNamespace,
    spec: HomeserverSpec,
    ca: TestCA,
    process: ManagedProcess,
    *,
    log_path: Path,
    timeout: float = SYNAPSE_START_TIMEOUT_S,
) -> None:
    """Wait until a just-started homeserver answers ``/_matrix/federation/v1/version`` on its
    TLS listener, by name; stop it and raise :class:`HarnessError` if it does not, at once
    when it exits."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            answer = http_request(
                ns,
                "GET",
                f"{spec.federation_url}/_matrix/federation/v1/version",
                ca_file=ca.cert_path,
                retry_until_s=min(5.0, max(0.0, deadline - time.monotonic())),
                timeout=10,
            )
            alive = process.alive()
            if answer.status == 200 and alive:
                return
            if not alive or time.monotonic() >= deadline:
                raise HarnessError(
                    f"{process.name} did not answer ({answer.error or answer.status});"
                    f" stderr:\n{process.log_tail()}\nlog:\n{_tail(log_path)}"
                )
    except BaseException:
        process.stop()
        raise


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def register_user(
    ns: NetworkNamespace, base: str, shared_secret: str, localpart: str, displayname: str
) -> str:
    """Register a user through the shared-secret admin API (``/_synapse/admin/v1/register``,
    which Dendrite serves too) at client URL ``base``; return its access token.

    The displayname is then set through the client API, the way a user would.
    """
    nonce = http_request(ns, "GET", f"{base}/_synapse/admin/v1/register")
    if nonce.status != 200:
        raise HarnessError(f"no registration nonce: {nonce.status} {nonce.raw_body}")
    password = secrets.token_hex(12)
    mac = hmac.new(
        shared_secret.encode(),
        b"\x00".join(
            [nonce.body["nonce"].encode(), localpart.encode(), password.encode(), b"notadmin"]
        ),
        hashlib.sha1,
    ).hexdigest()
    registered = http_request(
        ns,
        "POST",
        f"{base}/_synapse/admin/v1/register",
        body={
            "nonce": nonce.body["nonce"],
            "username": localpart,
            "password": password,
            "admin": False,
            "mac": mac,
        },
    )
    if registered.status != 200:
        raise HarnessError(f"registering {localpart} failed: {registered.raw_body}")
    token: str = registered.body["access_token"]
    user_id: str = registered.body["user_id"]
    quoted = urllib.parse.quote(user_id)
    named = http_request(
        ns,
        "PUT",
        f"{base}/_matrix/client/v3/profile/{quoted}/displayname",
        body={"displayname": displayname},
        headers={"Authorization": f"Bearer {token}"},
    )
    if named.status != 200:
        raise HarnessError(f"setting {user_id}'s displayname failed: {named.raw_body}")
    return token


#: Deadline of one ``stubserver conformance`` run, in seconds (it takes well under a minute).
CONFORMANCE_TIMEOUT_S = 600


def run_conformance(
    ns: NetworkNamespace,
    homeserver: HomeserverSpec,
    registration_shared_secret: str,
    ca: TestCA,
    peer_config: Path,
    *options: str | Path,
) -> subprocess.CompletedProcess[str]:
    """``stubserver conformance`` against ``homeserver`` (Synapse or Dendrite), run in the
    namespace as a user would, driving the running peer of ``peer_config`` (users
    registered with ``registration_shared_secret``)."""
    argv: list[str | Path] = [
        sys.executable,
        "-m",
        "stubserver",
        "conformance",
        "--homeserver-name",
        homeserver.server_name,
        "--homeserver-url",
        homeserver.client_url,
        "-c",
        peer_config,
        "--registration-shared-secret",
        registration_shared_secret,
        "--ca-file",
        ca.cert_path,
        *options,
    ]
    return ns.run(argv, timeout=CONFORMANCE_TIMEOUT_S)


# --------------------------------------------------------------------------- the environment


#: The servers ``direct.test``'s process serves besides it (on its listener): the
#: conformance tests that need several servers take theirs among them.
DIRECT_EXTRA_SERVERS = tuple(f"m{i}.test" for i in range(1, 17))

#: The default name plan: one stub per delegation method, and Synapse.
DEFAULT_STUBS = (
    StubSpec(
        server_name="direct.test",
        federation=("127.0.0.21", 8448, ("direct.test",)),
        users={"alice": "Alice Direct"},
        method="direct",
        extra_servers=DIRECT_EXTRA_SERVERS,
    ),
    StubSpec(
        server_name="wk.test",
        federation=("127.0.0.23", 8448, ("wk-fed.test",)),
        well_known=("127.0.0.22", 443, ("wk.test",)),
        serve_server_wellknown="wk-fed.test:8448",
        users={"alice": "Alice Well-Known"},
        method="well_known",
    ),
    StubSpec(
        server_name="srv.test",
        federation=("127.0.0.24", 8450, ("srv.test",)),
        users={"alice": "Alice SRV"},
        method="srv",
    ),
)

DEFAULT_RECORDS = (
    a_record("direct.test", "127.0.0.21"),
    *(a_record(name, "127.0.0.21") for name in DIRECT_EXTRA_SERVERS),
    a_record("wk.test", "127.0.0.22"),
    a_record("wk-fed.test", "127.0.0.23"),
    # srv.test has no address of its own: its .well-known fails, and the SRV record leads on.
    srv_record("_matrix-fed._tcp.srv.test", "srv-host.test", 8450),
    a_record("srv-host.test", "127.0.0.24"),
    a_record("synapse.test", "127.0.0.30"),
    a_record("dendrite.test", "127.0.0.31"),
    # Peers started by stubserver.testing (tests/interop/test_testing_example.py).
    a_record("peer.test", "127.0.0.40"),
)


@dataclasses.dataclass(frozen=True)
class PeerHomeserver:
    """The real homeserver of an environment as the tests meet it, Synapse or Dendrite."""

    #: "Synapse" or "Dendrite", for messages.
    product: str
    spec: HomeserverSpec
    #: Its signing key, a stubserver ServerSigningKey (to forge its requests).
    signing_key: Any
    #: Its user with a displayname: (user ID, displayname, access token).
    user: tuple[str, str, str]
    #: The log that failure messages quote.
    log_path: Path
    #: The secret of its shared-secret registration (``/_synapse/admin/v1/register``).
    registration_shared_secret: str

    @property
    def server_name(self) -> str:
        """Its server name."""
        return self.spec.server_name

    def log_tail(self, lines: int = 60) -> str:
        """The end of its log, for failure messages."""
        return _tail(self.log_path, lines)


@dataclasses.dataclass
class StubWorld:
    """Namespace, CA, DNS server and stubs: what every environment has, started by
    :func:`stub_world`."""

    ns: NetworkNamespace
    directory: Path
    ca: TestCA
    dns: ManagedProcess
    stubs: dict[str, RunningStub]

    def stubserver(self, *args: str | Path, timeout: float = COMMAND_TIMEOUT_S) -> Any:
        """Run ``stubserver ARGS`` inside the namespace; return the JSON it printed.

        Raises :class:`HarnessError` (with stdout and stderr) when the output is not JSON.
        """
        done = self.ns.run([STUBSERVER, *args], timeout=timeout)
        try:
            return json.loads(done.stdout)
        except ValueError:
            raise HarnessError(
                f"`stubserver {' '.join(map(str, args))}` exited {done.returncode} without"
                f" JSON output.\nstdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-3000:]}"
            ) from None


@contextlib.contextmanager
def stub_world(
    directory: Path,
    *,
    stubs: Sequence[StubSpec] = DEFAULT_STUBS,
    records: Sequence[Mapping[str, Any]] = DEFAULT_RECORDS,
    namespace_tag: str = "",
) -> Iterator[StubWorld]:
    """Namespace (tagged ``namespace_tag``), CA, DNS and stubs, torn down in reverse order."""
    with contextlib.ExitStack() as stack:
        ns = create_namespace(tag=namespace_tag)
        stack.callback(delete_namespace, ns)
        ca = TestCA.create(directory / "ca")
        dns = start_dns_server(ns, directory / "dns", records)
        stack.callback(dns.stop)
        running: dict[str, RunningStub] = {}
        for spec in stubs:
            files = write_stub_config(directory / spec.server_name, spec, ca)
            stub = start_stub(ns, files)
            stack.callback(stub.process.stop)
            running[spec.server_name] = stub
        yield StubWorld(ns, directory, ca, dns, running)


@dataclasses.dataclass
class InteropEnvironment(StubWorld):
    """The whole Synapse environment, started by :func:`interop_environment`."""

    synapse: RunningSynapse
    #: Synapse's user with a displayname: (user ID, displayname, access token).
    synapse_user: tuple[str, str, str]

    def synapse_log_tail(self, lines: int = 60) -> str:
        """The end of Synapse's log, for failure messages."""
        return _tail(self.synapse.files.log_path, lines)

    @property
    def homeserver(self) -> PeerHomeserver:
        """Synapse, as the tests shared with Dendrite meet it."""
        files = self.synapse.files
        return PeerHomeserver(
            "Synapse",
            files.spec,
            files.signing_key(),
            self.synapse_user,
            files.log_path,
            files.registration_shared_secret,
        )


@contextlib.contextmanager
def interop_environment(
    directory: Path,
    *,
    stubs: Sequence[StubSpec] = DEFAULT_STUBS,
    records: Sequence[Mapping[str, Any]] = DEFAULT_RECORDS,
    synapse_spec: SynapseSpec = SynapseSpec(),  # frozen, never mutated
    synapse_python: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> Iterator[InteropEnvironment]:
    """Namespace, CA, DNS, stubs and Synapse, torn down in reverse order on exit.

    The stubs start before Synapse so that Synapse never meets one that is not up yet
    (it would back off from that destination).
    """
    python = synapse_python or ensure_synapse(log=log)
    with contextlib.ExitStack() as stack:
        world = stack.enter_context(stub_world(directory, stubs=stubs, records=records))
        synapse_files = write_synapse_config(directory / "synapse", synapse_spec, world.ca)
        synapse = start_synapse(world.ns, python, synapse_files, world.ca)
        stack.callback(synapse.process.stop)
        displayname = "Bob on Synapse"
        token = register_user(
            world.ns,
            synapse_spec.client_url,
            synapse_files.registration_shared_secret,
            "bob",
            displayname,
        )
        user = (f"@bob:{synapse_spec.server_name}", displayname, token)
        yield InteropEnvironment(
            world.ns, world.directory, world.ca, world.dns, world.stubs, synapse, user
        )


def _main(argv: Sequence[str]) -> int:
    if list(argv) == ["http"]:
        print(json.dumps(_client_main(json.load(sys.stdin))))
        return 0
    print("usage: python -m tests.interop.harness http < request.json", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
