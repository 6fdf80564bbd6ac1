"""Forward extremities: the room's events that no known event cites as a prev_event.

Spec: Server-Server API "PDUs" (``prev_events`` are the sender's forward extremities).
New events are built on these, and an event whose prev_events differ from them is
re-checked against the current state (soft failure). :class:`~stubserver.rooms.room.Room`
keeps its extremities by the rule :func:`add_event` states, in place (``Room._advance``),
with the count of extremities on each distinct state.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from stubserver.rooms.event import Event


def forward_extremities(events: Iterable[Event]) -> frozenset[str]:
    """The IDs of ``events`` that no event among them cites in ``prev_events``."""
    known: set[str] = set()
    cited: set[str] = set()
    for event in events:
        known.add(event.event_id)
        cited.update(event.prev_event_ids)
    return frozenset(known - cited)


def add_event(
    extremities: Collection[str], new_event: Event, *, cited: Collection[str] = frozenset()
) -> frozenset[str]:
    """The forward extremities after ``new_event`` joins the graph: its prev_events stop
    being extremities, and it becomes one unless a known event already cites it (events
    can arrive after their children, e.g. from backfill). ``cited`` holds the IDs known
    events cite as prev_events."""
    result = set(extremities) - set(new_event.prev_event_ids)
    if new_event.event_id not in cited:
        result.add(new_event.event_id)
    return frozenset(result)
