"""Side-by-side benchmark: stubserver, a real Synapse, a real Dendrite, nginx and a bare
Twisted TLS server.

Run through ``bench/run`` (it makes sure of .venv, wrk and nginx). Everything listens on
loopback (127.0.77.0/24), one server under load at a time, on the same machine and in one
run. Prints a table and writes ``bench/results.json``. Work files go to ``bench/work/``.
Dendrite (issue 21) is the exception to loopback: it runs in the interop harness's network
namespace (tests/interop/dendrite.py), where this file measures it (``ns-measure-dendrite``).

What is measured (issue 8; see bench/README.md):

- start-up: ``Popen`` to the first successful TLS response of
  ``GET /_matrix/federation/v1/version``, median of 5 (after one unmeasured warm-up start
  that compiles bytecode and, for Synapse, creates its database);
- resident memory (VmRSS summed over the process tree) idle, and after >= 100,000 requests;
- ``wrk -t2 -c16 -d10s --latency`` (TLS, keep-alive) against the key endpoint, the version
  endpoint and an X-Matrix authenticated profile query (key of the signing peer cached);
- outbound: 1,000 distinct names resolved through our DNS server and their keys fetched,
  in one Python process through stubserver's own agent (``bench/outbound.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / "work"
RUN = WORK / "run"
RESULTS = BENCH / "results.json"
VENV_PY = ROOT / ".venv" / "bin" / "python"
SYNAPSE_REQUIREMENTS = ROOT / "tests" / "interop" / "synapse-requirements.txt"

PORT = 8448
ADDR = {
    "stubserver": "127.0.77.31",
    "synapse": "127.0.77.32",
    "nginx": "127.0.77.33",
    "bare_twisted": "127.0.77.34",
    "bare_twisted_raw": "127.0.77.35",
    "signer": "127.0.0.1",
    "dns": "127.0.77.53",
}
SYNAPSE_CLIENT_PORT = 8008
DNS_PORT = 5353
SERVER_NAME = {
    "stubserver": "stub.bench",
    "synapse": "synapse.bench",
}
#: The signing peer's name. Synapse refuses IP-literal server names in its blocklist even
#: when ``ip_range_whitelist`` allows them (its BlocklistingAgentWrapper gets no allowlist),
#: so the signer is ``localhost`` with an explicit port: the system resolver (/etc/hosts)
#: finds it for Synapse and stubserver alike, with no SRV or .well-known step.
SIGNER_HOST = "localhost"
SIGNER_ADDRESS = "127.0.0.1"
SIGNER_PORT_FIRST = 38448
SIGNER_PORT_TRIES = 100


def _free_port(address: str, first: int, tries: int) -> int:
    for port in range(first, first + tries):
        with socket.socket() as s:
            try:
                s.bind((address, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {address} in {first}..{first + tries - 1}")


SIGNER_PORT = _free_port(SIGNER_ADDRESS, SIGNER_PORT_FIRST, SIGNER_PORT_TRIES)
SIGNER_NAME = f"{SIGNER_HOST}:{SIGNER_PORT}"
SIGNER_KEY_VERSION = "bench"
USER = "alice"

WRK_THREADS = 2
WRK_CONNECTIONS = 16
WRK_SECONDS = 10
#: Longest single wrk run used to top a server up to REQUESTS_FOR_MEMORY, in seconds.
WRK_TOPUP_MAX_SECONDS = 120
REQUESTS_FOR_MEMORY = 100_000
STARTUP_RUNS = 5
STARTUP_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.01
IDLE_SETTLE_SECONDS = 2.0
KEY_PATH = "/_matrix/key/v2/server"
VERSION_PATH = "/_matrix/federation/v1/version"

# Targets from issue 8.
TARGET_KEY_RPS_VS_SYNAPSE = 4.0
TARGET_STARTUP_VS_SYNAPSE = 0.25
TARGET_RSS_VS_FLOOR = 1.10


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    started: float
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid


_running: list[Proc] = []


def spawn(
    name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> Proc:
    log_path = RUN / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        started = time.monotonic()
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    proc = Proc(name, popen, started, log_path)
    _running.append(proc)
    return proc


def stop(proc: Proc) -> None:
    if proc.popen.poll() is None:
        proc.popen.send_signal(signal.SIGTERM)
        try:
            proc.popen.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            log(f"{proc.name} did not stop in {STOP_TIMEOUT_SECONDS}s; SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.popen.wait(STOP_TIMEOUT_SECONDS)
    if proc in _running:
        _running.remove(proc)


def stop_all() -> None:
    for proc in list(_running):
        stop(proc)


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (via /proc/PID/task/*/children)."""
    found = [pid]
    i = 0
    while i < len(found) and i < 1000:
        p = found[i]
        i += 1
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def rss_mb(pid: int) -> float:
    """VmRSS summed over the process tree of ``pid``, in MB (10^6 bytes)."""
    total_kb = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return round(total_kb * 1024 / 1e6, 1)


