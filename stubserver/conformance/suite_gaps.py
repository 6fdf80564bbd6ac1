"""Gaps in the room's history, per room version: a chain of our events of which only the
last is sent, a partition that ends, a gap deeper than a /sync timeline.

Spec: Server-Server API v1.19, "Backfilling and retrieving missing events"; Client-Server
API v1.19, "Syncing" (``limited``, ``prev_batch``) and "GET /rooms/{roomId}/messages".
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Final
from urllib.parse import urlencode

from stubserver.conformance.context import (
    PEER_USER,
    AreaEntry,
    Context,
    NotYet,
    client_call,
    expect,
    per_version,
    wait_until,
)
from stubserver.conformance.gaps import judge_gap_fill
from stubserver.conformance.runner import CheckFailed, ConformanceTest

BACKFILL = "Backfilling and retrieving missing events"
#: Events of ours withheld before the one we send (fewer than get_missing_events' 10).
CHAIN_EVENTS: Final = 4
#: Events withheld before the one we send in the /sync test (Complement's number).
SYNC_GAP_EVENTS: Final = 50
#: The timeline limit of the /sync filter: below the gap.
TIMELINE_LIMIT: Final = 10
#: A /messages page larger than any test room.
BIG_PAGE: Final = 100


def _ours_in_order(
    ctx: Context, room_id: str, ours: list[str], from_token: str | None
) -> list[str]:
    """``ours`` as its client's /messages (backwards, from ``from_token``) lists them."""
    chunk = ctx.user.messages(room_id, limit=BIG_PAGE, from_token=from_token)["chunk"]
    wanted = set(ours)
    return [e["event_id"] for e in chunk if e.get("event_id") in wanted]


def _wait_in_order(
    ctx: Context, room_id: str, newest_first: list[str], what: str, from_token: str | None = None
) -> None:
    """Wait until /messages lists ``newest_first`` exactly in that order (a server
    that left a gap may fill it by backfill as the client pages back)."""

    def probe() -> bool | NotYet:
        got = _ours_in_order(ctx, room_id, newest_first, from_token)
        return True if got == newest_first else NotYet(got)

    wait_until(what, probe, expected=f"{newest_first} (newest first)")


def _the_way(ctx: Context, room_id: str, missing: list[str]) -> str:
    """How it filled the gap, for the note: ``judge_gap_fill`` on our log, and backfill."""
    log = ctx.peer.requests()
    try:
        way = judge_gap_fill(log, room_id, missing, state_may_fill=True)
    except CheckFailed as e:
        way = f"no request that fills a gap ({e.got})"
    backfills = sum(
        1 for r in log if "/backfill/" in str(r.get("uri", "")) and r.get("status") == 200
    )
    return f"{way}; {backfills} backfill request(s)" if backfills else way


def chain_filled_in_order(ctx: Context, version: str) -> str:
    """A linear chain of our messages of which only the last is sent: it fetches the
    missing ones ("a server may use /get_missing_events ... to fill the gap"; any way
    the spec allows) and its client's /messages lists every event of the chain, in the
    chain's order. The note says which way it took (Complement's
    TestGetMissingEventsGapFilling requires get_missing_events and no /state_ids; the
    spec does not)."""
    room_id = ctx.join_homeserver_room(version)
    chain = [ctx.send_text(room_id, f"chain {i}", destinations=[]) for i in range(CHAIN_EVENTS)]
    last = ctx.peer.send_message(room_id, "end of the chain", sender=PEER_USER)
    ctx.wait_visible(room_id, last, "the last event of the chain")
    _wait_in_order(ctx, room_id, [last, *reversed(chain)], "the chain in its client's /messages")
    return _the_way(ctx, room_id, chain)


