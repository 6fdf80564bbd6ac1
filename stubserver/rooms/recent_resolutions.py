"""The last state resolutions of one room, by the state nodes they resolved (issue 23).

A room resolves the same states twice in a row as a rule: when an event makes a fork,
the new current state is the resolution of the states at the forward extremities; the
next event, citing those extremities as its prev_events, has that same resolution as its
state before. With a hundred servers of one process in a room joined eight at a time,
6,024 of 14,230 resolutions were such repeats (3 of 7 s of CPU).

A resolution is a function of the states (a :class:`StateNode` is immutable) and of the
events their auth chains hold, which a room never changes once it holds them, with one
exception: an event held as an outlier may later be rejected when it joins the graph,
which the resolution reads (``rejected``). A remembered result is therefore used only
while the room has rejected no event since it was computed (the rejected set only
grows, so its size says it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from stubserver.rooms.state_store import StateNode

#: Most resolutions a room remembers (the oldest is forgotten first); each holds its
#: nodes, which the room's graph holds anyway, and the resolved node.
MAX_REMEMBERED_RESOLUTIONS: Final = 16


class RecentResolutions:
    """The resolved node of each of the last :data:`MAX_REMEMBERED_RESOLUTIONS` sets of
    state nodes, with the number of rejected events the room held then."""

    def __init__(self, capacity: int = MAX_REMEMBERED_RESOLUTIONS) -> None:
        self._capacity = capacity
        self._results: dict[frozenset[StateNode], tuple[int, StateNode]] = {}

    def get(self, nodes: Sequence[StateNode], rejected: int) -> StateNode | None:
        """The resolution of ``nodes`` when remembered while the room held ``rejected``
        rejected events, else None."""
        found = self._results.get(frozenset(nodes))
        return found[1] if found is not None and found[0] == rejected else None

    def remember(self, nodes: Sequence[StateNode], rejected: int, resolved: StateNode) -> None:
        """Remember ``resolved`` as the resolution of ``nodes`` (``rejected``: as for
        :meth:`get`), forgetting the oldest beyond the capacity."""
        key = frozenset(nodes)
        self._results.pop(key, None)
        self._results[key] = (rejected, resolved)
        if len(self._results) > self._capacity:
            del self._results[next(iter(self._results))]
