"""Outbound benchmark: 1,000 distinct server names resolved and their keys fetched.

Run by ``bench/bench.py`` (or alone: ``.venv/bin/python bench/outbound.py --work DIR``).

Set-up (all loopback, all verified TLS from a private CA):

- our DNS server (``python -m stubserver.devtools.dns_server``) with a zone for 1,000 names
  ``sNNNN.out.bench``, a third each found by a different step of the spec's resolution:
  ``direct`` (A record, default port), ``well-known`` (``/.well-known/matrix/server``
  delegates to ``fNNNN.out.bench:8448``) and ``srv`` (``_matrix-fed._tcp`` points to one of
  the peers' host names);
- the stub peers: one nginx serving, on a handful of addresses, a pre-signed key document
  for each name (chosen by the Host header the spec prescribes) and the well-known answers
  (404 for names that do not delegate);

then, in this one Python process, stubserver's own outbound stack
(``build_federation_client(...).key_fetcher.fetch_report(name)``: resolution, TLS,
key fetch, signature check), at most ``--concurrency`` names in flight. Prints one JSON
line: total time, how many verified, peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAMES = 1000
CONCURRENCY = 50
PEERS = [f"127.0.77.{101 + i}" for i in range(5)]
DNS = ("127.0.77.53", 5353)
FED_PORT = 8448
WELL_KNOWN_PORT = 8443
ZONE = "out.bench"
READY_TIMEOUT_SECONDS = 30.0
#: The whole measured run may take at most this long.
RUN_TIMEOUT_SECONDS = 600.0


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) * 1024 / 1e6, 1)
    return 0.0


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) * 1024 / 1e6, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6, 1)


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def build(work: Path) -> list[str]:
    """Write CA, certificate, zone, key documents and nginx config; return the names."""
    from stubserver.server_keys.key_document import build_key_document  # noqa: PLC0415
    from stubserver.signing.canonical_json import encode_canonical_json  # noqa: PLC0415
    from stubserver.signing.keys import ServerSigningKey  # noqa: PLC0415
    from stubserver.tls.certificates import issue_cert, make_ca  # noqa: PLC0415

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ca = make_ca("stubserver bench outbound CA")
    write(work / "ca.crt", ca.cert_pem)
    pair = issue_cert([f"*.{ZONE}"], ca)
    write(work / "peer.crt", pair.cert_pem)
    write(work / "peer.key", pair.key_pem)
    valid_until = int(time.time() * 1000) + 24 * 3600 * 1000
    records: list[dict[str, Any]] = []
    for j, ip in enumerate(PEERS):
        records.append({"name": f"peer{j}.{ZONE}", "type": "A", "value": ip, "ttl": 3600})
    names = []
    key = ServerSigningKey.generate("bench")  # one key, 1,000 documents: signing is not measured
    for i in range(NAMES):
        name = f"s{i:04d}.{ZONE}"
        names.append(name)
        peer = i % len(PEERS)
        ip = PEERS[peer]
        method = ("direct", "well-known", "srv")[i % 3]
        records.append({"name": name, "type": "A", "value": ip, "ttl": 3600})
        doc = encode_canonical_json(build_key_document(name, [key], {}, valid_until))
        if method == "well-known":
            fed = f"f{i:04d}.{ZONE}"
            records.append({"name": fed, "type": "A", "value": ip, "ttl": 3600})
            write(
                work / "wk" / name / "server.json",
                json.dumps({"m.server": f"{fed}:{FED_PORT}"}),
            )
            write(work / "docs" / fed / "key.json", doc)
        else:
            if method == "srv":
                records.append(
                    {
                        "name": f"_matrix-fed._tcp.{name}",
                        "type": "SRV",
                        "priority": 10,
                        "weight": 5,
                        "port": FED_PORT,
                        "target": f"peer{peer}.{ZONE}",
                        "ttl": 3600,
                    }
                )
            write(work / "docs" / name / "key.json", doc)
    write(work / "zone.json", json.dumps({"records": records}))
    for t in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / "nginx-tmp" / t).mkdir(parents=True, exist_ok=True)
    fed_listen = "\n".join(f"        listen {ip}:{FED_PORT} ssl;" for ip in PEERS)
    wk_listen = "\n".join(f"        listen {ip}:{WELL_KNOWN_PORT} ssl;" for ip in PEERS)
    write(
        work / "nginx.conf",
        f"""
