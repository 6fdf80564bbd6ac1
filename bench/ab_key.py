"""Interleaved A/B of the key endpoint over TLS (issue 22): ``/_matrix/key/v2/server``
from stubserver of two source trees and from the bare twisted.web server
(``bench/bare_tls.py --mode web``), in rounds, with ``bench/bench.py``'s wrk command
(``wrk -t2 -c16 -d10s --latency``), its CA and certificates.

    .venv/bin/python bench/ab_key.py /tmp/main-tree --rounds 5
    .venv/bin/python bench/ab_key.py /tmp/main-tree --full   # request log and control
    .venv/bin/python bench/ab_key.py /tmp/main-tree --net 127.0.79   # beside another run

Both trees run with this tree's ``.venv`` (the same dependencies); the old tree's code
comes first on ``PYTHONPATH``. Each round starts every server afresh, warms it with 2 s
of wrk, then measures; the order rotates each round, so drift in the machine's load
(other work shares its two CPUs) falls on all three alike. ``--full`` adds a request
log file and a control listener (the request feed) to both stubservers' config: the
request path as the demo and the tests run it. The servers listen on 127.0.78.x, apart
from ``bench/run``'s 127.0.77.x (``--net`` moves them and the control port, for a
second run at once). Prints every run, the medians, the ratios to the bare
server, the server's CPU time per request (``/proc/PID/stat``: other work on the machine
does not add to it) and the 1-minute load before each run, and a JSON line with it all.
Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import bench  # noqa: E402

ADDRESSES = {"stubserver": "127.0.78.31", "bare_twisted": "127.0.78.34"}
WARM_SECONDS = 2
CONTROL_PORT = 18009


def full_config(path: Path, control_port: int = CONTROL_PORT) -> None:
    """Add a request log and a control listener to the stubserver config at ``path``."""
    config = yaml.safe_load(path.read_text())
    config["request_log_path"] = "requests.jsonl"
    config["listeners"].append(
        {"port": control_port, "bind_addresses": ["127.0.0.1"], "resources": ["control"]}
    )
    config["control_token"] = "ab-key-token"  # noqa: S105 - a loopback bench server
    path.write_text(yaml.safe_dump(config))


def stub_argv(setup: bench.Setup) -> list[str]:
    return [str(bench.VENV_PY), "-m", "stubserver", "run", "-c", str(setup.configs["stubserver"])]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    name: str, argv: list[str], env: dict[str, str] | None, address: str
) -> tuple[Any, float]:
    """The wrk result of one measured run, and the server's CPU microseconds per request
    in it (load-insensitive: other processes on the CPUs do not add to it)."""
    # Started outside both trees: ``python -m`` puts the working directory first on
    # sys.path, which would load this tree's code for the old tree too.
    proc = bench.spawn(name, argv, env, cwd=bench.RUN)
    try:
        bench.wait_serving(proc, address, path=bench.KEY_PATH)
        url = f"https://{address}:{bench.PORT}{bench.KEY_PATH}"
        bench.wrk(url, seconds=WARM_SECONDS)
        before = cpu_seconds(proc.pid)
        result = bench.wrk(url)
        cpu = cpu_seconds(proc.pid) - before
    finally:
        bench.stop(proc)
    if result.non_2xx or result.socket_errors:
        raise RuntimeError(f"{name}: {result.non_2xx} non-2xx, {result.socket_errors} errors")
    return result, cpu * 1e6 / max(result.requests, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="the other source tree (its stubserver/)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--full", action="store_true", help="request log and control listener")
    parser.add_argument(
        "--net",
        default="127.0.78",
        help="the first three octets of the servers' addresses (another for a second run at once)",
    )
    args = parser.parse_args()
    control_port = CONTROL_PORT
    if args.net != "127.0.78":
        ADDRESSES.update(
            {name: f"{args.net}.{addr.rsplit('.', 1)[1]}" for name, addr in ADDRESSES.items()}
        )
        control_port += int(args.net.rsplit(".", 1)[1]) % 100
    bench.ADDR.update(ADDRESSES)
    bench.RUN = bench.WORK / "ab-key"
    setup = bench.make_setup()
    if args.full:
        full_config(setup.configs["stubserver"], control_port)
    bench.fetch_key_document(setup)
    old_env = {**os.environ, "PYTHONPATH": str(args.old.resolve())}
    bare = bench.BareTwisted(setup).argv()
    servers: list[tuple[str, list[str], dict[str, str] | None, str]] = [
        ("old", stub_argv(setup), old_env, ADDRESSES["stubserver"]),
        ("new", stub_argv(setup), None, ADDRESSES["stubserver"]),
        ("bare_twisted", bare, None, ADDRESSES["bare_twisted"]),
    ]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in servers}
    try:
        for round_index in range(args.rounds):
            shift = round_index % len(servers)
            for name, argv, env, address in servers[shift:] + servers[:shift]:
                result, cpu_us = measure(name, argv, env, address)
                runs[name].append(
                    {
                        "rps": round(result.rps, 1),
                        "cpu_us_per_request": round(cpu_us, 1),
                        "p50_ms": result.p50_ms,
                        "p99_ms": result.p99_ms,
                        "load": result.loadavg,
                    }
                )
                print(f"round {round_index + 1} {name}: {runs[name][-1]}", flush=True)
    finally:
        bench.stop_all()
    medians = {name: statistics.median(r["rps"] for r in rs) for name, rs in runs.items()}
    cpu = {
        name: statistics.median(r["cpu_us_per_request"] for r in rs) for name, rs in runs.items()
    }
    summary = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "full": args.full,
        "old": str(args.old),
        "median_rps": medians,
        "median_cpu_us_per_request": cpu,
        "new_vs_bare": round(medians["new"] / medians["bare_twisted"], 3),
        "old_vs_bare": round(medians["old"] / medians["bare_twisted"], 3),
        "new_vs_old": round(medians["new"] / medians["old"], 3),
        "runs": runs,
    }
    for key in ("median_rps", "median_cpu_us_per_request", "new_vs_bare", "old_vs_bare"):
        print(f"{key}: {summary[key]}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
