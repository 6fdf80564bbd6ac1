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

This module starts and stops the processes; :mod:`stubserver.devtools.demo_world` writes the
files, :mod:`stubserver.devtools.demo_pairs` checks every pair, and
:mod:`stubserver.devtools.demo_room` then holds a conversation in ``#lobby:alpha.demo``
through the servers' control APIs (one more round of messages per start).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stubserver.control.client import ControlUnreachable
from stubserver.devtools.demo_evidence import ROOM_ALIAS, summary_line
from stubserver.devtools.demo_pairs import PairResult, check_all_pairs, format_matrix
from stubserver.devtools.demo_room import RoomDemoError, format_room, run_room
from stubserver.devtools.demo_world import (
    CONTROL_PORT,
    DEFAULT_NETWORK,
    DNS_PORT,
    NETWORK_FILE,
    POLL_INTERVAL_SECONDS,
    WELL_KNOWN_PORT,
    dns_address,
    parse_network,
    recorded_network,
    trio,
    write_demo_files,
)
from stubserver.reactor import IReactor

#: How long start-up may take before we give up on a process, in seconds.
READY_TIMEOUT_SECONDS = 15.0
#: How long stop waits for a process to exit after SIGTERM before SIGKILL, in seconds.
STOP_TIMEOUT_SECONDS = 5.0


# -- processes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoProcess:
    """A background process the demo starts: its name, command and where its files go."""

    name: str
    argv: tuple[str, ...]
    binds: tuple[tuple[str, int], ...]  # TCP addresses it listens on, checked before start


def demo_processes(
    run_dir: Path, network: ipaddress.IPv4Network = DEFAULT_NETWORK
) -> list[DemoProcess]:
    """The DNS server and one ``stubserver run`` per server, in ``network``."""
    py = sys.executable
    dns = dns_address(network)
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
                f"{dns}:{DNS_PORT}",
            ),
            binds=((dns, DNS_PORT),),
        )
    ]
    for s in trio(network):
        binds = [(s.fed_address, s.fed_port), (s.fed_address, CONTROL_PORT)]
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


def _start(run_dir: Path, network: ipaddress.IPv4Network) -> int:
    from stubserver.reactor import react_main  # noqa: PLC0415

    servers = trio(network)
    procs = demo_processes(run_dir, network)
    began = time.monotonic()
    write_demo_files(run_dir, network)
    try:
        pids = start_processes(run_dir, procs)
    except DemoError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    print(f"started: {', '.join(f'{n} (pid {p})' for n, p in pids.items())}")
    results: list[PairResult] = []

    async def run_checks(reactor: IReactor) -> int:
        results.extend(await check_all_pairs(reactor, run_dir, servers))
        return 0

    if react_main(run_checks) != 0:
        print("demo: the pair checks crashed; see above", file=sys.stderr)
        return 1
    pairs_elapsed = time.monotonic() - began
    print()
    for s in servers:
        print(
            f"{s.server_name:<11} found by {s.method:<10} "
            f"{'(' + s.wellknown_value + ')' if s.wellknown_value else ''}"
        )
    print()
    print(format_matrix(servers, results))
    print()
    ok = all(r.ok for r in results)
    print(f"{sum(r.ok for r in results)}/{len(results)} pairs OK in {pairs_elapsed:.2f} s")
    print()
    try:
        room = run_room(run_dir, servers)
    except (RoomDemoError, ControlUnreachable) as e:
        print(f"demo: the room failed: {e}", file=sys.stderr)
        return 1
    print(format_room(room))
    print()
    print(f"configs, keys and CA: {run_dir}")
    print(f"logs: {run_dir}/*.log  request logs: {run_dir}/*.requests.jsonl")
    print(f"the room from any server: stubserver room show '{ROOM_ALIAS}' -c {run_dir}/beta.yaml")
    print("stop with demo/stop.sh; remove everything with demo/clean.sh")
    elapsed = time.monotonic() - began
    print(f"{summary_line(len(servers), room.messages, room.ok, room.expected)} ({elapsed:.2f} s)")
    return 0 if ok and room.ok == room.expected else 1


def _network_argument(text: str) -> ipaddress.IPv4Network:
    import argparse  # noqa: PLC0415

    try:
        return parse_network(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stubserver.devtools.demo {start,stop} --dir DIR [--network NET]``.

    ``--network`` (start only) places a new folder's demo in another /24 of loopback; the
    folder keeps the network it was made for, and stop finds its processes there.
    """
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="stubserver-demo")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument(
        "--network",
        type=_network_argument,
        help=f"a /24 of loopback for a new folder's demo (default {DEFAULT_NETWORK})",
    )
    args = parser.parse_args(argv)
    run_dir: Path = args.dir.resolve()
    try:
        recorded = recorded_network(run_dir)
    except ValueError as e:
        print(f"demo: {run_dir}/{NETWORK_FILE}: {e}", file=sys.stderr)
        return 2
    if args.action == "stop":
        procs = demo_processes(run_dir, recorded or DEFAULT_NETWORK)
        stopped = stop_processes(run_dir, procs)
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        return 0
    asked: ipaddress.IPv4Network | None = args.network
    if recorded is not None and asked not in (None, recorded):
        print(
            f"demo: {run_dir} was made for {recorded}, not {asked}: use another folder"
            " (STUBSERVER_DEMO_DIR) or remove this one with demo/clean.sh",
            file=sys.stderr,
        )
        return 2
    return _start(run_dir, recorded or asked or DEFAULT_NETWORK)


if __name__ == "__main__":
    sys.exit(main())
