"""Room benchmarks (issue 13): join and message latency against a real Synapse, PDUs per
second from one stubserver to another, and the memory of a room with 10,000 events.

Not a test and not in CI: a program that measures and prints (and writes
bench/results-rooms.json). See bench/README.md, "Rooms (issue 13)".

    bench/run --only rooms                                # all three parts (same as:)
    .venv/bin/python bench/rooms.py                       # all three parts
    .venv/bin/python bench/rooms.py --only throughput --only memory   # loopback only
    .venv/bin/python bench/rooms.py --only synapse --synapse-python PATH  # root: a netns
    .venv/bin/python bench/rooms.py --only dendrite        # root and Go (issue 21)
    .venv/bin/python bench/rooms.py --only extremities     # issue 22 row 4, in process

Parts:

* ``synapse``: the interop environment (tests/interop/harness.py: a network namespace,
  DNS, CA, three stubs with control listeners, Synapse 1.163.2). For room versions 10, 11
  and 12 (on direct.test, wk.test and srv.test as in the interop tests), this file runs
  *inside* the namespace as ``rooms.py ns-timing`` and times, with plain keep-alive HTTP
  from one process (no subprocess per call): control ``join`` -> Synapse's
  ``joined_members`` lists our user, and Synapse's client ``send`` -> the event in our
  room's ``events`` long-poll.
* ``dendrite`` (issue 21): the same against Dendrite v0.13.8 in tests/interop/dendrite.py's
  environment (built on first use by its cached ``go install``), room versions 10 and 11
  (on direct.test and wk.test; v0.13.8 has no v12).
* ``extremities`` (issue 22 row 4): in process, the work per accepted event (state
  resolutions, state maps, extremity heap entries, and the time) in a room with 1 and
  with 2,000 forward extremities, and the dummy events that cap them.
* ``throughput``: two ``stubserver run`` on loopback (``localhost:PORT`` names, a private
  CA, verified TLS). B joins A's room; A is told to send M messages through its control
  API; the time until all M are in B's room, and the /send sizes B received (B's control
  ``requests`` feed). Run twice: ``streaming`` (B receives while A is still creating) and
  ``queued`` (B is stopped with SIGSTOP while A creates all M, then continued: A's queue
  drains in full transactions of 50, so the figure is B's receive/verify/authorize rate).
* ``memory``: RSS (VmRSS) of a ``stubserver run`` before and after its room gains 10,000
  events through the control API; and tracemalloc of a room in-process (a RoomService on
  a Clock, no sockets) holding the same number of events.

Only the standard library is imported at the top, so that ``ns-timing`` starts fast inside
the namespace; stubserver and the harness are imported where used.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import http.client
import json
import os
import platform
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results-rooms.json"
#: (room version, the interop stub that plays it), as in tests/interop/test_rooms_synapse.py.
VERSIONS = (("10", "direct.test"), ("11", "wk.test"), ("12", "srv.test"))
#: The same for Dendrite v0.13.8, which has no room version 12 (test_rooms_dendrite.py).
DENDRITE_VERSIONS = VERSIONS[:2]
#: How long any one wait in this benchmark may take, in seconds.
WAIT_S = 60.0
#: One long-poll's wait, in milliseconds.
LONG_POLL_MS = 1_000
#: Pause between polls of Synapse's joined_members, in seconds.
POLL_S = 0.005
#: How long a stub may take to print its ready line, in seconds.
READY_S = 30.0
PREFIX = "/_stubserver/v1"


def quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class Http:
    """One keep-alive HTTP connection; JSON in and out; reconnects once on a dropped one."""

    def __init__(self, base: str, token: str | None = None) -> None:
        url = urllib.parse.urlsplit(base)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.prefix = url.path.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: Any = None, timeout: float = WAIT_S) -> Any:
        payload = None if body is None else json.dumps(body).encode()
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            try:
                self.conn.request(method, self.prefix + path, body=payload, headers=self.headers)
                response = self.conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
                continue
            if not 200 <= response.status < 300:
                raise RuntimeError(f"{method} {path} -> {response.status} {raw[:300]!r}")
            return json.loads(raw)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, p90, min, max (ms) of ``values`` (seconds)."""
    ms = sorted(v * 1000 for v in values)
    p90 = ms[min(len(ms) - 1, max(0, round(0.9 * len(ms)) - 1))]
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 1),
        "p90_ms": round(p90, 1),
        "min_ms": round(ms[0], 1),
        "max_ms": round(ms[-1], 1),
    }


# ------------------------------------------------------------------ part a: in the namespace


class EventWatcher(threading.Thread):
    """Long-polls a room's events from ``start`` and notes when each event ID arrived."""

    def __init__(self, control: str, token: str, room: str, start: int) -> None:
        super().__init__(daemon=True)
        self.http = Http(control + PREFIX, token)
        self.room = room
        self.position = start
        self.arrived: dict[str, float] = {}
        self.cond = threading.Condition()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            page = self.http.call(
                "GET",
                f"/rooms/{quote(self.room)}/events?from={self.position}&wait_ms={LONG_POLL_MS}",
            )
            now = time.perf_counter()
            with self.cond:
                for entry in page["events"]:
                    self.arrived.setdefault(entry["event_id"], now)
                self.cond.notify_all()
            self.position = page["next"]
        self.http.close()

    def wait_for(self, event_id: str) -> float:
        deadline = time.monotonic() + WAIT_S
        with self.cond:
            while event_id not in self.arrived:
                if not self.cond.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"{event_id} did not reach our room in {WAIT_S} s")
            return self.arrived[event_id]


