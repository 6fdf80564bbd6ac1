"""Many servers in one process (issue 23): start-up time and memory of 1 and 100 servers.

For each count, a config is generated (``bench/work/many-N/``): the primary ``s1.bench``
and a generator entry ``s{i}.bench`` for the others, each with its own signing key and a
certificate from one CA, all on one TLS listener (127.0.0.1, port 0) with a control
listener. Then, ``--repeat`` times, ``stubserver run`` is started and measured:

- ``ready_s``: wall time from ``Popen`` to the ready line (every listener bound);
- ``ready_cpu_s``: the process's CPU time (user + system) at that moment, the figure to
  trust on a loaded machine;
- ``idle_rss_mb``: VmRSS one second after the ready line;
- ``reached_rss_mb``: VmRSS once every server has answered one ``GET
  /_matrix/key/v2/server`` (SNI and Host naming it): the cost of servers that were used.

The median of the repeats is reported, with the per-server cost beyond the first
(``(figure(N) - figure(1)) / (N - 1)``).

``--fanout N`` adds a room of N + 1 servers of one process (``Peer.start_many``: each on a
listener of its own, named ``127.0.0.1:<port>``): the N others join the first one's
public room through the control API, one after the other (``join_all_s``), then the
first sends one message (``last_arrival_s``: until every one of the N has it in its
room, polled through their control APIs), with the ``/send`` transactions the N received
for it and the process's RSS and CPU time at the end. Not part of CI.

    .venv/bin/python bench/many.py [--counts 1 100] [--repeat 3] [--fanout N] [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stubserver.signing.keys import ServerSigningKey  # noqa: E402
from stubserver.tls.certificates import issue_cert, make_ca  # noqa: E402

WORK = REPO / "bench" / "work"
READY_TIMEOUT_S = 60.0
IDLE_WAIT_S = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def write_config(directory: Path, count: int) -> Path:
    """Keys, certificates (one CA) and the config of ``count`` servers in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca("bench many CA")
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    for i in range(1, count + 1):
        (directory / f"s{i}.signing.key").write_text(ServerSigningKey.generate(f"a_s{i}").to_line())
        pair = issue_cert([f"s{i}.bench"], ca)
        (directory / f"s{i}.crt").write_bytes(pair.cert_pem)
        (directory / f"s{i}.key").write_bytes(pair.key_pem)
    config: dict[str, Any] = {
        "server_name": "s1.bench",
        "signing_key_path": "s1.signing.key",
        "tls_certificate_path": "s1.crt",
        "tls_private_key_path": "s1.key",
        "listeners": [
            {"port": 0, "bind_addresses": ["127.0.0.1"], "resources": ["federation"]},
            {"port": 0, "bind_addresses": ["127.0.0.1"], "resources": ["control"]},
        ],
        "control_token": "bench",
        "log_level": "warn",
    }
    if count > 1:
        config["servers"] = [
            {
                "server_name": "s{i}.bench",
                "count": count - 1,
                "start": 2,
                "signing_key_path": "s{i}.signing.key",
                "tls_certificate_path": "s{i}.crt",
                "tls_private_key_path": "s{i}.key",
            }
        ]
    path = directory / "stubserver.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB / 1024


def read_ready(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise RuntimeError("no ready line")
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError("stubserver run exited before its ready line")
            buffer += chunk
    ready: dict[str, Any] = json.loads(buffer.split(b"\n", 1)[0])
    return ready


def reach(port: int, name: str, context: ssl.SSLContext) -> None:
    """One key request to ``name`` (SNI and Host), checked to be answered as ``name``."""
    import http.client  # noqa: PLC0415

    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)

    def connect() -> None:
        http.client.HTTPConnection.connect(connection)
        connection.sock = context.wrap_socket(connection.sock, server_hostname=name)

    connection.connect = connect  # type: ignore[method-assign]
    try:
        connection.request("GET", "/_matrix/key/v2/server", headers={"Host": name})
        body = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    if body.get("server_name") != name:
        raise RuntimeError(f"{name}: answered as {body.get('server_name')}")


