"""The receive pipeline of a ``/send`` in one process, stage by stage (issue 22).

What ``bench/rooms.py --only throughput`` measures end to end (two processes, TLS, HTTP,
the benchmark's own long-polls), without any of that: B's work per received PDU, as CPU
time (``time.process_time``), for the same transactions (50 v12 ``m.room.message`` PDUs
of one sender, signed by their server, queued in order). Each stage is the production
function the ``/send`` path calls:

* ``parse``: ``parse_json_bytes`` of the body (the X-Matrix filter's parse);
* ``xmatrix``: ``parsed_signable_bytes`` of the request signing object (what the request
  signature check encodes; the one ed25519 check per transaction is left out);
* ``event``: ``parse_pdu`` per PDU, as ``Intake.receive`` calls it (format, sizes,
  content hash, redacted form, event ID);
* ``verify``: the PDU signatures (``verify_with_keys``, keys at hand), ed25519 included;
* ``apply``: ``TransactionResults.add`` per PDU (content hash check, auth rules, room).

Each round builds a fresh receiving room from the same create and join events and takes
all the transactions; the figure per stage is its lowest over the rounds (the least
disturbed by other work on the machine), in microseconds per PDU::

    .venv/bin/python bench/intake.py --pdus 5000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TS = 1_700_000_000_000
STAGES = ("parse", "xmatrix", "event", "verify", "apply")


def main(argv: list[str]) -> int:
    from nacl.signing import SigningKey  # noqa: PLC0415

    from stubserver.rooms.builder import EventSigner  # noqa: PLC0415
    from stubserver.rooms.create import build_in_room, create_room  # noqa: PLC0415
    from stubserver.rooms.room import Room  # noqa: PLC0415
    from stubserver.rooms.transaction import (  # noqa: PLC0415
        TransactionResults,
        parse_pdu,
        signature_error,
        transaction_lists,
        verify_with_keys,
    )
    from stubserver.rooms.versions import ROOM_VERSIONS  # noqa: PLC0415
    from stubserver.signing.canonical_json import parse_json_bytes  # noqa: PLC0415
    from stubserver.signing.keys import parsed_signable_bytes  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pdus", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    a = EventSigner("a.test", "ed25519:a1", SigningKey(b"\x0a" * 32))
    b = EventSigner("b.test", "ed25519:b1", SigningKey(b"\x0b" * 32))

    def joined_room() -> Room:
        room = create_room(
            ROOM_VERSIONS["12"],
            a,
            creator="@alice:a.test",
            now=TS,
            rng=random.Random(7),  # noqa: S311 - a bench room's ID, not a secret
            preset="public_chat",
        ).room
        add(room, "m.room.member", {"membership": "join"}, "@bob:b.test", TS)
        return room

    def add(room: Room, kind: str, content: dict[str, Any], key: str | None, ts: int) -> Any:
        built = build_in_room(
            room, b, sender="@bob:b.test", event_type=kind, content=content, now=ts, state_key=key
        )
        room.add_event(built.event, ts, origin="b.test")
        return built.pdu

    sender = joined_room()
    pdus = [
        add(sender, "m.room.message", {"msgtype": "m.text", "body": f"queued {i}"}, None, TS + i)
        for i in range(args.pdus)
    ]
    bodies = [
        json.dumps({"origin": "b.test", "origin_server_ts": TS, "pdus": pdus[i : i + 50]}).encode()
        for i in range(0, len(pdus), 50)
    ]
    key = b.signing_key.verify_key
    verify = verify_with_keys(lambda server, _key_id, _ts: key if server == "b.test" else None)

    def one_round() -> dict[str, float]:
        room = joined_room()

        def rooms(room_id: str) -> Room | None:
            return room if room_id == room.room_id else None

        spent = dict.fromkeys(STAGES, 0.0)
        clock: Callable[[], float] = time.process_time
        for n, body in enumerate(bodies):
            t0 = clock()
            content = parse_json_bytes(body)
            t1 = clock()
            parsed_signable_bytes(
                {"method": "PUT", "uri": f"/_matrix/federation/v1/send/{n}", "content": content}
            )
            t2 = clock()
            listed, _ = transaction_lists(content)
            parsed = [parse_pdu("b.test", p, rooms, owned=True, float_free=True) for p in listed]
            events = [p for p in parsed if p is not None]
            t3 = clock()
            errors = [signature_error(event, verify) for _, event in events]
            t4 = clock()
            results = TransactionResults("b.test", TS + len(pdus))
            for (target, event), error in zip(events, errors, strict=True):
                results.add(target, event, error)
            t5 = clock()
            if len(results.added) != len(listed):
                raise RuntimeError(f"transaction {n}: {results.outcome(()).response}")
            laps = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)
            for stage, seconds in zip(STAGES, laps, strict=True):
                spent[stage] += seconds
        return spent

    one_round()  # warm-up
    best = dict.fromkeys(STAGES, float("inf"))
    totals = []
    for _ in range(args.rounds):
        spent = one_round()
        totals.append(sum(spent.values()))
        best = {stage: min(best[stage], spent[stage]) for stage in STAGES}
    per_pdu = {stage: round(best[stage] * 1e6 / len(pdus), 1) for stage in STAGES}
    result = {
        "pdus": len(pdus),
        "rounds": args.rounds,
        "lowest_us_per_pdu": per_pdu,
        "sum_of_lowest_us_per_pdu": round(sum(best.values()) * 1e6 / len(pdus), 1),
        "median_round_us_per_pdu": round(sorted(totals)[len(totals) // 2] * 1e6 / len(pdus), 1),
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