user root;
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-tmp/body;
    proxy_temp_path {work}/nginx-tmp/proxy;
    fastcgi_temp_path {work}/nginx-tmp/fastcgi;
    uwsgi_temp_path {work}/nginx-tmp/uwsgi;
    scgi_temp_path {work}/nginx-tmp/scgi;
    ssl_certificate {work}/peer.crt;
    ssl_certificate_key {work}/peer.key;
    default_type application/json;
    server {{
{fed_listen}
        location = /_matrix/key/v2/server {{ root {work}/docs/$host; try_files /key.json =404; }}
    }}
    server {{
{wk_listen}
        location = /.well-known/matrix/server {{
            root {work}/wk/$host; try_files /server.json =404;
        }}
    }}
}}
""",
    )
    return names


def wait_line(proc: subprocess.Popen[str], what: str) -> str:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            return line
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
    raise RuntimeError(f"{what} not ready after {READY_TIMEOUT_SECONDS}s")


def wait_port(host: str, port: int) -> None:
    import socket  # noqa: PLC0415

    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {host}:{port}")


def measure(work: Path, names: list[str], concurrency: int) -> dict[str, Any]:
    """Resolve and fetch every name's keys in this process; the measured part."""
    from twisted.internet import defer  # noqa: PLC0415

    from stubserver.config import FederationSettings  # noqa: PLC0415
    from stubserver.outbound.build import build_federation_client  # noqa: PLC0415

    settings = FederationSettings(
        ca_files=(work / "ca.crt",),
        dns_servers=(DNS,),
        ip_range_allowlist=("127.0.0.0/8",),
        well_known_port=WELL_KNOWN_PORT,
        default_port=FED_PORT,
    )
    out: dict[str, Any] = {}

    async def body(reactor: Any) -> None:
        context = build_federation_client(reactor, settings)
        sem = defer.DeferredSemaphore(concurrency)
        errors: dict[str, int] = {}
        sources: dict[str, int] = {}
        ok = 0
        rss_before = rss_mb()
        started = time.monotonic()

        async def one(name: str) -> None:
            nonlocal ok
            report = await sem.run(context.key_fetcher.fetch_report, name)
            if report.ok:
                ok += 1
                if report.target is not None:
                    sources[report.target.source] = sources.get(report.target.source, 0) + 1
            else:
                errors[str(report.error)[:120]] = errors.get(str(report.error)[:120], 0) + 1

        all_done = defer.gatherResults([defer.Deferred.fromCoroutine(one(n)) for n in names])
        all_done.addTimeout(RUN_TIMEOUT_SECONDS, reactor)
        await all_done
        total = time.monotonic() - started
        out.update(
            {
                "names": len(names),
                "concurrency": concurrency,
                "ok": ok,
                "failed": len(names) - ok,
                "errors": errors,
                "sources": sources,
                "total_seconds": round(total, 3),
                "names_per_second": round(len(names) / total, 1),
                "rss_before_mb": rss_before,
                "rss_after_mb": rss_mb(),
                "peak_rss_mb": peak_rss_mb(),
                "open_fds_after": len(os.listdir("/proc/self/fd")),
            }
        )

    from twisted.internet import reactor  # noqa: PLC0415 - this script's main owns it

    failures: list[Any] = []
    d = defer.Deferred.fromCoroutine(body(reactor))
    d.addErrback(failures.append)
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    if failures:
        failures[0].raiseException()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    args = parser.parse_args()
    args.work = args.work.resolve()
    names = build(args.work)
    dns = nginx = None
    result: dict[str, Any] = {}
    try:
        dns = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stubserver.devtools.dns_server",
                "--zone",
                str(args.work / "zone.json"),
                "--listen",
                f"{DNS[0]}:{DNS[1]}",
            ],
            stdout=subprocess.PIPE,
            stderr=open(args.work / "dns.log", "w"),  # noqa: SIM115
            text=True,
            cwd=ROOT,
        )
        wait_line(dns, "DNS server")
        nginx = subprocess.Popen(
            [
                "nginx",
                "-c",
                str(args.work / "nginx.conf"),
                "-e",
                str(args.work / "nginx-error.log"),
            ],
            stdin=subprocess.DEVNULL,
        )
        for ip in PEERS:
            wait_port(ip, FED_PORT)
            wait_port(ip, WELL_KNOWN_PORT)
        result = measure(args.work, names, args.concurrency)
    finally:
        for proc in (nginx, dns):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(10)
    print(json.dumps(result), flush=True)
    return 0 if result.get("ok") == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