# --------------------------------------------------------------------------- TLS client


def client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(RUN / "ca.crt"))
    return ctx


def https_get(
    address: str,
    path: str,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
    port: int = PORT,
    *,
    context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection(
        address, port, context=context or client_context(), timeout=timeout
    )
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_serving(
    proc: Proc,
    address: str,
    path: str = VERSION_PATH,
    port: int = PORT,
    context: ssl.SSLContext | None = None,
) -> float:
    """Seconds from spawning ``proc`` to its first successful (2xx) TLS response."""
    deadline = proc.started + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}); see {proc.log_path}")
        try:
            status, _ = https_get(address, path, timeout=2.0, port=port, context=context)
        except (OSError, http.client.HTTPException):
            time.sleep(POLL_SECONDS)
            continue
        if 200 <= status < 300:
            return time.monotonic() - proc.started
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"{proc.name} not serving after {STARTUP_TIMEOUT_SECONDS}s")


# --------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    command: str
    loadavg: float = 0.0
    runs: list[float] = field(default_factory=list)
    total_requests: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "runs_requests_per_second": self.runs,
            "loadavg_1min_before": self.loadavg,
            "requests_per_second": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "requests": self.requests,
            "seconds": self.seconds,
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
            "command": self.command,
        }


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _latency_ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(output: str, command: str) -> WrkResult:
    m = re.search(r"(\d+) requests in ([0-9.]+)(s|m)", output)
    if not m:
        raise RuntimeError(f"wrk output not understood:\n{output}")
    seconds = float(m.group(2)) * (60 if m.group(3) == "m" else 1)
    p = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.M))
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", output)
    return WrkResult(
        requests=int(m.group(1)),
        seconds=seconds,
        rps=float(rps.group(1)) if rps else int(m.group(1)) / seconds,
        p50_ms=_latency_ms(p["50"]),
        p99_ms=_latency_ms(p["99"]),
        non_2xx=int(non.group(1)) if non else 0,
        socket_errors=sum(int(x) for x in err.groups()) if err else 0,
        command=command,
    )


def wrk(url: str, seconds: int = WRK_SECONDS, script: Path | None = None) -> WrkResult:
    argv = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{seconds}s",
        "--latency",
    ]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    command = " ".join(argv).replace(str(ROOT) + "/", "")
    load = float(Path("/proc/loadavg").read_text().split()[0])
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    result = parse_wrk(out, command)
    result.loadavg = load
    result.runs = [round(result.rps, 1)]
    result.total_requests = result.requests
    log(
        f"  {command}: {result.rps:.0f} req/s, p50 {result.p50_ms:.2f} ms,"
        f" p99 {result.p99_ms:.2f} ms, non-2xx {result.non_2xx}, errors {result.socket_errors}"
    )
    return result


