"""How a homeserver filled a gap we left: judged from the requests it made to us (pure).

Server-Server API v1.19, "Backfilling and retrieving missing events": a server that
receives an event whose ``prev_events`` it lacks may fetch them with
``/get_missing_events``; when that does not reach back far enough it may instead take the
state at the event with ``/state_ids`` (or ``/state``) and fetch what it lacks with
``/event``; and any event may be fetched alone with ``/event``. Every one of these is
right, and so is a mix of them; a test requires the outcome and reports which way was
taken. It fails only when the requests show no way that could have filled the gap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from stubserver.conformance.runner import CheckFailed

FEDERATION: Final = "/_matrix/federation/v1/"
#: The spec's default ``limit`` of ``/get_missing_events``.
DEFAULT_MISSING_EVENTS_LIMIT: Final = 10


@dataclass(frozen=True)
class GapRequests:
    """What the requests (answered 200) for one room show: ``get_missing_events``
    limits (one per walk: the largest of the calls with the same ``latest_events`` and
    ``earliest_events``), event IDs fetched one by one, and whether its state was asked."""

    missing_events_limits: tuple[int, ...]
    fetched: frozenset[str]
    state_asked: tuple[str, ...]


def _segments(entry: Mapping[str, Any]) -> list[str]:
    path = urlsplit(str(entry.get("uri", ""))).path
    if not path.startswith(FEDERATION):
        return []
    return [unquote(s) for s in path[len(FEDERATION) :].split("/")]


def _walk_start(content: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Where a get_missing_events walk starts and stops: the same two sets asked again
    walk over the same events (a retry), so only the largest limit of them counts."""

    def ids(key: str) -> tuple[str, ...]:
        value = content.get(key)
        return tuple(sorted(str(v) for v in value)) if isinstance(value, list) else ()

    return ids("latest_events"), ids("earliest_events")


def gap_requests(requests: Sequence[Mapping[str, Any]], room_id: str) -> GapRequests:
    """Read the peer's request log for ``room_id``'s gap (pure)."""
    limits: list[int] = []
    walks: dict[tuple[tuple[str, ...], tuple[str, ...]], int] = {}
    fetched: set[str] = set()
    state: list[str] = []
    for entry in requests:
        if entry.get("status") != 200:
            continue
        segments = _segments(entry)
        if len(segments) != 2:
            continue
        endpoint, subject = segments
        if endpoint == "get_missing_events" and subject == room_id:
            content = entry.get("content")
            content = content if isinstance(content, dict) else {}
            limit = content.get("limit")
            limit = limit if isinstance(limit, int) else DEFAULT_MISSING_EVENTS_LIMIT
            start = _walk_start(content)
            if start in walks:
                limits[walks[start]] = max(limits[walks[start]], limit)
            else:
                walks[start] = len(limits)
                limits.append(limit)
        elif endpoint == "event":
            fetched.add(subject)
        elif endpoint in ("state_ids", "state") and subject == room_id:
            state.append(endpoint)
    return GapRequests(tuple(limits), frozenset(fetched), tuple(state))


def judge_gap_fill(
    requests: Sequence[Mapping[str, Any]],
    room_id: str,
    missing: Sequence[str],
    *,
    state_may_fill: bool,
) -> str:
    """Which allowed way the requests show the gap of ``missing`` events being filled:
    ``/event`` for each, ``get_missing_events`` whose limits cover what ``/event`` did
    not, or (when ``state_may_fill``: the test needs only the event after the gap) the
    room's state at the event. The way, for information; CheckFailed when none."""
    seen = gap_requests(requests, room_id)
    left = [e for e in missing if e not in seen.fetched]
    by_event = len(missing) - len(left)
    total_limit = sum(seen.missing_events_limits)
    limits = ", ".join(str(n) for n in seen.missing_events_limits)
    events = f"/event for {by_event} of them" if by_event else ""
    if not left:
        if len(missing) == 1:
            return "the missing event fetched with /event"
        return f"the {len(missing)} events fetched one by one with /event"
    if total_limit >= len(left):
        also = f" and {events}" if events else ""
        return f"get_missing_events (limit {limits}) covering the {len(missing)}-event gap{also}"
    if state_may_fill and seen.state_asked:
        before = f", after get_missing_events (limit {limits}) fell short" if limits else ""
        also = f" and {events}" if events else ""
        return f"/{seen.state_asked[0]} for the state at the event{also}{before}"
    asked = (
        f"get_missing_events limits {limits or 'none'}, /event for {by_event},"
        f" state_ids/state {len(seen.state_asked)} time(s)"
    )
    raise CheckFailed(gap_what(missing), allowed_ways(state_may_fill), asked)


def gap_what(missing: Sequence[str]) -> str:
    """What a failure of :func:`judge_gap_fill` is about."""
    return f"how it filled the gap of {len(missing)} events"


def allowed_ways(state_may_fill: bool) -> str:
    """The ways :func:`judge_gap_fill` accepts, for a failure message."""
    ways = "get_missing_events covering it, /event for each"
    return ways + (", or state_ids (and event)" if state_may_fill else "")
