"""The private-federation demo: three stubservers, each reached a different way.

``demo/start.sh`` runs ``python -m stubserver.devtools.demo start``. Everything lives under one
folder (``demo/run/`` by default): a private CA, a DNS zone served by our own DNS server
(:mod:`stubserver.devtools.dns_server`), and one config, signing key and certificate per server.

The trio (all on loopback, ports above 1024, no root):

* ``alpha.demo``: found directly: no .well-known, no SRV, so the default port.
* ``beta.demo``: delegated by ``/.well-known/matrix/server`` to ``beta-fed.demo:8449``.
* ``gamma.demo``: delegated by a ``_matrix-fed._tcp`` SRV record to ``gamma-srv.demo:8450``;
  its certificate names ``gamma.demo``, never the SRV target, as the spec demands.

Every server trusts the demo's CA and uses the demo's DNS server; TLS is verified.
The private-federation settings ``federation_well_known_port`` and
``federation_default_port`` stand in for 443 and 8448 so that no root is needed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stubserver.signing.keys import ServerSigningKey
from stubserver.tls.certificates import KeyPair, issue_cert, make_ca

if TYPE_CHECKING:
    from stubserver.client.build import FederationContext
    from stubserver.client.signed_request import FederationClient

#: The demo's DNS server, on a loopback address of its own and an unprivileged port.
DNS_ADDRESS = "127.0.0.53"
DNS_PORT = 5353
#: Stand-ins for the spec's 443 (.well-known) and 8448 (federation default) ports.
WELL_KNOWN_PORT = 8443
DEFAULT_PORT = 8448
#: TTL of every record in the demo zone, in seconds.
ZONE_TTL_SECONDS = 300
#: How long start-up may take before we give up on a process, in seconds.
READY_TIMEOUT_SECONDS = 15.0
#: How long stop waits for a process to exit after SIGTERM before SIGKILL, in seconds.
STOP_TIMEOUT_SECONDS = 5.0
POLL_INTERVAL_SECONDS = 0.02


@dataclass(frozen=True)
class DemoServer:
    """One server of the trio and how it is found."""

    server_name: str
    method: str  # "direct", "well-known" or "srv": how others find it
    fed_host: str  # the host name the federation listener's address is published under
    fed_address: str
    fed_port: int
    tls_names: tuple[str, ...]  # names on the federation listener's certificate
    wellknown_address: str | None = None  # where the .well-known listener binds
    wellknown_value: str | None = None  # the m.server it publishes

    @property
    def slug(self) -> str:
        """A file-name-safe short name (``alpha``)."""
        return self.server_name.split(".")[0]


TRIO: tuple[DemoServer, ...] = (
    DemoServer(
        server_name="alpha.demo",
        method="direct",
        fed_host="alpha.demo",
        fed_address="127.0.0.11",
        fed_port=DEFAULT_PORT,
        tls_names=("alpha.demo",),
    ),
    DemoServer(
        server_name="beta.demo",
        method="well-known",
        fed_host="beta-fed.demo",
        fed_address="127.0.0.22",
        fed_port=8449,
        tls_names=("beta-fed.demo",),
        wellknown_address="127.0.0.12",
        wellknown_value="beta-fed.demo:8449",
    ),
    DemoServer(
        server_name="gamma.demo",
        method="srv",
        fed_host="gamma-srv.demo",
        fed_address="127.0.0.23",
        fed_port=8450,
        tls_names=("gamma.demo",),
    ),
)


def demo_zone(servers: Iterable[DemoServer]) -> list[dict[str, Any]]:
    """The DNS records that make each server findable the way its ``method`` says."""
    records: list[dict[str, Any]] = []
    for s in servers:
        if s.method == "srv":
            records.append(
                {
                    "name": f"_matrix-fed._tcp.{s.server_name}",
                    "type": "SRV",
                    "priority": 10,
                    "weight": 5,
                    "port": s.fed_port,
                    "target": s.fed_host,
                    "ttl": ZONE_TTL_SECONDS,
                }
            )
        if s.wellknown_address is not None:
            records.append(
                {
                    "name": s.server_name,
                    "type": "A",
                    "value": s.wellknown_address,
                    "ttl": ZONE_TTL_SECONDS,
                }
            )
        records.append(
            {"name": s.fed_host, "type": "A", "value": s.fed_address, "ttl": ZONE_TTL_SECONDS}
        )
    return records


def server_config(s: DemoServer, run_dir: Path) -> dict[str, Any]:
    """The YAML config (as a mapping) of one demo server; paths relative to ``run_dir``."""
    listeners: list[dict[str, Any]] = [
        {
            "port": s.fed_port,
            "bind_addresses": [s.fed_address],
            "resources": ["federation"],
            "tls_certificate_path": f"{s.slug}.fed.crt",
            "tls_private_key_path": f"{s.slug}.fed.key",
        }
    ]
    config: dict[str, Any] = {
        "server_name": s.server_name,
        "signing_key_path": f"{s.slug}.signing.key",
        "tls_certificate_path": f"{s.slug}.fed.crt",
        "tls_private_key_path": f"{s.slug}.fed.key",
        "listeners": listeners,
        "users": {"alice": {"displayname": f"Alice of {s.server_name}"}},
        "request_log_path": f"{s.slug}.requests.jsonl",
        "federation_verify_certificates": True,
        "federation_custom_ca_list": ["ca.crt"],
        "federation_dns_servers": [f"{DNS_ADDRESS}:{DNS_PORT}"],
        "ip_range_allowlist": ["127.0.0.0/8"],
        "federation_well_known_port": WELL_KNOWN_PORT,
        "federation_default_port": DEFAULT_PORT,
    }
    if s.wellknown_address is not None:
        listeners.append(
            {
                "port": WELL_KNOWN_PORT,
                "bind_addresses": [s.wellknown_address],
                "resources": ["well_known"],
                "tls_certificate_path": f"{s.slug}.wk.crt",
                "tls_private_key_path": f"{s.slug}.wk.key",
            }
        )
        config["serve_server_wellknown"] = s.wellknown_value
    return config


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically with mode 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_pair(run_dir: Path, stem: str, pair: KeyPair) -> None:
    _write_public(run_dir / f"{stem}.crt", pair.cert_pem)
    _write_private(run_dir / f"{stem}.key", pair.key_pem)


def write_demo_files(run_dir: Path, servers: Sequence[DemoServer] = TRIO) -> None:
    """Make the CA, keys, certificates, zone and configs, keeping any that already exist.

    Existing keys are never regenerated, so running start twice keeps identities stable.
    """
    import yaml  # noqa: PLC0415

    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "ca.crt").exists() and (run_dir / "ca.key").exists():
        ca = KeyPair((run_dir / "ca.crt").read_bytes(), (run_dir / "ca.key").read_bytes())
    else:
        ca = make_ca("stubserver demo CA")
        _write_pair(run_dir, "ca", ca)
    for s in servers:
        key_path = run_dir / f"{s.slug}.signing.key"
        if not key_path.exists():
            _write_private(key_path, ServerSigningKey.generate("a_demo").to_line().encode())
        if not (run_dir / f"{s.slug}.fed.crt").exists():
            _write_pair(run_dir, f"{s.slug}.fed", issue_cert(list(s.tls_names), ca))
        if s.wellknown_address is not None and not (run_dir / f"{s.slug}.wk.crt").exists():
            _write_pair(run_dir, f"{s.slug}.wk", issue_cert([s.server_name], ca))
        _write_public(
            run_dir / f"{s.slug}.yaml",
            yaml.safe_dump(server_config(s, run_dir), sort_keys=False).encode(),
        )
    _write_public(
        run_dir / "zone.json", json.dumps({"records": demo_zone(servers)}, indent=1).encode()
    )


# -- processes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoProcess:
    """A background process the demo starts: its name, command and where its files go."""

    name: str
    argv: tuple[str, ...]
    binds: tuple[tuple[str, int], ...]  # TCP addresses it listens on, checked before start


def demo_processes(run_dir: Path, servers: Sequence[DemoServer] = TRIO) -> list[DemoProcess]:
    """The DNS server and one ``stubserver run`` per server."""
    py = sys.executable
    procs = [
        DemoProcess(
            name="dns",
            argv=(
                py,
                "-m",
                "stubserver.devtools.dns_server",
                "--zone",
                str(run_dir / "zone.json"),
                "--listen",
                f"{DNS_ADDRESS}:{DNS_PORT}",
            ),
            binds=((DNS_ADDRESS, DNS_PORT),),
        )
    ]
    for s in servers:
        binds = [(s.fed_address, s.fed_port)]
        if s.wellknown_address is not None:
            binds.append((s.wellknown_address, WELL_KNOWN_PORT))
        procs.append(
            DemoProcess(
                name=s.slug,
                argv=(py, "-m", "stubserver", "run", "-c", str(run_dir / f"{s.slug}.yaml")),
                binds=tuple(binds),
            )
        )
    return procs


class DemoError(Exception):
    """The demo could not start; ``str()`` is the message for the user."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_is_ours(pid: int, proc: DemoProcess) -> bool:
    """True when ``pid`` is alive and runs ``proc``'s command (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _pid_alive(pid)
    want = [a.encode() for a in proc.argv[1:]]
    return cmdline[1 : 1 + len(want)] == want


def _read_pid(pid_path: Path) -> int | None:
    try:
        return int(pid_path.read_text().strip())
    except (OSError, ValueError):
        return None


def running_pids(run_dir: Path, procs: Sequence[DemoProcess]) -> dict[str, int]:
    """The demo processes that are up, by name, from their pid files."""
    alive: dict[str, int] = {}
    for p in procs:
        pid = _read_pid(run_dir / f"{p.name}.pid")
        if pid is not None and _pid_is_ours(pid, p):
            alive[p.name] = pid
    return alive


def port_in_use(address: str, port: int) -> bool:
    """True when ``address:port`` cannot be bound for TCP because something holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def _ready_line(out_path: Path) -> dict[str, Any] | None:
    try:
        first = out_path.read_text().partition("\n")
    except OSError:
        return None
    if not first[1]:
        return None
    try:
        parsed = json.loads(first[0])
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def start_processes(run_dir: Path, procs: Sequence[DemoProcess]) -> dict[str, int]:
    """Start every process not yet running, wait for each ready line; return all pids.

    Raises :class:`DemoError` naming the process and its last error line when one fails.
    """
    up = running_pids(run_dir, procs)
    for p in procs:
        if p.name in up:
            continue
        for address, port in p.binds:
            if port_in_use(address, port):
                raise DemoError(
                    f"{p.name}: {address}:{port} is already in use by another program;"
                    " stop it (or run demo/stop.sh) and start again"
                )
    started: dict[str, subprocess.Popen[bytes]] = {}
    for p in procs:
        if p.name in up:
            continue
        out = (run_dir / f"{p.name}.out").open("wb")
        err = (run_dir / f"{p.name}.log").open("ab")
        started[p.name] = subprocess.Popen(
            p.argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            cwd=run_dir,
        )
        out.close()
        err.close()
        (run_dir / f"{p.name}.pid").write_text(f"{started[p.name].pid}\n")
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    waiting = dict(started)
    while waiting:
        for name, popen in list(waiting.items()):
            if _ready_line(run_dir / f"{name}.out") is not None:
                del waiting[name]
                continue
            if popen.poll() is not None:
                (run_dir / f"{name}.pid").unlink(missing_ok=True)
                lines = (run_dir / f"{name}.log").read_text(errors="replace").strip().splitlines()
                why = lines[-1] if lines else f"exit status {popen.returncode}"
                raise DemoError(f"{name} did not start: {why}")
        if waiting and time.monotonic() > deadline:
            raise DemoError(f"{', '.join(waiting)} did not become ready in time")
        if waiting:
            time.sleep(POLL_INTERVAL_SECONDS)
    return {**up, **{n: p.pid for n, p in started.items()}}