def measure_once(config: Path, count: int) -> dict[str, float]:
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "stubserver", "run", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    try:
        ready = read_ready(process)
        ready_s = time.monotonic() - started
        ready_cpu = cpu_seconds(process.pid)
        time.sleep(IDLE_WAIT_S)
        idle = rss_mb(process.pid)
        port = next(e["port"] for e in ready["listeners"] if "federation" in e["resources"])
        context = ssl.create_default_context(cafile=str(config.parent / "ca.crt"))
        before = cpu_seconds(process.pid)
        for i in range(1, count + 1):
            reach(port, f"s{i}.bench", context)
        reached = rss_mb(process.pid)
        reach_cpu = cpu_seconds(process.pid) - before
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        if process.stdout is not None:
            process.stdout.close()
    return {
        "ready_s": ready_s,
        "ready_cpu_s": ready_cpu,
        "idle_rss_mb": idle,
        "reached_rss_mb": reached,
        "reach_all_cpu_s": reach_cpu,
    }


def fanout(count: int) -> dict[str, Any]:
    """A room of ``count + 1`` servers of one process: joins, then one message to all."""
    from stubserver.testing import Peer  # noqa: PLC0415

    directory = WORK / f"fanout-{count}"
    started = time.monotonic()
    with Peer.start_many(directory, count + 1, allow_ips=["127.0.0.0/8"], timeout=120) as group:
        ready_s = time.monotonic() - started
        host, *others = group
        pid = group.process.process.pid
        room = host.create_room(preset="public_chat")
        began = time.monotonic()
        for peer in others:
            peer.join(room.room_id, via=[host.server_name])
        join_all_s = time.monotonic() - began
        marks = [len(peer.requests()) for peer in others]
        began = time.monotonic()
        sent = host.send_message(room.room_id, "hello, everyone")
        for peer in others:
            peer.wait_for_event(room.room_id, event_id=sent, timeout=120)
        last_arrival_s = time.monotonic() - began
        transactions = sum(
            1
            for peer, mark in zip(others, marks, strict=True)
            for r in peer.requests(mark)
            if r["uri"].startswith("/_matrix/federation/v1/send/")
        )
        return {
            "servers": count + 1,
            "ready_s": round(ready_s, 3),
            "join_all_s": round(join_all_s, 3),
            "last_arrival_s": round(last_arrival_s, 3),
            "transactions_received": transactions,
            "rss_mb": round(rss_mb(pid), 1),
            "cpu_s": round(cpu_seconds(pid), 2),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--fanout", type=int, default=0, metavar="N")
    args = parser.parse_args()
    results: dict[str, Any] = {"counts": {}}
    if args.fanout:
        results["fanout"] = fanout(args.fanout)
        print(f"fan-out to {args.fanout}: {results['fanout']}")
    for count in args.counts if not args.fanout else ():
        config = write_config(WORK / f"many-{count}", count)
        measure_once(config, count)  # warm-up: bytecode, page cache
        runs = [measure_once(config, count) for _ in range(args.repeat)]
        median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        results["counts"][str(count)] = {"median": median, "runs": runs}
        print(f"{count:>4} servers: " + ", ".join(f"{k} {v:.3f}" for k, v in median.items()))
    counts = sorted(int(c) for c in results["counts"])
    if len(counts) > 1:
        low, high = (results["counts"][str(c)]["median"] for c in (counts[0], counts[-1]))
        per = {
            f"{key}_per_server": (high[key] - low[key]) / (counts[-1] - counts[0])
            for key in ("idle_rss_mb", "reached_rss_mb", "ready_cpu_s")
        }
        results["per_server_beyond_the_first"] = per
        print("per server beyond the first: " + ", ".join(f"{k} {v:.4f}" for k, v in per.items()))
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
