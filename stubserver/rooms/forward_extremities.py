"""Forward extremities: the room's accepted events that no known event cites as a
prev_event, kept incrementally. :class:`~stubserver.rooms.room.Room`'s tracker.

Spec: Server-Server API "PDUs" (``prev_events`` are "the most recent events in the room
that the homeserver was aware of when it made this event"; room versions 4 and later:
"Must contain less than or equal to 20 events", ``auth_events_prev_events_v4``).

What one accepted event costs here does not grow with the number of extremities or with
the room's history (issue 22 row 4): :meth:`ForwardExtremities.advance` touches the
event and its prev_events only; each extremity is counted on its state's node, so the
distinct states at the extremities (what the current state is resolved from) are known
without a walk, and :meth:`ForwardExtremities.deepest` picks the prev_events of our next
event from a heap by depth, not by sorting every extremity. :attr:`examined` counts the
heap entries looked at, for the tests and ``scripts/soak.py``.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Set

from stubserver.rooms.state_store import StateNode


class ForwardExtremities(Set[str]):
    """The forward extremities of one room (a read-only set of event IDs), with the
    count of extremities standing on each distinct state node (nodes compare by
    identity: an event that changes no state shares its parent's node)."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}  # event ID -> depth
        self._states: Counter[StateNode] = Counter()
        # (-depth, event ID) of every extremity, and of some that no longer are (left
        # behind when an extremity is cited; dropped when they reach the top).
        self._by_depth: list[tuple[int, str]] = []
        #: The distinct states differ from those last taken by :meth:`take_states`.
        self.states_changed = False
        #: Heap entries looked at by :meth:`deepest`, in all (the work it did).
        self.examined = 0

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def are(self, event_ids: Collection[str]) -> bool:
        """True when ``event_ids`` (duplicates aside) are exactly the extremities: the
        size of ``event_ids`` (at most 20 prev_events) bounds the work, not ours."""
        distinct = set(event_ids)
        return len(distinct) == len(self._ids) and all(e in self._ids for e in distinct)

    def advance(
        self,
        event_id: str,
        depth: int,
        prev_event_ids: Iterable[str],
        after: StateNode,
        *,
        cited: Collection[str],
        state_of: dict[str, StateNode],
    ) -> None:
        """The graph gained the accepted event ``event_id`` (state ``after`` it): its
        prev_events stop being extremities, and it becomes one unless a known event
        already cites it (``cited``: events can arrive after their children, e.g. from
        backfill). ``state_of`` gives the state after each extremity."""
        # The event first, then its prevs: a message on a fork tip leaves the distinct
        # states as they were (its node is its prev's), and no count touches zero.
        if event_id not in cited and event_id not in self._ids:
            self._ids[event_id] = depth
            heapq.heappush(self._by_depth, (-depth, event_id))
            self._count(after, +1)
        for prev in prev_event_ids:
            if self._ids.pop(prev, None) is not None:
                self._count(state_of[prev], -1)
        if len(self._by_depth) > 2 * len(self._ids) + 64:
            # Cited extremities left in the heap: rebuilt now and then, so it stays
            # within twice the extremities (amortised over the events that cited them).
            self._by_depth = [(-d, e) for e, d in self._ids.items()]
            heapq.heapify(self._by_depth)

    def deepest(self, limit: int) -> list[str]:
        """The ``limit`` deepest extremities (then by event ID), deepest first. Costs
        ``limit`` heap steps and the stale entries it drops, not a sort of them all."""
        found: list[tuple[int, str]] = []
        heap = self._by_depth
        while heap and len(found) < limit:
            entry = heapq.heappop(heap)
            self.examined += 1
            depth = self._ids.get(entry[1])
            if depth is not None and -depth == entry[0] and (not found or entry != found[-1]):
                found.append(entry)
        for entry in found:
            heapq.heappush(heap, entry)
        return [event_id for _, event_id in found]

    def states(self) -> list[StateNode]:
        """The distinct states at the extremities."""
        return list(self._states)

    def take_states(self) -> list[StateNode] | None:
        """The distinct states at the extremities when they changed since the last call
        (the current state must be resolved again from them), else None."""
        if not self.states_changed:
            return None
        self.states_changed = False
        return self.states()

    def _count(self, node: StateNode, change: int) -> None:
        count = self._states[node] + change
        if count > 0:
            self._states[node] = count
            self.states_changed |= count == change  # a state newly at an extremity
        else:
            del self._states[node]
            self.states_changed = True