def stop_processes(run_dir: Path, procs: Sequence[DemoProcess]) -> list[str]:
    """SIGTERM exactly the demo's processes (by pid file), wait, SIGKILL stragglers."""
    stopped: list[str] = []
    pids: dict[str, int] = {}
    for p in procs:
        pid_path = run_dir / f"{p.name}.pid"
        pid = _read_pid(pid_path)
        if pid is not None and _pid_is_ours(pid, p):
            os.kill(pid, signal.SIGTERM)
            pids[p.name] = pid
        pid_path.unlink(missing_ok=True)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for name, pid in pids.items():
        while _pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(POLL_INTERVAL_SECONDS)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        stopped.append(name)
    return stopped


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our child (it is when start and stop share a process)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# -- the pair matrix ------------------------------------------------------------------------


@dataclass(frozen=True)
class PairResult:
    """What one server saw of another: the path its resolution took, and the outcome."""

    source: str
    destination: str
    path: str  # e.g. "well-known → beta-fed.demo:8449"
    ok: bool
    failed_step: str | None = None  # "resolve", "keys", "signed request" or "receiver log"
    error: str | None = None


def describe_path(source: str, host: str, port: int) -> str:
    """The resolution path as shown in the matrix: ``<how> → <host>:<port>``."""
    how = {
        "ip_literal": "IP literal",
        "explicit_port": "explicit port",
        "srv": "SRV",
        "legacy_srv": "legacy SRV",
        "default_port": "direct",
    }.get(source, source)
    return f"{how} → {host}:{port}"