def wrk_median(url: str, repeat: int, script: Path | None = None) -> WrkResult:
    """``repeat`` wrk runs; the run with the median requests/s, carrying every run's rate."""
    results = [wrk(url, script=script) for _ in range(repeat)]
    ordered = sorted(results, key=lambda r: r.rps)
    chosen = ordered[len(ordered) // 2]
    chosen.runs = [round(r.rps, 1) for r in results]
    chosen.total_requests = sum(r.requests for r in results)
    return chosen


# --------------------------------------------------------------------------- setup


def write(path: Path, data: str | bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    path.chmod(mode)
    return path


@dataclass
class Setup:
    ca: Any
    signer_key: Any
    configs: dict[str, Path] = field(default_factory=dict)


def make_setup() -> Setup:
    from stubserver.signing.keys import ServerSigningKey  # noqa: PLC0415
    from stubserver.tls.certificates import issue_cert, make_ca  # noqa: PLC0415

    if RUN.exists():
        shutil.rmtree(RUN)
    RUN.mkdir(parents=True)
    ca = make_ca("stubserver bench CA")
    write(RUN / "ca.crt", ca.cert_pem)
    for name in ("stubserver", "synapse", "nginx", "bare_twisted", "bare_twisted_raw", "signer"):
        names = [ADDR[name]]
        if name in SERVER_NAME:
            names.insert(0, SERVER_NAME[name])
        if name == "signer":
            names.insert(0, SIGNER_HOST)
        pair = issue_cert(names, ca)
        write(RUN / name / "tls.crt", pair.cert_pem)
        write(RUN / name / "tls.key", pair.key_pem, 0o600)
    signer_key = ServerSigningKey.generate(SIGNER_KEY_VERSION)
    setup = Setup(ca=ca, signer_key=signer_key)

    write(RUN / "signer" / "signing.key", signer_key.to_line(), 0o600)
    setup.configs["signer"] = write(
        RUN / "signer" / "config.yaml",
        yaml.safe_dump(
            {
                "server_name": SIGNER_NAME,
                "signing_key_path": "signing.key",
                "tls_certificate_path": "tls.crt",
                "tls_private_key_path": "tls.key",
                "listeners": [
                    {
                        "port": SIGNER_PORT,
                        "bind_addresses": [SIGNER_ADDRESS],
                        "resources": ["federation"],
                    }
                ],
            }
        ),
    )
    write(
        RUN / "stubserver" / "signing.key",
        ServerSigningKey.generate(SIGNER_KEY_VERSION).to_line(),
        0o600,
    )
    setup.configs["stubserver"] = write(
        RUN / "stubserver" / "config.yaml",
        yaml.safe_dump(
            {
                "server_name": SERVER_NAME["stubserver"],
                "signing_key_path": "signing.key",
                "tls_certificate_path": "tls.crt",
                "tls_private_key_path": "tls.key",
                "listeners": [
                    {
                        "port": PORT,
                        "bind_addresses": [ADDR["stubserver"]],
                        "resources": ["federation"],
                    }
                ],
                "users": {USER: {"displayname": "Alice"}},
                "federation_custom_ca_list": ["../ca.crt"],
                "ip_range_allowlist": ["127.0.0.0/8"],
            }
        ),
    )
    return setup


# --------------------------------------------------------------------------- servers


class Server:
    """One server under test: how to start it and what it serves."""

    name = ""
    authenticated = False

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.address = ADDR[self.name]

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def prepare(self) -> None:
        """One-off preparation (a warm-up start) before anything is measured."""

    def start(self) -> Proc:
        return spawn(self.name, self.argv(), self.env())

    def version(self) -> str:
        return ""

    def context(self) -> ssl.SSLContext | None:
        """The TLS context of the probes (None: the bench CA, the name checked)."""
        return None

    def auth(self) -> tuple[str, Path, dict[str, str]]:
        """The signed profile query: URL, wrk Lua script, headers (see auth_script)."""
        return auth_script(self, self.setup)


class StubServer(Server):
    name = "stubserver"
    authenticated = True

    def argv(self) -> list[str]:
        return [
            str(ROOT / ".venv" / "bin" / "stubserver"),
            "run",
            "-c",
            str(self.setup.configs["stubserver"]),
        ]

    def version(self) -> str:
        from stubserver import __version__  # noqa: PLC0415

        return __version__


class BareTwisted(Server):
    name = "bare_twisted"
    mode = "web"

    def argv(self) -> list[str]:
        d = RUN / self.name
        return [
            str(VENV_PY),
            str(BENCH / "bare_tls.py"),
            "--listen",
            f"{self.address}:{PORT}",
            "--cert",
            str(d / "tls.crt"),
            "--key",
            str(d / "tls.key"),
            "--body",
            str(RUN / "key.json"),
            "--mode",
            self.mode,
        ]

    def version(self) -> str:
        import twisted  # noqa: PLC0415

        return f"Twisted {twisted.__version__}"


class BareTwistedRaw(BareTwisted):
    name = "bare_twisted_raw"
    mode = "raw"


class Nginx(Server):
    name = "nginx"

    def prepare(self) -> None:
        d = RUN / self.name
        for t in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (d / "nginx-tmp" / t).mkdir(parents=True, exist_ok=True)
        shutil.copy(RUN / "key.json", d / "key.json")
        write(d / "version.json", json.dumps({"server": {"name": "nginx", "version": "static"}}))
        write(
            d / "nginx.conf",
            f"""
user root;
worker_processes auto;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/nginx-tmp/body;
    proxy_temp_path {d}/nginx-tmp/proxy;
    fastcgi_temp_path {d}/nginx-tmp/fastcgi;
    uwsgi_temp_path {d}/nginx-tmp/uwsgi;
    scgi_temp_path {d}/nginx-tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server {{
        listen {self.address}:{PORT} ssl;
        ssl_certificate {d}/tls.crt;
        ssl_certificate_key {d}/tls.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location = {KEY_PATH} {{ default_type application/json; alias {d}/key.json; }}
        location = {VERSION_PATH} {{ default_type application/json; alias {d}/version.json; }}
    }}
}}
""",
        )

    def argv(self) -> list[str]:
        return [
            "nginx",
            "-c",
            str(RUN / self.name / "nginx.conf"),
            "-e",
            str(RUN / self.name / "error.log"),
        ]

    def version(self) -> str:
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
        return out.stderr.strip().split("/")[-1]


def synapse_venv() -> Path:
    """The venv holding the pinned matrix-synapse: the interop tests' cached one when
    present (tests/.cache/synapse-VERSION-HASH), else ours, installed on first use."""
    pin = SYNAPSE_REQUIREMENTS.read_text().split("matrix-synapse==", 1)[-1].split()[0]
    for cached in sorted((ROOT / "tests" / ".cache").glob(f"synapse-{pin}-*")):
        if (cached / "bin" / "python").exists() and (
            cached / "bin" / "register_new_matrix_user"
        ).exists():
            return cached
    venv = WORK / "synapse-venv"
    stamp = venv / ".bench-stamp"
    want = SYNAPSE_REQUIREMENTS.read_text()
    if stamp.exists() and stamp.read_text() == want and (venv / "bin" / "python").exists():
        return venv
    log(f"installing {want.strip().splitlines()[-1]} into {venv} (first use)")
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            str(SYNAPSE_REQUIREMENTS),
        ],
        check=True,
        timeout=1200,
    )
    stamp.write_text(want)
    return venv