def partition_ordering(ctx: Context, version: str) -> str:
    """A partition: our first message reaches it, the next two are withheld, the fourth
    (built on them) is sent. Its client's /sync (timeline limit 1) shows the fourth, and
    /messages from that timeline's ``prev_batch`` lists the third, second and first in
    that order (Complement's TestNetworkPartitionOrdering: 4, 3, 2, 1)."""
    room_id = ctx.join_homeserver_room(version)
    first = ctx.send_text(room_id, "before the partition")
    ctx.wait_visible(room_id, first, "the message before the partition")
    held = [ctx.send_text(room_id, f"during the partition {i}", destinations=[]) for i in (2, 3)]
    fourth = ctx.send_text(room_id, "after the partition")
    ctx.wait_visible(room_id, fourth, "the message after the partition")
    timeline = _timeline(ctx, room_id, limit=1)
    events = [e.get("event_id") for e in timeline.get("events") or []]
    expect("its client's /sync timeline (limit 1) after the partition", [fourth], events)
    prev_batch = timeline.get("prev_batch")
    if not isinstance(prev_batch, str):
        raise CheckFailed("the /sync timeline's prev_batch", "a token", prev_batch)
    _wait_in_order(
        ctx,
        room_id,
        [*reversed(held), first],
        "/messages from the timeline's prev_batch",
        from_token=prev_batch,
    )
    return _the_way(ctx, room_id, held)


def sync_timeline_limited(ctx: Context, version: str) -> str:
    """50 of our messages withheld, then one sent: its client's /sync timeline (filter
    limit 10) ends with the sent one and is ``limited`` ("True if the number of events
    returned was limited by the limit on the filter": either it fetched all 51, more
    than 10, or it left a gap the client must page through with ``prev_batch``), in an
    incremental sync from before the gap and in a full one (Complement's
    TestSyncTimelineGap, both subtests). The note says how it filled the gap."""
    room_id = ctx.join_homeserver_room(version)
    since = str(_sync(ctx, TIMELINE_LIMIT)["next_batch"])
    held = [
        ctx.send_text(room_id, f"withheld {i}", destinations=[]) for i in range(SYNC_GAP_EVENTS)
    ]
    after = ctx.send_text(room_id, "after the gap")
    ctx.wait_visible(room_id, after, "the message after the gap")
    for kind, start in (("incremental", since), ("full", None)):
        timeline = _timeline(ctx, room_id, limit=TIMELINE_LIMIT, since=start)
        events = [e.get("event_id") for e in timeline.get("events") or []]
        expect(f"the last event of its {kind} /sync timeline", after, events[-1:] and events[-1])
        expect(
            f"its {kind} /sync timeline's limited (filter limit {TIMELINE_LIMIT})",
            True,
            timeline.get("limited"),
        )
    return _the_way(ctx, room_id, held)


def _filter(limit: int) -> str:
    """A /sync filter with a timeline limit no other sync used (Synapse caches
    identical initial syncs)."""
    nonce = f"conformance-{secrets.token_hex(8)}"
    return json.dumps(
        {"room": {"timeline": {"limit": limit}}, "account_data": {"not_types": [nonce]}}
    )


def _sync(ctx: Context, limit: int, since: str | None = None) -> dict[str, Any]:
    """One /sync of its client, full when no ``since``, right away (timeout 0)."""
    params = {"filter": _filter(limit), "timeout": "0"}
    if since is not None:
        params["since"] = since
    answer = client_call(ctx.user, "GET", f"/sync?{urlencode(params)}")
    if not isinstance(answer, dict):
        raise CheckFailed("its client's /sync", "a JSON object", answer)
    return answer


def _timeline(
    ctx: Context, room_id: str, *, limit: int, since: str | None = None
) -> dict[str, Any]:
    """The room's ``timeline`` in one /sync of its client (full when no ``since``)."""
    answer = _sync(ctx, limit, since)
    room = ((answer.get("rooms") or {}).get("join") or {}).get(room_id)
    if not isinstance(room, dict):
        raise CheckFailed("the room in its client's /sync", "listed under join", "absent")
    timeline = room.get("timeline")
    return timeline if isinstance(timeline, dict) else {}


AREA: list[AreaEntry] = [
    ("gaps.chain_filled_in_order", BACKFILL, chain_filled_in_order),
    ("gaps.partition_ordering", BACKFILL, partition_ordering),
    ("gaps.sync_timeline_limited", BACKFILL, sync_timeline_limited),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests for each room version."""
    return per_version(AREA, versions)