def format_matrix(servers: Sequence[DemoServer], results: Sequence[PairResult]) -> str:
    """The compact matrix: one row per sender, one line per receiver, OK or the failing step."""
    width = max(len(s.server_name) for s in servers)
    width_path = max((len(r.path) for r in results), default=0)
    lines = []
    for r in results:
        verdict = "OK" if r.ok else f"FAIL at {r.failed_step}: {r.error}"
        lines.append(
            f"{r.source:<{width}} → {r.destination:<{width}}  {r.path:<{width_path}}  {verdict}"
        )
    return "\n".join(lines)


#: How long to wait for the receiver's request log to show a request, in seconds.
LOG_WAIT_SECONDS = 3.0


def _path_of(resolution: Any, connected: Any) -> str:
    """The matrix's path text for the target used (or the first one resolved)."""
    target = connected or (resolution.targets[0] if resolution.targets else None)
    if target is None:
        return "unresolved"
    if resolution.delegated_server_name is None:
        return describe_path(target.source, target.host, target.port)
    hop = f"{target.host}:{target.port}"
    if target.source in ("srv", "legacy_srv"):
        return f"well-known → {describe_path(target.source, target.host, target.port)}"
    return f"well-known → {hop}"


def _log_shows(log_path: Path, origin: str, uri: str) -> dict[str, Any] | None:
    try:
        lines = log_path.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("origin") == origin and entry.get("uri") == uri:
            return entry if isinstance(entry, dict) else None
    return None