class Synapse(Server):
    name = "synapse"
    authenticated = True

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.venv = synapse_venv()
        self.dir = RUN / self.name

    def _config(self, with_client: bool) -> dict[str, Any]:
        from stubserver.signing.keys import ServerSigningKey  # noqa: PLC0415

        d = self.dir
        if not (d / "signing.key").exists():
            write(d / "signing.key", ServerSigningKey.generate("a_bnch").to_line(), 0o600)
        listeners: list[dict[str, Any]] = [
            {
                "port": PORT,
                "bind_addresses": [self.address],
                "type": "http",
                "tls": True,
                "x_forwarded": False,
                "resources": [{"names": ["federation", "keys"], "compress": False}],
            }
        ]
        if with_client:
            listeners.append(
                {
                    "port": SYNAPSE_CLIENT_PORT,
                    "bind_addresses": [self.address],
                    "type": "http",
                    "tls": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            )
        big = 1_000_000_000
        return {
            "server_name": SERVER_NAME[self.name],
            "pid_file": str(d / "homeserver.pid"),
            "listeners": listeners,
            "database": {"name": "sqlite3", "args": {"database": str(d / "homeserver.db")}},
            "log_config": str(d / "log.yaml"),
            "media_store_path": str(d / "media"),
            "signing_key_path": str(d / "signing.key"),
            "tls_certificate_path": str(d / "tls.crt"),
            "tls_private_key_path": str(d / "tls.key"),
            "report_stats": False,
            "enable_metrics": False,
            "registration_shared_secret": "bench-shared-secret",
            "macaroon_secret_key": "bench-macaroon-secret",
            "form_secret": "bench-form-secret",
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_verify_certificates": True,
            "federation_custom_ca_list": [str(RUN / "ca.crt")],
            "ip_range_whitelist": ["127.0.0.0/8"],
            "presence": {"enabled": False},
            # Synapse throttles inbound federation per origin (rc_federation: 3 concurrent,
            # delays after 10/s); the load here comes from one origin, so lift it.
            "rc_federation": {
                "window_size": 1000,
                "sleep_limit": big,
                "sleep_delay": 1,
                "reject_limit": big,
                "concurrent": big,
            },
        }

    def prepare(self) -> None:
        d = self.dir
        write(
            d / "log.yaml",
            yaml.safe_dump(
                {
                    "version": 1,
                    "formatters": {
                        "f": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}
                    },
                    "handlers": {
                        "file": {
                            "class": "logging.FileHandler",
                            "filename": str(d / "homeserver.log"),
                            "formatter": "f",
                        }
                    },
                    "root": {"level": "WARNING", "handlers": ["file"]},
                    "disable_existing_loggers": False,
                }
            ),
        )
        write(d / "setup.yaml", yaml.safe_dump(self._config(with_client=True)))
        write(d / "homeserver.yaml", yaml.safe_dump(self._config(with_client=False)))
        # Warm-up start with a client listener: creates the database and registers @alice.
        proc = spawn("synapse-setup", self._argv("setup.yaml"))
        try:
            seconds = wait_serving(proc, self.address)
            log(f"  synapse first start (creates the database): {seconds:.2f}s")
            subprocess.run(
                [
                    str(self.venv / "bin" / "register_new_matrix_user"),
                    "-u",
                    USER,
                    "-p",
                    "bench-password",
                    "--no-admin",
                    "-k",
                    "bench-shared-secret",
                    f"http://{self.address}:{SYNAPSE_CLIENT_PORT}",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
        finally:
            stop(proc)

    def _argv(self, config: str) -> list[str]:
        return [
            str(self.venv / "bin" / "python"),
            "-m",
            "synapse.app.homeserver",
            "-c",
            str(self.dir / config),
        ]

    def argv(self) -> list[str]:
        return self._argv("homeserver.yaml")

    def version(self) -> str:
        out = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", "import synapse; print(synapse.__version__)"],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip().split(" ")[0]  # drop "(b=...)": the cwd's git, not Synapse's


# --------------------------------------------------------------------------- Dendrite

#: The stub of the interop environment that signs the profile query sent to Dendrite:
#: Dendrite finds its key by DNS (A record, port 8448), as it would on the internet.
DENDRITE_SIGNER = "direct.test"
#: bench.py's command to measure Dendrite from inside the namespace.
NS_MEASURE = "ns-measure-dendrite"
NS_MEASURE_TIMEOUT_SECONDS = 1800


class Dendrite(Server):
    """Dendrite v0.13.8 as the interop tests build, configure and start it
    (tests/interop/dendrite.py), measured from inside the environment's network namespace
    (v0.13.8 has no outbound IP blocklist, CVE-2024-52594: it never runs outside one).
    ``spec`` comes from :func:`run_dendrite`."""

    name = "dendrite"
    authenticated = True

    def __init__(self, spec: dict[str, Any]) -> None:  # no Setup: the harness made it all
        self.spec = spec
        self.address = spec["address"]
        self._context = ssl.create_default_context(cafile=spec["ca"])
        # The harness's certificate names dendrite.test; the probes connect by address,
        # as for every other server (the chain is still verified).
        self._context.check_hostname = False

    def argv(self) -> list[str]:
        return list(self.spec["argv"])

    def start(self) -> Proc:
        return spawn(self.name, self.argv(), cwd=Path(self.spec["cwd"]))

    def version(self) -> str:
        return str(self.spec["version"])

    def context(self) -> ssl.SSLContext | None:
        return self._context

    def auth(self) -> tuple[str, Path, dict[str, str]]:
        return auth_lua(self, self.spec["profile_path"], self.spec["authorization"])


def run_dendrite(repeat: int) -> dict[str, Any]:
    """Dendrite's figures: the interop harness's Dendrite environment (namespace, DNS, CA,
    stubs, Dendrite with its user), then this file run inside the namespace
    (``ns-measure-dendrite``) measures Dendrite as measure_server measures every server.
    The harness's first start of Dendrite (which creates its databases) is stopped first."""
    sys.path.insert(0, str(ROOT))
    from stubserver.auth.xmatrix import sign_request  # noqa: PLC0415
    from tests.interop import harness  # noqa: PLC0415
    from tests.interop.dendrite import (  # noqa: PLC0415
        DENDRITE_VERSION,
        dendrite_argv,
        dendrite_environment,
        ensure_dendrite,
    )

    reason = harness.unavailable_reason()
    if reason is not None:
        return {"skipped": reason}
    log("== dendrite (tests/interop/dendrite.py's environment)")
    try:
        bin_dir = ensure_dendrite(log=log)
    except harness.EnvironmentUnavailable as e:  # no Go
        return {"skipped": str(e)}
    with (
        tempfile.TemporaryDirectory(prefix="stubbench-dendrite-") as tmp,
        dendrite_environment(Path(tmp), log=log) as env,
    ):
        env.dendrite.process.stop()
        files = env.dendrite.files
        # Logging at warn, as Synapse's (its best case); the rest as the tests run it.
        config = yaml.safe_load(files.config_path.read_text())
        config["logging"] = [{"type": "std", "level": "warn"}]
        files.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        signer = env.stubs[DENDRITE_SIGNER]
        path = profile_path(env.dendrite_user[0])
        header = sign_request(
            "GET",
            path,
            origin=signer.server_name,
            destination=files.spec.server_name,
            key=signer.files.signing_key(),
        ).decode()
        spec = {
            "argv": dendrite_argv(bin_dir, files, env.ca),
            "cwd": str(files.directory),
            "address": files.spec.address,
            "ca": str(env.ca.cert_path),
            "version": DENDRITE_VERSION,
            "profile_path": path,
            "authorization": header,
            "repeat": repeat,
        }
        done = subprocess.run(
            env.ns.argv([VENV_PY, Path(__file__).resolve(), NS_MEASURE]),
            input=json.dumps(spec),
            stdout=subprocess.PIPE,
            text=True,
            timeout=NS_MEASURE_TIMEOUT_SECONDS,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{NS_MEASURE} failed ({done.returncode}): {done.stdout[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    result["signer"] = DENDRITE_SIGNER
    result["where"] = f"network namespace {env.ns.name} (tests/interop/harness.py)"
    return result


def ns_measure_dendrite() -> int:
    """Inside the namespace: measure_server on Dendrite; the result as one JSON line."""
    spec = json.load(sys.stdin)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        result = measure_server(Dendrite(spec), startup=True, repeat=spec["repeat"])
    finally:
        stop_all()
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- measuring


def auth_script(server: Server, setup: Setup) -> tuple[str, Path, dict[str, str]]:
    """The profile query URL, a wrk Lua script sending it pre-signed, and the headers."""
    from stubserver.auth.xmatrix import sign_request  # noqa: PLC0415

    destination = SERVER_NAME[server.name]
    user_id = f"@{USER}:{destination}"
    path = profile_path(user_id)
    header = sign_request(
        "GET", path, origin=SIGNER_NAME, destination=destination, key=setup.signer_key
    ).decode()
    return auth_lua(server, path, header)


def auth_lua(server: Server, path: str, header: str) -> tuple[str, Path, dict[str, str]]:
    """The URL of ``path`` on ``server``, a wrk Lua script sending ``header`` as its
    Authorization, and the headers."""
    script = write(
        RUN / server.name / "auth.lua",
        "-- pre-signed X-Matrix GET, replayed (servers accept replayed GETs)\n"
        f'wrk.headers["Authorization"] = {json.dumps(header)}\n',
    )
    return f"https://{server.address}:{PORT}{path}", script, {"Authorization": header}


def profile_path(user_id: str) -> str:
    return "/_matrix/federation/v1/query/profile?user_id=" + urllib.parse.quote(user_id, safe="")


def measure_startup(server: Server) -> dict[str, Any]:
    runs = []
    for i in range(STARTUP_RUNS):
        proc = server.start()
        try:
            runs.append(round(wait_serving(proc, server.address, context=server.context()), 3))
        finally:
            stop(proc)
        log(f"  start-up {i + 1}/{STARTUP_RUNS}: {runs[-1]:.3f}s")
    return {"median_s": statistics.median(runs), "runs_s": runs}


def measure_server(server: Server, *, startup: bool, repeat: int) -> dict[str, Any]:
    log(f"== {server.name}")
    server.prepare()
    result: dict[str, Any] = {"version": server.version()}
    if startup:
        warm = server.start()  # warm-up: bytecode, page cache
        try:
            wait_serving(warm, server.address, context=server.context())
        finally:
            stop(warm)
        result["startup"] = measure_startup(server)
    proc = server.start()
    try:
        wait_serving(proc, server.address, context=server.context())
        time.sleep(IDLE_SETTLE_SECONDS)
        result["rss_idle_mb"] = rss_mb(proc.pid)
        log(f"  idle RSS {result['rss_idle_mb']} MB")
        served = 0
        base = f"https://{server.address}:{PORT}"
        key = wrk_median(base + KEY_PATH, repeat)
        result["key"] = key.as_json()
        served += key.total_requests
        version = wrk_median(base + VERSION_PATH, repeat)
        result["version_endpoint"] = version.as_json()
        served += version.total_requests
        # Before any authenticated request (which makes stubserver load its outbound
        # stack to fetch the signer's key): key and version load only.
        time.sleep(IDLE_SETTLE_SECONDS)
        result["rss_after_unauthenticated_mb"] = rss_mb(proc.pid)
        result["requests_unauthenticated"] = served
        log(
            f"  RSS after {served} unauthenticated requests:"
            f" {result['rss_after_unauthenticated_mb']} MB"
        )
        if server.authenticated:
            url, script, headers = server.auth()
            # One request first: the server fetches and caches the signer's key.
            path = url.split(f":{PORT}", 1)[1]
            status, body = https_get(
                server.address, path, headers, timeout=30, context=server.context()
            )
            result["auth_first_response"] = {
                "status": status,
                "body": body.decode(errors="replace")[:300],
            }
            log(f"  first authenticated request: {status} {body[:120]!r}")
            if status == 200:
                auth = wrk_median(url, repeat, script=script)
                result["auth_profile"] = auth.as_json()
                served += auth.total_requests
        if served < REQUESTS_FOR_MEMORY:
            seconds = min(
                WRK_TOPUP_MAX_SECONDS,
                math.ceil((REQUESTS_FOR_MEMORY - served) / max(key.rps, 1.0) * 1.2) + 1,
            )
            top = wrk(base + KEY_PATH, seconds=seconds)
            served += top.requests
            result["topup"] = top.as_json()
        time.sleep(IDLE_SETTLE_SECONDS)
        result["requests_served"] = served
        result["rss_after_requests_mb"] = rss_mb(proc.pid)
        log(f"  RSS after {served} requests: {result['rss_after_requests_mb']} MB")
    finally:
        stop(proc)
    return result


def fetch_key_document(setup: Setup) -> None:
    """The bytes stubserver serves at the key endpoint, for nginx and the bare server."""
    proc = spawn("stubserver-keydoc", StubServer(setup).argv())
    try:
        wait_serving(proc, ADDR["stubserver"])
        status, body = https_get(ADDR["stubserver"], KEY_PATH)
        if status != 200:
            raise RuntimeError(f"stubserver key endpoint answered {status}")
        write(RUN / "key.json", body)
    finally:
        stop(proc)


# --------------------------------------------------------------------------- report


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def get(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


FIGURES: list[tuple[str, tuple[str, ...], str]] = [
    ("start-up, median of 5 (s)", ("startup", "median_s"), "lower"),
    ("idle RSS (MB)", ("rss_idle_mb",), "lower"),
    ("RSS after key+version load (MB)", ("rss_after_unauthenticated_mb",), "lower"),
    ("RSS after >=100k requests (MB)", ("rss_after_requests_mb",), "lower"),
    ("key endpoint (req/s)", ("key", "requests_per_second"), "higher"),
    ("key endpoint p50 (ms)", ("key", "p50_ms"), "lower"),
    ("key endpoint p99 (ms)", ("key", "p99_ms"), "lower"),
    ("version endpoint (req/s)", ("version_endpoint", "requests_per_second"), "higher"),
    ("version endpoint p50 (ms)", ("version_endpoint", "p50_ms"), "lower"),
    ("version endpoint p99 (ms)", ("version_endpoint", "p99_ms"), "lower"),
    ("X-Matrix profile query (req/s)", ("auth_profile", "requests_per_second"), "higher"),
    ("X-Matrix profile p50 (ms)", ("auth_profile", "p50_ms"), "lower"),
    ("X-Matrix profile p99 (ms)", ("auth_profile", "p99_ms"), "lower"),
]
ORDER = ["stubserver", "synapse", "dendrite", "bare_twisted", "bare_twisted_raw", "nginx"]


def add_ratios(results: dict[str, Any]) -> None:
    servers = results["servers"]
    syn = servers.get("synapse", {})
    den = servers.get("dendrite", {})
    ngx = servers.get("nginx", {})
    bare = servers.get("bare_twisted", {})
    for data in servers.values():
        r: dict[str, Any] = {}
        for _label, path, _ in FIGURES:
            value = get(data, *path)
            key = "_".join(path)
            r.setdefault("vs_synapse", {})[key] = ratio(value, get(syn, *path))
            r.setdefault("vs_dendrite", {})[key] = ratio(value, get(den, *path))
            if path[0] == "key":
                r.setdefault("vs_nginx", {})[key] = ratio(value, get(ngx, *path))
            if path[0].startswith("rss"):
                r.setdefault("vs_bare_twisted", {})[key] = ratio(value, get(bare, *path))
        data["ratios"] = r
    stub = servers.get("stubserver", {})
    targets = []

    def target(name: str, measured: float | None, limit: float, higher: bool) -> None:
        met = None if measured is None else (measured >= limit if higher else measured <= limit)
        targets.append({"target": name, "measured": measured, "limit": limit, "met": met})

    target(
        "key endpoint req/s >= 4x Synapse",
        ratio(get(stub, "key", "requests_per_second"), get(syn, "key", "requests_per_second")),
        TARGET_KEY_RPS_VS_SYNAPSE,
        True,
    )
    target(
        "start-up <= 0.25x Synapse",
        ratio(get(stub, "startup", "median_s"), get(syn, "startup", "median_s")),
        TARGET_STARTUP_VS_SYNAPSE,
        False,
    )
    target(
        "idle RSS <= 1.10x bare Twisted TLS",
        ratio(get(stub, "rss_idle_mb"), get(bare, "rss_idle_mb")),
        TARGET_RSS_VS_FLOOR,
        False,
    )
    target(
        "RSS after key+version load <= 1.10x bare Twisted TLS",
        ratio(
            get(stub, "rss_after_unauthenticated_mb"),
            get(bare, "rss_after_unauthenticated_mb"),
        ),
        TARGET_RSS_VS_FLOOR,
        False,
    )
    target(
        "RSS after 100k requests <= 1.10x bare Twisted TLS",
        ratio(get(stub, "rss_after_requests_mb"), get(bare, "rss_after_requests_mb")),
        TARGET_RSS_VS_FLOOR,
        False,
    )
    results["targets"] = targets


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if v >= 1000 else f"{v:.3g}" if v < 10 else f"{v:.1f}"
    return str(v)


def table(results: dict[str, Any]) -> str:
    servers = results["servers"]
    names = [n for n in ORDER if n in servers]
    head = ["figure", *names, "stub/synapse", "stub/dendrite", "stub/nginx"]
    rows = [head]
    for label, path, _ in FIGURES:
        values = [get(servers[n], *path) for n in names]
        if all(v is None for v in values):
            continue
        stub = get(servers.get("stubserver", {}), *path)
        rows.append(
            [
                label,
                *[fmt(v) for v in values],
                fmt(ratio(stub, get(servers.get("synapse", {}), *path))),
                fmt(ratio(stub, get(servers.get("dendrite", {}), *path))),
                fmt(ratio(stub, get(servers.get("nginx", {}), *path))) if path[0] == "key" else "",
            ]
        )
    out = results.get("outbound")
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    if out:
        lines.append("")
        if out.get("error"):
            lines.append(f"outbound: {out['error']}")
        else:
            lines.append(
                f"outbound: {out['names']} names resolved + keys fetched"
                f" in {out['total_seconds']:.2f}s"
                f" ({out['ok']} ok, {out['failed']} failed, {out['concurrency']} in flight),"
                f" peak RSS {out['peak_rss_mb']} MB"
            )
    lines.append("")
    for t in results.get("targets", []):
        mark = {True: "MET", False: "MISSED", None: "n/a"}[t["met"]]
        lines.append(f"target {t['target']}: measured {fmt(t['measured'])} -> {mark}")
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    """The figures as a Markdown table (for bench/README.md)."""
    servers = results["servers"]
    names = [n for n in ORDER if n in servers]
    lines = [
        "| figure | " + " | ".join(names) + " | stub/synapse | stub/dendrite | stub/nginx |",
        "|---" * (len(names) + 4) + "|",
    ]
    for label, path, _ in FIGURES:
        values = [get(servers[n], *path) for n in names]
        if all(v is None for v in values):
            continue
        stub = get(servers.get("stubserver", {}), *path)
        to_nginx = ratio(stub, get(servers.get("nginx", {}), *path)) if path[0] == "key" else None
        cells = [fmt(v) for v in values]
        cells += [
            fmt(ratio(stub, get(servers.get(anchor, {}), *path)))
            for anchor in ("synapse", "dendrite")
        ]
        cells.append(fmt(to_nginx))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    out = results.get("outbound")
    if out and not out.get("error"):
        lines.append("")
        lines.append(
            f"Outbound: {out['names']} names resolved and their keys fetched and verified in"
            f" {out['total_seconds']:.2f} s ({out['ok']} ok, {out['failed']} failed,"
            f" {out['concurrency']} in flight), peak RSS {out['peak_rss_mb']} MB"
            f" (from {out['rss_before_mb']} MB before the first name)."
        )
    lines.append("")
    for t in results.get("targets", []):
        mark = {True: "**met**", False: "**missed**", None: "n/a"}[t["met"]]
        lines.append(f"- {t['target']}: {fmt(t['measured'])} ({mark})")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gb": round(mem_kb / 1e6, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": (wrk_v.stdout + wrk_v.stderr).strip().splitlines()[0]
        if (wrk_v.stdout + wrk_v.stderr)
        else "",
    }


# --------------------------------------------------------------------------- outbound


def run_outbound(setup: Setup) -> dict[str, Any]:
    script = BENCH / "outbound.py"
    if not script.exists():
        return {"error": "bench/outbound.py missing"}
    log("== outbound")
    try:
        out = subprocess.run(
            [str(VENV_PY), str(script), "--work", str(RUN / "outbound")],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": "outbound benchmark timed out after 900s"}
    (RUN / "logs").mkdir(exist_ok=True)
    (RUN / "logs" / "outbound.log").write_text(out.stderr)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = out.stderr.strip().splitlines()[-3:]
        return {"error": f"outbound benchmark failed ({out.returncode}): {' | '.join(tail)}"}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- main


def product_has(module: str) -> bool:
    import importlib.util  # noqa: PLC0415

    return importlib.util.find_spec(module) is not None


def main() -> int:
    if sys.argv[1:2] == [NS_MEASURE]:
        sys.path.insert(0, str(ROOT))
        return ns_measure_dendrite()
    parser = argparse.ArgumentParser(description="stubserver benchmarks (issue 8)")
    parser.add_argument(
        "--only",
        action="append",
        choices=[*ORDER, "outbound"],
        help="measure only these (repeatable); default: everything",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        choices=range(1, 6),
        metavar="N",
        help="wrk runs per endpoint and server, the median reported (default 3)",
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print bench/results.json's figures as Markdown and exit (measures nothing)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not write the results")
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS,
        help="where to write the results (default bench/results.json)",
    )
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.output.read_text())))
        return 0
    only = set(args.only or [*ORDER, "outbound"])
    sys.path.insert(0, str(ROOT))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    results: dict[str, Any] = {
        "issue": 8,
        "command": " ".join(["bench/run", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "wrk": f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s --latency https://ADDR:{PORT}PATH",
        "servers": {},
        "notes": [],
    }
    try:
        setup = make_setup()
        has_run = product_has("stubserver.app.run")
        signer = None
        if has_run:
            fetch_key_document(setup)
            signer_argv = [StubServer(setup).argv()[0], "run", "-c", str(setup.configs["signer"])]
            signer = spawn("signer", signer_argv)
            wait_serving(signer, SIGNER_ADDRESS, port=SIGNER_PORT)
        else:
            results["notes"].append("stubserver run not available: stubserver skipped")
        servers: list[Server] = []
        if has_run and "stubserver" in only:
            servers.append(StubServer(setup))
        if "synapse" in only:
            servers.append(Synapse(setup))
        if has_run and "bare_twisted" in only:
            servers.append(BareTwisted(setup))
        if has_run and "bare_twisted_raw" in only:
            servers.append(BareTwistedRaw(setup))
        if has_run and "nginx" in only:
            servers.append(Nginx(setup))
        for server in servers:
            results["servers"][server.name] = measure_server(
                server,
                startup=server.name not in ("nginx", "bare_twisted_raw"),
                repeat=args.repeat,
            )
        if has_run and "dendrite" in only:
            results["servers"]["dendrite"] = run_dendrite(args.repeat)
        if signer is not None:
            stop(signer)
        if "outbound" in only:
            results["outbound"] = run_outbound(setup)
    finally:
        stop_all()
    add_ratios(results)
    results["duration_s"] = round(time.time() - started, 1)
    text = table(results)
    print(text)
    results["table"] = text.splitlines()
    if not args.no_write:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
        log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