def ns_timing(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The timing loop run inside the namespace (stdlib only): one room version."""
    control = Http(spec["control_url"] + PREFIX, spec["control_token"])
    synapse = Http(spec["homeserver_url"] + "/_matrix/client/v3", spec["homeserver_token"])
    version, us, via = spec["version"], spec["user_id"], spec["homeserver_name"]
    rows: list[dict[str, float]] = []
    for i in range(spec["repeat"] + 1):  # the first is a warm-up (key fetches), kept apart
        room = synapse.call(
            "POST", "/createRoom", {"room_version": version, "preset": "public_chat"}
        )["room_id"]
        t0 = time.perf_counter()
        control.call("POST", f"/rooms/{quote(room)}/join", {"user": "alice", "via": [via]})
        t1 = time.perf_counter()
        polls = 0
        while True:
            polls += 1
            joined = synapse.call("GET", f"/rooms/{quote(room)}/joined_members")["joined"]
            if us in joined:
                break
            if time.perf_counter() - t0 > WAIT_S:
                raise TimeoutError(f"{us} not in joined_members of {room}")
            time.sleep(POLL_S)
        t2 = time.perf_counter()
        start = control.call("GET", f"/rooms/{quote(room)}/events?from=0")["next"]
        watcher = EventWatcher(spec["control_url"], spec["control_token"], room, start)
        watcher.start()
        time.sleep(0.05)  # let the first long-poll be waiting: its set-up is not our figure
        s0 = time.perf_counter()
        txn = f"bench-{os.getpid()}-{i}"
        event_id = synapse.call(
            "PUT",
            f"/rooms/{quote(room)}/send/m.room.message/{txn}",
            {"msgtype": "m.text", "body": f"bench {i}"},
        )["event_id"]
        s1 = time.perf_counter()
        arrived = watcher.wait_for(event_id)
        watcher.stop.set()
        rows.append(
            {
                "join_call": t1 - t0,
                "join_to_joined": t2 - t0,
                "joined_polls": polls,
                "send_call": s1 - s0,
                "send_return_to_event": arrived - s1,
                "send_start_to_event": arrived - s0,
            }
        )
    throughput = None
    if spec.get("messages"):
        throughput = ns_throughput(spec, control, synapse, room)
    control.close()
    synapse.close()
    warm, measured = rows[0], rows[1:]
    out: dict[str, Any] = {
        "warm_up_ms": {k: round(v * 1000, 1) for k, v in warm.items() if k != "joined_polls"}
    }
    for key in (
        "join_call",
        "join_to_joined",
        "send_call",
        "send_return_to_event",
        "send_start_to_event",
    ):
        out[key] = summary([r[key] for r in measured])
    out["joined_on_first_poll"] = sum(1 for r in measured if r["joined_polls"] == 1)
    if throughput is not None:
        out["throughput"] = throughput
    return out


#: Messages per step of the paced throughput into the homeserver: below Synapse's
#: inbound staging limit (it prunes a room's queue at 100 staged events,
#: ``prune_staged_events_in_room``), so that nothing is pruned.
PACED_STEP = 50
#: How often the paced part polls the homeserver for a step's last event, in seconds:
#: seldom enough that the polls cost it little (a 10 ms poll is ~2% of a step's time but
#: a fair share of its CPU), often enough to add at most this much to a step.
PACED_POLL_S = 0.1


def last_tagged(control: Http, room: str, position: int, tag: str) -> tuple[str, int]:
    """The last event of our room's timeline from ``position`` whose body starts with
    ``tag`` (the last our queue sends), and the position after it."""
    last_id = None
    while True:
        page = control.call("GET", f"/rooms/{quote(room)}/events?from={position}")
        for entry in page["events"]:
            if str(entry["pdu"].get("content", {}).get("body", "")).startswith(f"{tag} "):
                last_id = entry["event_id"]
        if page["next"] == position or not page["events"]:
            break
        position = page["next"]
    assert last_id is not None
    return last_id, position


def wait_at_homeserver(synapse: Http, room: str, event_id: str, every: float = 0.01) -> None:
    """Poll the homeserver's client ``/event`` every ``every`` seconds until it has
    ``event_id``."""
    deadline = time.monotonic() + 10 * WAIT_S
    while True:
        try:
            synapse.call("GET", f"/rooms/{quote(room)}/event/{quote(event_id)}")
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{event_id} not at the homeserver") from None
            time.sleep(every)


def held_at_homeserver(synapse: Http, room: str, tag: str) -> int:
    """How many messages tagged ``tag`` the homeserver's ``/messages`` holds (newest
    first). Only a page without ``end`` is the last: Synapse may answer an empty chunk
    that is not (its pagination handler filters a batch after fetching it). At most 100
    pages."""
    held, token_from = 0, None
    for _ in range(100):
        query = "dir=b&limit=1000" + (f"&from={quote(token_from)}" if token_from else "")
        page = synapse.call("GET", f"/rooms/{quote(room)}/messages?{query}")
        held += sum(
            1
            for e in page.get("chunk", [])
            if str(e.get("content", {}).get("body", "")).startswith(f"{tag} ")
        )
        if "end" not in page:
            break
        token_from = page["end"]
    return held


def ns_throughput(
    spec: Mapping[str, Any], control: Http, synapse: Http, room: str
) -> dict[str, Any]:
    """Issue 22: the throughput part's transactions sent to the homeserver instead of a
    second stubserver, into ``room`` (the homeserver's, which our alice has joined).

    Overrun: our alice sends ``messages`` through our control API as fast as it takes
    them; our queue sends them in transactions of up to 50 (one in flight, as Synapse's
    sender). The time until the homeserver's client ``/event`` has the last event our
    queue sent, and how many of them its ``/messages`` holds: Synapse answers ``/send``
    once the PDUs are staged, and prunes a room's staging queue to its forward
    extremities when it holds 100 or more (``prune_staged_events_in_room``), so most of
    an overrun never enters its timeline (they stay reachable by backfill).

    Paced: ``paced`` messages in steps of :data:`PACED_STEP`, each step sent once the
    homeserver has the previous step's last event (polled every :data:`PACED_POLL_S`), so
    its queue never reaches the pruning limit: the rate at which it takes in our PDUs
    whole."""
    messages, workers = spec["messages"], spec["workers"]
    url, token = spec["control_url"] + PREFIX, spec["control_token"]
    connect = lambda: Http(url, token)  # noqa: E731
    position = control.call("GET", f"/rooms/{quote(room)}/events?from=0")["next"]
    t0 = time.perf_counter()
    created = send_many(connect, room, messages, workers, "tput")
    last_id, position = last_tagged(control, room, position, "tput")
    wait_at_homeserver(synapse, room, last_id)
    arrived = time.perf_counter() - t0
    out: dict[str, Any] = {
        "messages": messages,
        "control_workers": workers,
        "our_create_s": round(created, 3),
        "our_create_rate_per_s": round(messages / created),
        "all_at_homeserver_s": round(arrived, 3),
        "homeserver_rate_per_s": round(messages / arrived),
        "held_at_homeserver": held_at_homeserver(synapse, room, "tput"),
    }
    paced = spec.get("paced", 0)
    if paced:
        t0 = time.perf_counter()
        for step in range(0, paced, PACED_STEP):
            send_many(connect, room, min(PACED_STEP, paced - step), workers, "paced")
            last_id, position = last_tagged(control, room, position, "paced")
            wait_at_homeserver(synapse, room, last_id, PACED_POLL_S)
        took = time.perf_counter() - t0
        out["paced"] = {
            "messages": paced,
            "step": PACED_STEP,
            "all_at_homeserver_s": round(took, 3),
            "homeserver_rate_per_s": round(paced / took),
            "held_at_homeserver": held_at_homeserver(synapse, room, "paced"),
        }
    return out


def run_synapse(
    repeat: int,
    synapse_python: Path | None,
    log: Any,
    *,
    messages: int = 0,
    workers: int = 8,
    paced: int = 0,
) -> dict[str, Any]:
    """Part a against Synapse: the interop environment, the timing loop in its namespace;
    with ``messages``, then the throughput into Synapse's v12 room (:func:`ns_throughput`)."""
    sys.path.insert(0, str(ROOT))
    from tests.interop import harness  # noqa: PLC0415

    reason = harness.unavailable_reason()
    if reason is not None:
        return {"skipped": reason}
    if synapse_python is None:  # bench.py's: the interop cache, else bench/work's venv
        sys.path.insert(0, str(ROOT / "bench"))
        from bench import synapse_venv  # noqa: PLC0415

        synapse_python = synapse_venv() / "bin" / "python"
    return run_homeserver(
        "tests/interop/harness.py environment (netns, DNS, CA, stubs, Synapse 1.163.2 on SQLite)",
        lambda tmp: harness.interop_environment(tmp, synapse_python=synapse_python, log=log),
        VERSIONS,
        repeat,
        log,
        throughput={"12": {"messages": messages, "workers": workers, "paced": paced}}
        if messages
        else None,
    )


def run_dendrite(repeat: int, log: Any) -> dict[str, Any]:
    """Part a against Dendrite (issue 21): tests/interop/dendrite.py's environment, the
    same timing loop in its namespace, room versions 10 and 11."""
    sys.path.insert(0, str(ROOT))
    from tests.interop import harness  # noqa: PLC0415
    from tests.interop.dendrite import dendrite_environment, ensure_dendrite  # noqa: PLC0415

    reason = harness.unavailable_reason()
    if reason is not None:
        return {"skipped": reason}
    try:
        ensure_dendrite(log=log)
    except harness.EnvironmentUnavailable as e:  # no Go
        return {"skipped": str(e)}
    return run_homeserver(
        "tests/interop/dendrite.py environment (netns, DNS, CA, stubs, Dendrite v0.13.8 on"
        " SQLite, generate-config -ci)",
        lambda tmp: dendrite_environment(tmp, log=log),
        DENDRITE_VERSIONS,
        repeat,
        log,
    )


def run_homeserver(
    environment: str,
    start: Any,
    versions: Sequence[tuple[str, str]],
    repeat: int,
    log: Any,
    *,
    throughput: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, Any]:
    """Part a: ``start(directory)`` (an interop environment's context manager, whose
    ``homeserver`` is the real one), and the timing loop inside its namespace for each
    (room version, stub) of ``versions``."""
    out: dict[str, Any] = {
        "method": (
            f"{environment}; timing loop run inside the namespace by one Python process with"
            " keep-alive HTTP (bench/rooms.py ns-timing); one warm-up round then N measured;"
            f" joined_members polled every {POLL_S * 1000:.0f} ms; our events long-polled"
        ),
        "repeat": repeat,
        "versions": {},
    }
    with tempfile.TemporaryDirectory(prefix="stubbench-rooms-") as tmp, start(Path(tmp)) as env:
        homeserver = env.homeserver
        for version, stub_name in versions:
            stub = env.stubs[stub_name]
            spec = {
                "version": version,
                "repeat": repeat,
                "control_url": stub.files.control_url,
                "control_token": stub.files.control_token,
                "homeserver_url": homeserver.spec.client_url,
                "homeserver_token": homeserver.user[2],
                "homeserver_name": homeserver.server_name,
                "user_id": f"@alice:{stub.server_name}",
                **(throughput or {}).get(version, {}),
            }
            log(f"v{version} on {stub_name}: {repeat} + 1 rounds inside {env.ns.name}")
            done = env.ns.run(
                [sys.executable, str(Path(__file__).resolve()), "ns-timing"],
                input_text=json.dumps(spec),
                timeout=600,
            )
            if done.returncode != 0:
                raise RuntimeError(f"ns-timing v{version} failed: {done.stderr[-3000:]}")
            result = json.loads(done.stdout)
            result["stub"] = stub_name
            if "throughput" in result and homeserver.product == "Synapse":
                result["throughput"]["pruned_by_homeserver"] = pruned_by_synapse(
                    homeserver.log_path
                )
            out["versions"][version] = result
            log(
                f"v{version}: join->joined {result['join_to_joined']}; send->event "
                f"{result['send_return_to_event']}; throughput {result.get('throughput')}"
            )
    return out


def pruned_by_synapse(log_path: Path) -> int:
    """How many staged events Synapse's log says it pruned from its inbound federation
    queues ("Pruning N events in room ... from federation queue")."""
    text = log_path.read_text(errors="replace")
    return sum(
        int(n) for n in re.findall(r"Pruning (\d+) events in room \S+ from federation", text)
    )


# ------------------------------------------------------------------ loopback stubs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stub:
    """A ``stubserver run`` on loopback named ``localhost:PORT``, with a control listener."""

    def __init__(self, directory: Path, ca: Any, name: str, *, profiled: str | None = None) -> None:
        import yaml  # noqa: PLC0415

        from stubserver.signing.keys import ServerSigningKey  # noqa: PLC0415
        from stubserver.tls.certificates import issue_cert  # noqa: PLC0415

        self.fed_port, self.control_port = free_port(), free_port()
        self.server_name = f"localhost:{self.fed_port}"
        self.token = secrets.token_urlsafe(16)
        folder = directory / name
        folder.mkdir()
        (folder / "signing.key").write_text(ServerSigningKey.generate("b1").to_line())
        pair = issue_cert(["localhost"], ca)
        (folder / "tls.crt").write_bytes(pair.cert_pem)
        (folder / "tls.key").write_bytes(pair.key_pem)
        config = {
            "server_name": self.server_name,
            "signing_key_path": "signing.key",
            "tls_certificate_path": "tls.crt",
            "tls_private_key_path": "tls.key",
            "listeners": [
                {
                    "port": self.fed_port,
                    "bind_addresses": ["127.0.0.1"],
                    "resources": ["federation"],
                },
                {
                    "port": self.control_port,
                    "bind_addresses": ["127.0.0.1"],
                    "resources": ["control"],
                },
            ],
            "users": {"alice": {"displayname": f"Alice of {name}"}},
            "control_token": self.token,
            "federation_verify_certificates": True,
            "federation_custom_ca_list": [str(directory / "ca.crt")],
            "ip_range_allowlist": ["127.0.0.0/8"],
        }
        config_path = folder / "stubserver.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.stderr = (folder / "stderr.log").open("wb")
        #: Where the SIGUSR2 dump of a profiled stub's cProfile goes (PROFILED_RUN).
        self.profile_path = folder / "intake.prof"
        prefix = (
            ["-c", PROFILED_RUN, str(self.profile_path), profiled]
            if profiled
            else ["-m", "stubserver"]
        )
        self.process = subprocess.Popen(
            [sys.executable, *prefix, "run", "-c", str(config_path)],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            cwd=ROOT,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # the ready line (the process prints nothing else)
        if not line:
            raise RuntimeError(f"{name} did not start: {(folder / 'stderr.log').read_text()}")
        self.control = self.http()

    def http(self) -> Http:
        return Http(f"http://127.0.0.1:{self.control_port}{PREFIX}", self.token)

    def rss_mb(self) -> float:
        return status_kb(self.process.pid, "VmRSS") / 1024

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.stderr.close()


#: ``stubserver`` run under cProfile switched on by SIGUSR1 and off (and dumped to argv[1])
#: by SIGUSR2, so a profile covers exactly the stretch the benchmark times; argv[2] is the
#: profiler: ``wall`` or ``cpu`` (cProfile on that clock; ``cpu`` is a system call per
#: function entry and exit, which inflates small calls a lot), or ``sample`` (stacks
#: sampled every 0.5 ms of the process's CPU time, and the garbage collector timed: what
#: other work on a busy machine does not inflate, at a small cost; a JSON dump).
PROFILED_RUN = """
import cProfile, collections, gc, json, os, runpy, signal, sys, time
path = sys.argv.pop(1)
clock = sys.argv.pop(1)
if clock == "sample":
    # A statistical profile on the process's CPU time: ITIMER_PROF fires every INTERVAL s
    # of CPU (user + system; the kernel checks it at its clock tick, so in practice once
    # a tick), whatever else runs on the machine; the handler counts the Python stack it
    # interrupts, and the samples share the CPU time measured from enable to dump. The
    # garbage collector's runs are timed on their own.
    INTERVAL = 0.0005
    cpu_at = [0.0]
    stacks = collections.Counter()
    gc_runs = collections.Counter()
    gc_cpu = collections.Counter()
    gc_started = [0.0]
    def sample(signum, frame):
        names = []
        while frame is not None:
            code = frame.f_code
            names.append(f"{code.co_filename}:{code.co_firstlineno}({code.co_name})")
            frame = frame.f_back
        stacks[";".join(reversed(names))] += 1
    def collected(phase, info):
        if phase == "start":
            gc_started[0] = time.process_time()
        else:
            gc_runs[info["generation"]] += 1
            gc_cpu[info["generation"]] += time.process_time() - gc_started[0]
    def enable(*_):
        cpu_at[0] = time.process_time()
        signal.setitimer(signal.ITIMER_PROF, INTERVAL, INTERVAL)
        gc.callbacks.append(collected)
    def dump(*_):
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        gc.callbacks.remove(collected)
        cpu = time.process_time() - cpu_at[0]
        data = {"cpu_s": cpu, "stacks": dict(stacks),
                "gc": {str(g): [gc_runs[g], gc_cpu[g]] for g in sorted(gc_runs)},
                "tracked_objects": len(gc.get_objects())}
        with open(path + ".part", "w") as f:
            json.dump(data, f)
        os.replace(path + ".part", path)
    signal.signal(signal.SIGPROF, sample)
else:
    profile = cProfile.Profile(time.process_time) if clock == "cpu" else cProfile.Profile()
    def enable(*_):
        profile.enable()
    def dump(*_):
        profile.disable()
        profile.dump_stats(path + ".part")
        os.replace(path + ".part", path)
signal.signal(signal.SIGUSR1, enable)
signal.signal(signal.SIGUSR2, dump)
sys.argv[0] = "stubserver"
runpy.run_module("stubserver", run_name="__main__", alter_sys=True)
"""


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time of process ``pid`` so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (``/proc/PID/stat``)."""
    return sum(cpu_times(pid))


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@contextlib.contextmanager
def stubs(*names: str, profiled: Sequence[str] = (), clock: str = "wall") -> Iterator[list[Stub]]:
    from stubserver.tls.certificates import make_ca  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="stubbench-rooms-") as tmp:
        directory = Path(tmp)
        ca = make_ca("stubserver rooms bench CA")
        (directory / "ca.crt").write_bytes(ca.cert_pem)
        started: list[Stub] = []
        try:
            for name in names:
                started.append(
                    Stub(directory, ca, name, profiled=clock if name in profiled else None)
                )
            yield started
        finally:
            for stub in started:
                stub.stop()


def send_many(connect: Callable[[], Http], room: str, count: int, workers: int, tag: str) -> float:
    """``count`` messages through a control API (``connect``: a new keep-alive client of
    it) from ``workers`` threads, each on its own connection; returns the seconds it took."""
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        conn = connect()
        try:
            for i in range(offset, count, workers):
                conn.call(
                    "POST",
                    f"/rooms/{quote(room)}/send",
                    {
                        "sender": "alice",
                        "type": "m.room.message",
                        "content": {"msgtype": "m.text", "body": f"{tag} {i}"},
                    },
                )
        except BaseException as e:  # reported after the join
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - t0


def wait_for_messages(
    stub: Stub,
    room: str,
    start: int,
    tag: str,
    *,
    count: int,
    timeout: float,
    poll_gap_s: float = 0.0,
) -> tuple[int, float, dict[str, int]]:
    """Long-poll ``stub``'s room from ``start`` until ``count`` messages tagged ``tag``
    are in; (next position, time of the last, outcomes); the outcomes also count the
    long-polls it took (``long_polls``). ``poll_gap_s``: a pause after each answer that
    brought events (fewer answers for ``stub`` to make; the time of the last is late by
    at most that much)."""
    conn = stub.http()
    seen = 0
    outcomes: dict[str, int] = {}
    position = start
    deadline = time.monotonic() + timeout
    last = time.perf_counter()
    while seen < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{seen}/{count} messages after {timeout} s")
        page = conn.call(
            "GET",
            f"/rooms/{quote(room)}/events?from={position}&wait_ms={LONG_POLL_MS}",
            timeout=timeout,
        )
        last = time.perf_counter()
        outcomes["long_polls"] = outcomes.get("long_polls", 0) + 1
        for entry in page["events"]:
            body = entry["pdu"].get("content", {}).get("body", "")
            if isinstance(body, str) and body.startswith(tag + " "):
                seen += 1
                outcomes[entry["outcome"]] = outcomes.get(entry["outcome"], 0) + 1
        position = page["next"]
        if poll_gap_s and page["events"] and seen < count:
            time.sleep(poll_gap_s)
    conn.close()
    return position, last, outcomes


def send_sizes(stub: Stub, start: int) -> tuple[int, list[int]]:
    """The PDU counts of the /send transactions in ``stub``'s request feed from ``start``."""
    page = stub.control.call("GET", f"/requests?from={start}")
    sizes = [
        len((r.get("content") or {}).get("pdus", []))
        for r in page["requests"]
        if "/_matrix/federation/v1/send/" in r["uri"]
    ]
    return page["next"], sizes


def size_summary(sizes: Sequence[int]) -> dict[str, Any]:
    if not sizes:
        return {"transactions": 0}
    return {
        "transactions": len(sizes),
        "pdus": sum(sizes),
        "min": min(sizes),
        "median": statistics.median(sizes),
        "max": max(sizes),
        "mean": round(sum(sizes) / len(sizes), 1),
        "of_50": sum(1 for s in sizes if s == 50),
    }


def sampled_summary(path: Path, pdus: int, top: int = 40) -> dict[str, Any]:
    """The ``top`` functions of a sampled dump (PROFILED_RUN ``sample``) by the CPU time
    under them (inclusive, each function once per sample) and in them (own), in
    microseconds per PDU (``pdus`` received while it ran), and the garbage collector's
    runs and CPU time per generation."""
    data = json.loads(path.read_text())
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    for stack, count in data["stacks"].items():
        frames = [short_name(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for name in set(frames):
            inclusive[name] = inclusive.get(name, 0) + count
    samples = sum(data["stacks"].values())
    per_sample = data["cpu_s"] / max(samples, 1)

    def us(count: float) -> float:
        return round(count * per_sample * 1e6 / pdus, 1)

    def table(counts: dict[str, int]) -> list[dict[str, Any]]:
        ranked = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)[:top]
        return [{"function": n, "us_per_pdu": us(c)} for n, c in ranked]

    return {
        "pdus": pdus,
        "samples": samples,
        "cpu_us_per_pdu": us(samples),
        "gc_tracked_objects_at_end": data["tracked_objects"],
        "gc": {
            f"generation {g}": {"runs": runs, "cpu_us_per_pdu": round(cpu * 1e6 / pdus, 1)}
            for g, (runs, cpu) in data["gc"].items()
        },
        "by_inclusive_time": table(inclusive),
        "by_own_time": table(own),
    }


def short_name(name: str) -> str:
    """``file:line(function)`` with the file relative to the tree or site-packages."""
    return name.rpartition("/site-packages/")[2].rpartition(str(ROOT) + "/")[2]


def profile_summary(path: Path, pdus: int, top: int = 25) -> dict[str, Any]:
    """The ``top`` functions of a cProfile dump by own time and by cumulative time, in
    microseconds per PDU (``pdus`` received while it ran)."""
    import pstats  # noqa: PLC0415

    stats: dict[Any, Any] = cast("Any", pstats.Stats(str(path))).stats

    def name(key: tuple[str, int, str]) -> str:
        file, line, func = key
        short = file.split("/site-packages/")[-1].split(str(ROOT) + "/")[-1]
        return f"{short}:{line}({func})"

    rows = [(name(k), v[2], v[3], v[1]) for k, v in stats.items()]  # own, cumulative, calls
    total = sum(r[1] for r in rows)

    def table(index: int) -> list[dict[str, Any]]:
        ranked = sorted(rows, key=lambda r: r[index], reverse=True)[:top]
        return [
            {
                "function": n,
                "own_us_per_pdu": round(own * 1e6 / pdus, 1),
                "cumulative_us_per_pdu": round(cum * 1e6 / pdus, 1),
                "calls_per_pdu": round(calls / pdus, 2),
            }
            for n, own, cum, calls in ranked
        ]

    return {
        "pdus": pdus,
        "profiled_us_per_pdu": round(total * 1e6 / pdus, 1),
        "by_own_time": table(1),
        "by_cumulative_time": table(2),
    }


def run_throughput(
    messages: int,
    workers: int,
    log: Any,
    profile: Path | None = None,
    *,
    clock: str = "wall",
    poll_gap_ms: int = 0,
) -> dict[str, Any]:
    """Part b: A sends ``messages`` to B, streaming and then queued (B stopped meanwhile).
    With ``profile``, A and B run under cProfile during the queued drain only
    (SIGUSR1/SIGUSR2, PROFILED_RUN): the dumps are copied beside ``profile``
    (``NAME-receiver.prof``, ``NAME-sender.prof``) and summarised (the rates are then the
    profiled ones, slower than without); ``clock`` is the profiler's (PROFILED_RUN).
    ``poll_gap_ms``: the queued drain's watcher pauses that long after each answer with
    events (``wait_for_messages``), so that B answers fewer long-polls."""
    out: dict[str, Any] = {
        "messages": messages,
        "control_workers": workers,
        "method": (
            "two `stubserver run` on 127.0.0.1 (names localhost:PORT, private CA, verified"
            " TLS); B's alice joins A's room (v12); A's alice sends M m.room.message events"
            f" through A's control API ({workers} threads, keep-alive); A's transaction queue"
            " sends them to B; B's control events long-poll counts them; /send sizes from B's"
            " control requests feed"
        ),
    }
    with stubs("a", "b", profiled=("a", "b") if profile else (), clock=clock) as (a, b):
        room = a.control.call(
            "POST", "/rooms", {"creator": "alice", "room_version": "12", "preset": "public_chat"}
        )["room_id"]
        b.control.call(
            "POST", f"/rooms/{quote(room)}/join", {"user": "alice", "via": [a.server_name]}
        )
        position = b.control.call("GET", f"/rooms/{quote(room)}/events?from=0")["next"]
        # Warm-up: keys fetched, connections open, code paths hot.
        send_many(a.http, room, 200, workers, "warm")
        position, _, _ = wait_for_messages(b, room, position, "warm", count=200, timeout=WAIT_S)
        requests_at, _ = send_sizes(b, 0)

        # Streaming: B receives while A creates.
        log(f"throughput: streaming {messages}")
        t0 = time.perf_counter()
        created = send_many(a.http, room, messages, workers, "stream")
        position, last, outcomes = wait_for_messages(
            b, room, position, "stream", count=messages, timeout=10 * WAIT_S
        )
        requests_at, sizes = send_sizes(b, requests_at)
        total = last - t0
        out["streaming"] = {
            "a_created_s": round(created, 3),
            "a_create_rate_per_s": round(messages / created),
            "all_at_b_s": round(total, 3),
            "b_rate_per_s": round(messages / total),
            "bench_long_polls": outcomes.pop("long_polls"),
            "outcomes_at_b": outcomes,
            "send_sizes": size_summary(sizes),
        }
        log(f"throughput streaming: {out['streaming']}")

        # Queued: B stopped while A creates all of them; then B drains A's full queue.
        log(f"throughput: queued {messages}")
        b.process.send_signal(signal.SIGSTOP)
        try:
            created = send_many(a.http, room, messages, workers, "queued")
        finally:
            if profile:
                a.process.send_signal(signal.SIGUSR1)
                b.process.send_signal(signal.SIGUSR1)
            cpu0 = cpu_seconds(a.process.pid), cpu_seconds(b.process.pid)
            b_split0 = cpu_times(b.process.pid)
            t0 = time.perf_counter()
            b.process.send_signal(signal.SIGCONT)
        position, last, outcomes = wait_for_messages(
            b,
            room,
            position,
            "queued",
            count=messages,
            timeout=10 * WAIT_S,
            poll_gap_s=poll_gap_ms / 1000,
        )
        cpu = cpu_seconds(a.process.pid) - cpu0[0], cpu_seconds(b.process.pid) - cpu0[1]
        b_split = [t - t0 for t, t0 in zip(cpu_times(b.process.pid), b_split0, strict=True)]
        if profile:
            out["profile"] = {}
            for stub, role in ((b, "receiver"), (a, "sender")):
                stub.process.send_signal(signal.SIGUSR2)
                deadline = time.monotonic() + WAIT_S
                while not stub.profile_path.exists():  # written whole, then renamed
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no profile from the {role}")
                    time.sleep(0.05)
                path = profile.with_name(f"{profile.stem}-{role}{profile.suffix}")
                path.write_bytes(stub.profile_path.read_bytes())
                summarise = sampled_summary if clock == "sample" else profile_summary
                out["profile"][role] = summarise(path, messages)
        requests_at, sizes = send_sizes(b, requests_at)
        total = last - t0
        out["queued"] = {
            "a_created_s": round(created, 3),
            "b_drain_s": round(total, 3),
            "b_rate_per_s": round(messages / total),
            # CPU time during the drain (1/100 s ticks; B's includes answering the
            # benchmark's long-poll): PDUs per CPU second is B's intake on one core.
            "a_cpu_s": round(cpu[0], 2),
            "b_cpu_s": round(cpu[1], 2),
            "b_user_s": round(b_split[0], 2),
            "b_system_s": round(b_split[1], 2),
            "b_pdus_per_cpu_s": round(messages / cpu[1]) if cpu[1] else None,
            "bench_poll_gap_ms": poll_gap_ms,
            # The benchmark's long-polls of B's events during the drain (B answers each).
            "bench_long_polls": outcomes.pop("long_polls"),
            "outcomes_at_b": outcomes,
            "send_sizes": size_summary(sizes),
            "note": "the first transaction (in flight when B was stopped) may be smaller",
        }
        log(f"throughput queued: {out['queued']}")
        out["rss_mb"] = {"a": round(a.rss_mb(), 1), "b": round(b.rss_mb(), 1)}
    return out


# ------------------------------------------------------------------ part c: memory


def room_tracemalloc(events: int) -> dict[str, Any]:
    """tracemalloc of a RoomService's one room before and after ``events`` messages."""
    import random  # noqa: PLC0415
    import tracemalloc  # noqa: PLC0415

    from nacl.signing import SigningKey  # noqa: PLC0415
    from twisted.internet.defer import succeed  # noqa: PLC0415
    from twisted.internet.task import Clock  # noqa: PLC0415

    from stubserver.rooms.builder import EventSigner  # noqa: PLC0415
    from stubserver.rooms.service import RoomService  # noqa: PLC0415
    from stubserver.rooms.store import RoomStore  # noqa: PLC0415
    from stubserver.rooms.transaction import TransactionMemory  # noqa: PLC0415

    class NoClient:
        def request(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a room with one server sends nothing")

    clock = Clock()
    clock.advance(1_800_000_000)
    signer = EventSigner("bench.test", "ed25519:b1", SigningKey(b"\x07" * 32))
    service = RoomService(
        clock=clock,
        signer=signer,
        store=RoomStore("bench.test", TransactionMemory(clock)),
        client=NoClient(),
        fetch_verify_key=lambda *a: succeed(None),
        rng=random.Random(1),  # noqa: S311 - a seeded room for measuring, not for secrets
    )

    def result(d: Any) -> Any:
        box: list[Any] = []
        d.addBoth(box.append)
        assert box and not hasattr(box[0], "raiseException"), box
        return box[0]

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    room = result(service.create_room("alice", room_version="12"))["room_id"]
    gc.collect()
    created = tracemalloc.get_traced_memory()[0]
    for i in range(events):
        result(
            service.send(
                room, "alice", "m.room.message", {"msgtype": "m.text", "body": f"message {i}"}
            )
        )
        clock.advance(0.001)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    held = len(service.store.get_room(room).events_since(0))  # type: ignore[union-attr]
    return {
        "events_in_room": held,
        "empty_room_kb": round((created - base) / 1024, 1),
        "room_with_events_mb": round((after - base) / 2**20, 2),
        "bytes_per_event": round((after - created) / events),
        "method": "tracemalloc traced memory (after gc.collect) from before create_room"
        " to after the messages: a RoomService on a twisted Clock, no other"
        " server in the room (nothing sent), body 'message N'",
    }


def run_memory(events: int, workers: int, log: Any) -> dict[str, Any]:
    """Part c: RSS of a stub before and after its room gains ``events`` events."""
    with stubs("m") as (m,):
        room = m.control.call(
            "POST", "/rooms", {"creator": "alice", "room_version": "12", "preset": "public_chat"}
        )["room_id"]
        send_many(m.http, room, 10, 1, "warm")
        time.sleep(1.0)
        before = m.rss_mb()
        took = send_many(m.http, room, events, workers, "mem")
        time.sleep(1.0)
        after = m.rss_mb()
        hwm = status_kb(m.process.pid, "VmHWM") / 1024
        held = len(m.control.call("GET", f"/rooms/{quote(room)}/events?from=0")["events"])
        time.sleep(1.0)
        after_read = m.rss_mb()
    out = {
        "events": events,
        "events_in_room": held,
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "rss_growth_mb": round(after - before, 1),
        "rss_after_reading_all_events_mb": round(after_read, 1),
        "vm_hwm_mb": round(hwm, 1),
        "send_s": round(took, 2),
        "method": "VmRSS of `stubserver run` (one v12 room, 10 warm-up messages) 1 s after"
        f" the last control call, before and after {events} messages sent"
        f" through the control API ({workers} threads); then once more after"
        " one control read of all the room's events",
    }
    log(f"memory (process): {out}")
    out["in_process"] = room_tracemalloc(events)
    log(f"memory (tracemalloc): {out['in_process']}")
    return out


def run_extremities(log: Any) -> dict[str, Any]:
    """Issue 22 row 4, in process: the work per accepted event in a room with 1 and with
    2,000 forward extremities (and 100 conflicting forks), counted, with the time per
    event beside it; then the dummy events that cap the extremities
    (``stubserver.devtools.room_attacks.extremities_case``, as ``scripts/soak.py``)."""
    from stubserver.devtools import room_attacks  # noqa: PLC0415

    out = room_attacks.extremities_case()
    log(f"extremities: {json.dumps(out, sort_keys=True)}")
    return out


# ------------------------------------------------------------------ main


def main(argv: Sequence[str]) -> int:
    if list(argv[:1]) == ["ns-timing"]:
        print(json.dumps(ns_timing(json.load(sys.stdin))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        action="append",
        choices=("synapse", "dendrite", "throughput", "memory", "extremities"),
    )
    parser.add_argument("--repeat", type=int, default=20, help="rounds per room version (a)")
    parser.add_argument("--messages", type=int, default=5000, help="messages A sends B (b)")
    parser.add_argument("--events", type=int, default=10_000, help="events in the room (c)")
    parser.add_argument(
        "--synapse-messages",
        type=int,
        default=5000,
        help="messages we send into Synapse's v12 room after the timing (issue 22; 0: none)",
    )
    parser.add_argument(
        "--synapse-paced",
        type=int,
        default=1000,
        help="then messages sent in steps of 50, each once Synapse has the last (0: none)",
    )
    parser.add_argument("--workers", type=int, default=8, help="control API client threads")
    parser.add_argument(
        "--synapse-python",
        type=Path,
        default=None,
        help="Python of a Synapse 1.163.2 venv (default: as bench/run finds"
        " one: the interop cache, else bench/work/synapse-venv)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="throughput: run A and B under cProfile during the queued drain, dump them"
        " beside this path (-receiver, -sender) and summarise them (us per PDU)",
    )
    parser.add_argument(
        "--profile-clock",
        choices=("wall", "cpu", "sample"),
        default="wall",
        help="the profiler: cProfile on the wall clock or on CPU time, or stacks sampled on"
        " CPU time (sample: what other work on a busy machine does not inflate)",
    )
    parser.add_argument(
        "--poll-gap-ms",
        type=int,
        default=0,
        help="throughput: the queued drain's watcher pauses this long after each long-poll"
        " answer with events, so that B answers fewer of them (default 0: as before)",
    )
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS,
        help="the JSON file to update (default bench/results-rooms.json)",
    )
    args = parser.parse_args(argv)
    parts = args.only or ["synapse", "dendrite", "throughput", "memory", "extremities"]

    def log(message: str) -> None:
        print(f"[rooms] {message}", file=sys.stderr, flush=True)

    results: dict[str, Any] = {}
    if args.output.exists():
        results = json.loads(args.output.read_text())
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }
    for part in parts:
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load_before = os.getloadavg()[0]
        if part == "synapse":
            figure = run_synapse(
                args.repeat,
                args.synapse_python,
                log,
                messages=args.synapse_messages,
                workers=args.workers,
                paced=args.synapse_paced,
            )
        elif part == "dendrite":
            figure = run_dendrite(args.repeat, log)
        elif part == "throughput":
            figure = run_throughput(
                args.messages,
                args.workers,
                log,
                args.profile,
                clock=args.profile_clock,
                poll_gap_ms=args.poll_gap_ms,
            )
        elif part == "extremities":
            figure = run_extremities(log)
        else:
            figure = run_memory(args.events, args.workers, log)
        figure["run_at"] = started
        figure["loadavg_1min_before"] = round(load_before, 2)
        figure["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
        results[part] = figure
    text = json.dumps(results, indent=2)
    print(text)
    if not args.no_write:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
