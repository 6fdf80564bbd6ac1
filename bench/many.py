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

``--synapse N`` (issue 23's targets against a real homeserver): tests/interop/harness.py's
environment (network namespace, its DNS server, CA, Synapse 1.163.2; ``--dendrite N``:
tests/interop/dendrite.py's, Dendrite v0.13.8) with one ``stubserver
run`` serving N servers ``s1.fan.test`` ... ``sN.fan.test`` (``stubserver generate --count
N``, certificates from the environment's CA) on one shared TLS listener,
``127.0.0.50:8448``: the zone gives every name an A record for that address, and the
listener tells them apart by SNI (certificate) and Host (server). Inside the namespace
(``many.py ns-fanout``, the timing loop as bench/rooms.py's), the homeserver's user creates a
public room and the N servers join it through the control API
(``/_stubserver/v1/servers/{name}/rooms/{room}/join``) one after the other; a second room
is joined by ``--threads`` client threads at once; in the second room the homeserver's user then
sends ``--messages`` messages, one at a time, each timed to its arrival in all N rooms
(long polls of every server's ``events``), with the ``/send`` transactions it sent,
counted from the N request feeds (``/_stubserver/v1/servers/{name}/requests``). Then
(``down``) the last 30 % of the servers go down (``PUT .../servers/{name}/faults``
``{"down": true}``; on the shared listener that resets their requests, ``"fault":
"refused"``, rather than closing it), Synapse's user sends one message, timed to its last
arrival in the up servers' rooms; for ``DOWN_HOLD_S`` more, the homeserver's attempts to
the down ones are counted (their ``connections_refused`` and the feed entries with a
``fault``); then they come back (``DELETE`` faults) and the time until each has the
message is taken, within ``CATCH_UP_WINDOW_S`` (issue 23: within a minute of the return).
Those still without it then each send a message into the room (what a real peer back up
does; the homeserver lifts its backoff for a server that sends to it) and the time until
they have it is taken again, separately. Each phase reports our process's RSS and CPU
time, and the homeserver's CPU time.

    .venv/bin/python bench/many.py [--counts 1 100] [--repeat 3] [--fanout N] [--output PATH]
    flock /tmp/stubserver-interop.lock .venv/bin/python bench/many.py --synapse 100 \
        [--dendrite 100] [--threads 8] [--messages 3] [--output bench/results-many-synapse.json]
"""

from __future__ import annotations

import argparse
import functools
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


#: The address of the shared listener of ``--synapse``'s (``--dendrite``'s) servers.
FAN_ADDRESS = "127.0.0.50"
FAN_TEMPLATE = "s{i}.fan.test"
#: The control listener of their process (loopback of the namespace).
FAN_CONTROL_PORT = 8009
#: How long one arrival or one membership count may take inside the namespace, seconds.
NS_WAIT_S = 300.0
#: Pause between the homeserver's ``joined_members`` polls, in seconds.
MEMBERS_POLL_S = 0.1
#: After the last arrival: the wait for further transactions before they are counted.
SETTLE_S = 2.0
#: The share of the servers made down in the ``down`` phase (issue 23: 30 of 100).
DOWN_SHARE = 0.3
#: How long the down servers stay down after the up ones have the message, seconds.
DOWN_HOLD_S = 15.0
#: How long each wait for the returned servers to have the message lasts, seconds.
CATCH_UP_WINDOW_S = 60.0


def fault_tally(entries: list[dict[str, Any]]) -> dict[str, int]:
    """How many request feed entries each ``fault`` annotation marks (pure)."""
    tally: dict[str, int] = {}
    for entry in entries:
        kind = entry.get("fault")
        if kind is not None:
            tally[kind] = tally.get(kind, 0) + 1
    return tally


def spread(seconds: list[float | None]) -> dict[str, Any]:
    """How many of ``seconds`` are figures, and their first, median and last (pure)."""
    got = sorted(s for s in seconds if s is not None)
    if not got:
        return {"arrived": 0, "of": len(seconds)}
    return {
        "arrived": len(got),
        "of": len(seconds),
        "first_arrival_s": round(got[0], 3),
        "median_arrival_s": round(statistics.median(got), 3),
        "last_arrival_s": round(got[-1], 3),
    }


def write_fanout_config(directory: Path, count: int, ca: Any) -> Path:
    """``stubserver generate --count`` for the namespace: the environment's CA and DNS."""
    directory.mkdir(parents=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stubserver",
            "generate",
            "--count",
            str(count),
            "--server-name",
            FAN_TEMPLATE,
            "--dir",
            str(directory),
            "--bind",
            FAN_ADDRESS,
            "--port",
            "8448",
            "--control-port",
            str(FAN_CONTROL_PORT),
            "--ca-cert",
            str(ca.cert_path),
            "--ca-key",
            str(ca.key_path),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    path = Path(done.stdout.strip())
    config = yaml.safe_load(path.read_text())
    config.update(
        {
            "federation_verify_certificates": True,
            "federation_dns_servers": ["127.0.0.53:53"],  # the harness's DNS server
            "ip_range_allowlist": ["127.0.0.0/8"],
            "log_level": "warn",
        }
    )
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def homeserver_fanout(product: str, count: int, threads: int, messages: int) -> dict[str, Any]:
    """``--synapse`` / ``--dendrite``: the interop environment of ``product``, our process of
    ``count`` servers in it, and the timing loop (:func:`ns_fanout`) inside its namespace."""
    import tempfile  # noqa: PLC0415

    sys.path.insert(0, str(REPO / "bench"))
    from bench import synapse_venv  # noqa: PLC0415
    from tests.interop import dendrite, harness  # noqa: PLC0415

    reason = harness.unavailable_reason()
    if reason is not None:
        return {"skipped": reason}
    names = [FAN_TEMPLATE.format(i=i) for i in range(1, count + 1)]
    records = (*harness.DEFAULT_RECORDS, *(harness.a_record(n, FAN_ADDRESS) for n in names))

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    def environment(directory: Path) -> Any:
        if product == "Synapse":
            python = synapse_venv() / "bin" / "python"
            return harness.interop_environment(
                directory, stubs=(), records=records, synapse_python=python, log=log
            )
        return dendrite.dendrite_environment(directory, stubs=(), records=records, log=log)

    with (
        tempfile.TemporaryDirectory(prefix="stubbench-many-") as tmp,
        environment(Path(tmp)) as env,
    ):
        homeserver = env.homeserver
        running = env.synapse if product == "Synapse" else env.dendrite
        config = write_fanout_config(Path(tmp) / "fan", count, env.ca)
        started = time.monotonic()
        process = env.ns.spawn(
            f"stubserver of {count} servers",
            [harness.STUBSERVER, "run", "-c", config],
            log_path=config.with_name("stubserver.log"),
        )
        try:
            ready = process.read_ready_line()
            ready_s = time.monotonic() - started
            spec = {
                "names": ready.get("servers", names),
                "pid": process.pid,
                "homeserver_pid": running.process.pid,
                "control_url": f"http://127.0.0.1:{FAN_CONTROL_PORT}",
                "control_token": yaml.safe_load(config.read_text())["control_token"],
                "homeserver_url": homeserver.spec.client_url,
                "homeserver_token": homeserver.user[2],
                "homeserver_name": homeserver.server_name,
                "threads": threads,
                "messages": messages,
            }
            done = env.ns.run(
                [sys.executable, str(Path(__file__).resolve()), "ns-fanout"],
                input_text=json.dumps(spec),
                timeout=1800,
            )
            if done.returncode != 0:
                raise RuntimeError(f"ns-fanout failed: {done.stderr[-3000:]}\n{process.log_tail()}")
            print(done.stderr, file=sys.stderr)
        finally:
            process.stop()
    result: dict[str, Any] = json.loads(done.stdout)
    return {
        "method": (
            f"interop environment (netns, DNS, CA), {homeserver.product}"
            f" ({'1.163.2' if product == 'Synapse' else 'v0.13.8'}) on SQLite;"
            f" one stubserver run of {count} servers ({FAN_TEMPLATE}, stubserver generate),"
            f" one shared TLS listener {FAN_ADDRESS}:8448 (A records, SNI and Host); timing"
            " loop inside the namespace (bench/many.py ns-fanout)"
        ),
        "servers": count,
        "ready_s": round(ready_s, 3),
        **result,
    }


def ns_fanout(spec: dict[str, Any]) -> dict[str, Any]:
    """The timing loop inside the namespace: joins (sequential, then concurrent), then
    ``messages`` messages from Synapse's user, each to its last arrival."""
    import threading  # noqa: PLC0415
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    sys.path.insert(0, str(REPO / "bench"))
    from rooms import PREFIX, Http, quote  # noqa: PLC0415

    names: list[str] = spec["names"]
    pids = {"stubserver": spec["pid"], "homeserver": spec["homeserver_pid"]}
    local = threading.local()

    def control() -> Http:
        if not hasattr(local, "http"):
            local.http = Http(spec["control_url"] + PREFIX, spec["control_token"])
        return local.http  # type: ignore[no-any-return]

    homeserver = Http(spec["homeserver_url"] + "/_matrix/client/v3", spec["homeserver_token"])
    marks = {"t": time.monotonic(), **{k: cpu_seconds(p) for k, p in pids.items()}}

    def phase(**figures: Any) -> dict[str, Any]:
        """``figures`` with the CPU seconds each process spent since the last phase."""
        now = {"t": time.monotonic(), **{k: cpu_seconds(p) for k, p in pids.items()}}
        out = {
            **figures,
            "wall_s": round(now["t"] - marks["t"], 3),
            "stubserver_cpu_s": round(now["stubserver"] - marks["stubserver"], 2),
            "homeserver_cpu_s": round(now["homeserver"] - marks["homeserver"], 2),
            "stubserver_rss_mb": round(rss_mb(pids["stubserver"]), 1),
        }
        marks.update(now)
        return out

    def join(name: str, room: str) -> None:
        via = [spec["homeserver_name"]]
        body = {"user": "alice", "via": via}
        control().call("POST", f"/servers/{quote(name)}/rooms/{quote(room)}/join", body, 120)

    def members(room: str) -> int:
        joined = homeserver.call("GET", f"/rooms/{quote(room)}/joined_members")["joined"]
        return len(joined)

    def until_members(room: str) -> float:
        """Seconds until Synapse lists every server's user as joined."""
        began, deadline = time.monotonic(), time.monotonic() + NS_WAIT_S
        while members(room) < len(names) + 1:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{room}: {members(room)} members after {NS_WAIT_S} s")
            time.sleep(MEMBERS_POLL_S)
        return time.monotonic() - began

    def feed_next(name: str, path: str) -> int:
        return int(control().call("GET", f"/servers/{quote(name)}{path}?from=0")["next"])

    def transactions(mark: dict[str, int], among: list[str] = names) -> dict[str, Any]:
        """``/send`` transactions from Synapse to ``among`` since ``mark`` (with their PDUs
        and EDUs by type), and its other signed requests."""
        sends = pdus = other = 0
        edus: dict[str, int] = {}
        for name in among:
            got = control().call("GET", f"/servers/{quote(name)}/requests?from={mark[name]}")
            for r in got["requests"]:
                if r.get("origin") != spec["homeserver_name"]:
                    continue
                if not r["uri"].startswith("/_matrix/federation/v1/send/"):
                    other += 1
                    continue
                sends += 1
                content = r.get("content") or {}
                pdus += len(content.get("pdus", ()))
                for edu in content.get("edus", ()):
                    edus[edu.get("edu_type", "?")] = edus.get(edu.get("edu_type", "?"), 0) + 1
        return {"send_transactions": sends, "pdus": pdus, "edus": edus, "other_requests": other}

    def arrival_within(
        name: str, position: int, *, room: str, event_id: str, began: float, wait_s: float
    ) -> float | None:
        """Seconds from ``began`` until ``event_id`` is in ``name``'s room; None when it is
        not there ``wait_s`` after ``began``."""
        path, deadline = f"/servers/{quote(name)}/rooms/{quote(room)}/events", began + wait_s
        while (left_ms := int((deadline - time.monotonic()) * 1000)) > 0:
            wait_ms = min(30000, left_ms)
            got = control().call("GET", f"{path}?from={position}&wait_ms={wait_ms}", None, 60)
            if any(e["event_id"] == event_id for e in got["events"]):
                return time.monotonic() - began
            position = got["next"]
        return None

    def arrival(name: str, position: int, *, room: str, event_id: str, began: float) -> float:
        """Seconds from ``began`` until ``event_id`` is in ``name``'s room."""
        got = arrival_within(
            name, position, room=room, event_id=event_id, began=began, wait_s=NS_WAIT_S
        )
        if got is None:
            raise RuntimeError(f"{event_id} not in {name}'s room after {NS_WAIT_S} s")
        return got

    def say(room: str, label: str, text: str) -> str:
        """The homeserver's user says ``text`` in ``room``; the event ID."""
        path = f"/rooms/{quote(room)}/send/m.room.message/{label}-{time.time_ns()}"
        return str(homeserver.call("PUT", path, {"msgtype": "m.text", "body": text})["event_id"])

    def faults(name: str, method: str, body: Any = None) -> dict[str, Any]:
        return control().call(method, f"/servers/{quote(name)}/faults", body)  # type: ignore[no-any-return]

    def refused(name: str) -> int:
        return int(faults(name, "GET")["counters"]["connections_refused"])

    def down_and_back(room: str, pool: ThreadPoolExecutor) -> dict[str, Any]:
        """The ``down`` phase: the last :data:`DOWN_SHARE` of the servers down, a message,
        its arrival in the others, the homeserver's attempts to the down ones, their return
        and its arrival in them, by itself and once they send."""
        cut = len(names) - round(len(names) * DOWN_SHARE)
        up, down = names[:cut], names[cut:]
        requests_mark = {n: feed_next(n, "/requests") for n in names}
        events_mark = {n: feed_next(n, f"/rooms/{quote(room)}/events") for n in names}
        refused_mark = {n: refused(n) for n in down}
        answers = list(pool.map(lambda n: faults(n, "PUT", {"down": True}), down))
        began = time.monotonic()
        sent = say(room, "down", f"sent while {len(down)} of {len(names)} are down")
        waits = functools.partial(arrival, room=room, event_id=sent, began=began)
        up_arrivals: list[float | None] = list(pool.map(waits, up, [events_mark[n] for n in up]))
        time.sleep(DOWN_HOLD_S)
        feed: list[dict[str, Any]] = []
        for name in down:
            path = f"/servers/{quote(name)}/requests?from={requests_mark[name]}"
            feed.extend(control().call("GET", path)["requests"])
        figures: dict[str, Any] = {
            "down_servers": len(down),
            "fault_answer": answers[0],
            "up": spread(up_arrivals),
            **transactions(requests_mark, up),
        }
        figures["while_down"] = {
            "held_s": round(time.monotonic() - began, 3),
            "connections_refused": sum(refused(n) - refused_mark[n] for n in down),
            "servers_refusing": sum(1 for n in down if refused(n) > refused_mark[n]),
            "feed_entries": len(feed),
            "feed_faults": fault_tally(feed),
            "feed_from_homeserver": sum(
                1 for e in feed if e.get("origin") == spec["homeserver_name"]
            ),
        }
        out = {"sent": phase(**figures)}
        print(f"down: {out['sent']}", file=sys.stderr)
        requests_mark = {n: feed_next(n, "/requests") for n in down}
        list(pool.map(lambda n: faults(n, "DELETE"), down))
        back = time.monotonic()
        catch = functools.partial(
            arrival_within, room=room, event_id=sent, began=back, wait_s=CATCH_UP_WINDOW_S
        )
        by_itself = list(pool.map(catch, down, [events_mark[n] for n in down]))
        out["back_by_itself"] = phase(
            window_s=CATCH_UP_WINDOW_S,
            **spread(by_itself),
            **transactions(requests_mark, down),
        )
        print(f"back by itself: {out['back_by_itself']}", file=sys.stderr)
        missing = [n for n, s in zip(down, by_itself, strict=True) if s is None]
        if missing:
            requests_mark = {n: feed_next(n, "/requests") for n in missing}
            prompted = time.monotonic()

            def prompt(name: str) -> None:
                body = {
                    "sender": "alice",
                    "type": "m.room.message",
                    "content": {"msgtype": "m.text", "body": f"{name} is back"},
                }
                control().call("POST", f"/servers/{quote(name)}/rooms/{quote(room)}/send", body)

            list(pool.map(prompt, missing))
            catch = functools.partial(
                arrival_within, room=room, event_id=sent, began=prompted, wait_s=CATCH_UP_WINDOW_S
            )
            after = list(pool.map(catch, missing, [events_mark[n] for n in missing]))
            out["back_once_they_send"] = phase(
                window_s=CATCH_UP_WINDOW_S,
                since_return_s=round(prompted - back, 3),
                **spread(after),
                **transactions(requests_mark, missing),
            )
            print(f"back once they send: {out['back_once_they_send']}", file=sys.stderr)
        return out

    out: dict[str, Any] = {}
    room_version = homeserver.call("GET", "/capabilities")["capabilities"]["m.room_versions"]
    out["room_version"] = room_version["default"]
    out["start"] = phase()
    with ThreadPoolExecutor(max(len(names), spec["threads"])) as pool:
        for label, workers in (("sequential", 1), ("concurrent", spec["threads"])):
            room = homeserver.call("POST", "/createRoom", {"preset": "public_chat"})["room_id"]
            requests_mark = {n: feed_next(n, "/requests") for n in names}
            began = time.monotonic()
            if workers == 1:
                for name in names:
                    join(name, room)
            else:
                with ThreadPoolExecutor(workers) as joiners:
                    list(joiners.map(lambda n, r=room: join(n, r), names))
            joins_s = time.monotonic() - began
            listed_s = joins_s + until_members(room)
            settled = transactions(requests_mark)
            out[f"join_{label}"] = phase(
                threads=workers,
                joins_returned_s=round(joins_s, 3),
                all_listed_by_homeserver_s=round(listed_s, 3),
                **settled,
            )
            print(f"join {label}: {out[f'join_{label}']}", file=sys.stderr)
        out["messages"] = []
        for i in range(spec["messages"]):
            requests_mark = {n: feed_next(n, "/requests") for n in names}
            events_mark = {n: feed_next(n, f"/rooms/{quote(room)}/events") for n in names}
            began = time.monotonic()
            sent = say(room, f"fan{i}", f"hello, {len(names)} servers ({i})")
            waits = functools.partial(arrival, room=room, event_id=sent, began=began)
            arrivals = sorted(pool.map(waits, names, [events_mark[n] for n in names]))
            last = arrivals[-1]
            time.sleep(SETTLE_S)
            out["messages"].append(
                phase(
                    first_arrival_s=round(arrivals[0], 3),
                    median_arrival_s=round(statistics.median(arrivals), 3),
                    last_arrival_s=round(last, 3),
                    **transactions(requests_mark),
                )
            )
            print(f"message {i}: {out['messages'][-1]}", file=sys.stderr)
        out["down"] = down_and_back(room, pool)
    out["stubserver_cpu_total_s"] = round(cpu_seconds(pids["stubserver"]), 2)
    return out


def main() -> None:
    if sys.argv[1:] == ["ns-fanout"]:
        print(json.dumps(ns_fanout(json.load(sys.stdin))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--fanout", type=int, default=0, metavar="N")
    parser.add_argument("--synapse", type=int, default=0, metavar="N")
    parser.add_argument("--dendrite", type=int, default=0, metavar="N")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--messages", type=int, default=3)
    args = parser.parse_args()
    if args.synapse or args.dendrite:
        found = {
            product.lower(): homeserver_fanout(product, count, args.threads, args.messages)
            for product, count in (("Synapse", args.synapse), ("Dendrite", args.dendrite))
            if count
        }
        print(json.dumps(found, indent=2))
        if args.output is not None:
            args.output.write_text(json.dumps(found, indent=2) + "\n")
        return
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