async def check_pair(
    reactor: Any,
    source: DemoServer,
    destination: DemoServer,
    *,
    run_dir: Path,
    context: FederationContext,
    client: FederationClient,
) -> PairResult:
    """Resolve, fetch keys of, and send a signed profile query from ``source`` to ``destination``.

    Then read ``destination``'s request log for the request, authenticated with ``source``
    as origin: proof that the receiver resolved the sender and verified its keys.
    """
    from twisted.internet.defer import Deferred  # noqa: PLC0415
    from twisted.internet.task import deferLater  # noqa: PLC0415

    src, dst = source.server_name, destination.server_name

    def fail(step: str, path: str, error: str) -> PairResult:
        return PairResult(src, dst, path, ok=False, failed_step=step, error=error)

    resolution = await context.resolver.resolve(dst)
    if not resolution.ok:
        return fail("resolve", "unresolved", str(resolution.error))
    path = _path_of(resolution, None)
    try:
        await context.key_fetcher.fetch(dst)
    except Exception as e:  # any failure is this step's verdict
        return fail("keys", path, str(e))
    uri = f"/_matrix/federation/v1/query/profile?user_id=%40alice%3A{dst}"
    try:
        response = await client.request("GET", dst, uri)
    except Exception as e:
        return fail("signed request", path, str(e))
    path = _path_of(resolution, context.agent.connected_target(dst))
    if response.status != 200:
        return fail("signed request", path, f"HTTP {response.status}: {response.body[:200]!r}")
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    log_path = run_dir / f"{destination.slug}.requests.jsonl"
    while (entry := _log_shows(log_path, src, uri)) is None and time.monotonic() < deadline:
        d: Deferred[None] = deferLater(reactor, POLL_INTERVAL_SECONDS, lambda: None)
        await d
    if entry is None:
        return fail("receiver log", path, f"{dst}'s request log has no request from {src}")
    if entry.get("authenticated") is not True:
        return fail(
            "receiver log", path, f"{dst} did not authenticate {src}: {entry.get('auth_error')}"
        )
    return PairResult(src, dst, path, ok=True)


async def check_all_pairs(
    reactor: Any, run_dir: Path, servers: Sequence[DemoServer] = TRIO
) -> list[PairResult]:
    """Every ordered pair, each sender with its own config, agent and identity."""
    from twisted.internet.defer import Deferred, gatherResults  # noqa: PLC0415

    from stubserver.client.build import build_federation_client  # noqa: PLC0415
    from stubserver.client.signed_request import FederationClient, FederationIdentity  # noqa: PLC0415
    from stubserver.config import load_config  # noqa: PLC0415

    pending: list[Deferred[PairResult]] = []
    for s in servers:
        config = load_config(run_dir / f"{s.slug}.yaml")
        context = build_federation_client(reactor, config.federation)
        client = FederationClient(
            context.agent, FederationIdentity(config.server_name, config.signing_key), reactor
        )
        for d in servers:
            if d is not s:
                pending.append(
                    Deferred.fromCoroutine(
                        check_pair(reactor, s, d, run_dir=run_dir, context=context, client=client)
                    )
                )
    results: list[PairResult] = await gatherResults(pending, consumeErrors=True)
    return results


def _start(run_dir: Path) -> int:
    from stubserver.cli.reactor_main import react_main  # noqa: PLC0415

    procs = demo_processes(run_dir)
    began = time.monotonic()
    write_demo_files(run_dir)
    try:
        pids = start_processes(run_dir, procs)
    except DemoError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    print(f"started: {', '.join(f'{n} (pid {p})' for n, p in pids.items())}")
    results: list[PairResult] = []

    async def run_checks(reactor: Any) -> int:
        results.extend(await check_all_pairs(reactor, run_dir))
        return 0

    if react_main(run_checks) != 0:
        print("demo: the pair checks crashed; see above", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - began
    print()
    for s in TRIO:
        print(
            f"{s.server_name:<11} found by {s.method:<10} "
            f"{'(' + s.wellknown_value + ')' if s.wellknown_value else ''}"
        )
    print()
    print(format_matrix(TRIO, results))
    print()
    ok = all(r.ok for r in results)
    print(f"{sum(r.ok for r in results)}/{len(results)} pairs OK in {elapsed:.2f} s")
    print(f"configs, keys and CA: {run_dir}")
    print(f"logs: {run_dir}/*.log  request logs: {run_dir}/*.requests.jsonl")
    print("stop with demo/stop.sh; remove everything with demo/clean.sh")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stubserver.devtools.demo {start,stop} --dir DIR``."""
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="stubserver-demo")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    run_dir: Path = args.dir.resolve()
    if args.action == "stop":
        stopped = stop_processes(run_dir, demo_processes(run_dir))
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        return 0
    return _start(run_dir)


if __name__ == "__main__":
    sys.exit(main())
