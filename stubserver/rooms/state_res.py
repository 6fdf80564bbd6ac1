"""State resolution v2 (room versions 10, 11) and v2.1 (room version 12, MSC4297).

Spec: ``content/rooms/fragments/v2-state-res.md`` (v10, v11) and ``content/rooms/v12.md``
"State resolution". v2.1 differs in three places, each marked below: the *conflicted
state subgraph* joins the *full conflicted set*, and the first iterative auth checks
start from an empty state map instead of the unconflicted state map.

Every graph walk is iterative (attackers choose the DAG's depth) and bounded by
:data:`MAX_AUTH_CHAIN_EVENTS`; exceeding it raises :class:`AuthChainTooLarge`. An event
the caller cannot supply raises :class:`MissingEvent`, so it can fetch and retry.

Walks that stop early (issue 22 row 4). When the caller gives each event a ``position``
that is larger than those of its auth events (a room adds an event only after its auth
events, so the order it gained them in is one), the walks stop where the history no
longer matters, and a resolution costs what the fork holds, not the room's history:

* the auth difference walks the state sets' auth chains together, latest first, marking
  which sets reach each event, and stops once every event still to visit is reached by
  all of them (everything below is then in every chain: Synapse gets the same from its
  chain cover index);
* the auth chain walks that are intersected with the full conflicted set, or that look
  for paths between conflicted events (v2.1's subgraph), do not go below the earliest
  event they look for: positions fall along every auth path, so no path they need
  passes there.

Without positions (the resolution tests over hand-built graphs), the walks are whole.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from stubserver.rooms.auth_rules import AuthError, auth_types_for_event, check_auth
from stubserver.rooms.event import Event
from stubserver.rooms.power_levels import CREATE_KEY, POWER_LEVELS_KEY, user_power_level
from stubserver.rooms.versions import RoomVersion

StateMap = Mapping[tuple[str, str], str]
EventLookup = Callable[[str], "Event | None"]
Position = Callable[[str], int]

# The most events one auth-chain walk may visit before we give up on the resolution.
MAX_AUTH_CHAIN_EVENTS = 100_000


class StateResolutionError(Exception):
    """State could not be resolved; the subclasses say why."""


class MissingEvent(StateResolutionError):
    """An event needed for resolution is not available (fetch it and retry)."""

    def __init__(self, event_id: str) -> None:
        super().__init__(f"event {event_id} is needed for state resolution but unknown")
        self.event_id = event_id


class AuthChainTooLarge(StateResolutionError):
    """An auth-chain walk passed :data:`MAX_AUTH_CHAIN_EVENTS` events."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"auth chain walk exceeded {limit} events")
        self.limit = limit


def _state_key_of(event: Event) -> tuple[str, str] | None:
    return event.state_tuple() if event.state_key is not None else None


def auth_event_ids(event: Event) -> tuple[str, ...]:
    """The event's auth events, with v12's implied create event (``room_id``) added."""
    return event.auth_event_ids_with_create


@dataclass
class ResolutionWork:
    """What state resolution has cost, counted: ``resolutions`` calls, the
    ``state_sets`` they took, and the distinct ``events_visited`` (looked up)."""

    resolutions: int = 0
    state_sets: int = 0
    events_visited: int = 0


class _Events:
    """Memoised lookups over the caller's ``get_event``, raising :class:`MissingEvent`;
    ``position`` as the module doc says (or None)."""

    def __init__(self, get_event: EventLookup, limit: int, position: Position | None) -> None:
        self._get_event = get_event
        self._cache: dict[str, Event] = {}
        self.limit = limit
        self.position = position

    @property
    def visited(self) -> int:
        """How many distinct events were looked up."""
        return len(self._cache)

    def __getitem__(self, event_id: str) -> Event:
        event = self._cache.get(event_id)
        if event is None:
            event = self._get_event(event_id)
            if event is None:
                raise MissingEvent(event_id)
            self._cache[event_id] = event
        return event

    def auth_chain(self, starts: Iterable[str], *, floor: Collection[str] = ()) -> set[str]:
        """The union of the auth chains of ``starts`` (which are not included unless one
        is an auth event of another). Iterative, bounded. With positions and a ``floor``
        (events), events earlier than the earliest of ``floor`` are left out."""
        lowest = None
        if self.position is not None and floor:
            lowest = min(self.position(e) for e in floor)
        seen: set[str] = set()
        stack = [a for s in starts for a in auth_event_ids(self[s])]
        while stack:
            event_id = stack.pop()
            if event_id in seen:
                continue
            if (
                lowest is not None
                and self.position is not None
                and (self.position(event_id) < lowest)
            ):
                continue
            seen.add(event_id)
            if len(seen) > self.limit:
                raise AuthChainTooLarge(self.limit)
            stack.extend(auth_event_ids(self[event_id]))
        return seen

    def auth_map(self, event: Event) -> dict[tuple[str, str], Event]:
        """The event's auth events keyed by ``(type, state_key)``."""
        result: dict[tuple[str, str], Event] = {}
        for auth_id in auth_event_ids(event):
            auth_event = self[auth_id]
            if auth_event.state_key is not None:
                result[auth_event.state_tuple()] = auth_event
        return result


def split_state(
    state_sets: Sequence[StateMap],
) -> tuple[dict[tuple[str, str], str], set[str]]:
    """The unconflicted state map and the conflicted state set (spec "Definitions")."""
    unconflicted: dict[tuple[str, str], str] = {}
    conflicted: set[str] = set()
    keys = {key for state in state_sets for key in state}
    for key in keys:
        values = [state.get(key) for state in state_sets]
        first = values[0]
        if first is not None and all(v == first for v in values):
            unconflicted[key] = first
        else:
            conflicted.update(v for v in values if v is not None)
    return unconflicted, conflicted


def _auth_difference(state_sets: Sequence[StateMap], events: _Events) -> set[str]:
    if events.position is not None:
        return _auth_difference_by_position(state_sets, events, events.position)
    chains = [events.auth_chain(state.values()) for state in state_sets]
    union: set[str] = set().union(*chains)
    common = set(chains[0]).intersection(*chains[1:])
    return union - common


def _auth_difference_by_position(
    state_sets: Sequence[StateMap], events: _Events, position: Position
) -> set[str]:
    """The auth difference, walking the chains together latest first (module doc): an
    event's mark (which sets reach it) is final when it is taken, since every event that
    cites it comes later; the walk stops when every event still queued is reached by
    all sets."""
    everyone = (1 << len(state_sets)) - 1
    marks: dict[str, int] = {}
    queue: list[tuple[int, str]] = []
    # Queued events not (yet) reached by every set.
    partial = 0

    def reach(event_id: str, mark: int) -> None:
        nonlocal partial
        old = marks.get(event_id)
        if old is None:
            marks[event_id] = mark
            heapq.heappush(queue, (-position(event_id), event_id))
            partial += mark != everyone
        elif old | mark != old:
            marks[event_id] = old | mark
            partial -= old | mark == everyone

    for index, state in enumerate(state_sets):
        for state_id in state.values():
            for auth_id in auth_event_ids(events[state_id]):
                reach(auth_id, 1 << index)
    difference: set[str] = set()
    taken = 0
    while queue and partial:
        _, event_id = heapq.heappop(queue)
        mark = marks[event_id]
        taken += 1
        if taken > events.limit:
            raise AuthChainTooLarge(events.limit)
        if mark != everyone:
            partial -= 1
            difference.add(event_id)
        for auth_id in auth_event_ids(events[event_id]):
            reach(auth_id, mark)
    return difference


def _conflicted_subgraph(conflicted: set[str], events: _Events) -> set[str]:
    """v2.1: the events on auth-event paths between conflicted events, endpoints
    included. Forward from the conflicted set along auth edges, then back along the
    reversed edges from the conflicted set, within what the forward walk reached."""
    below = events.auth_chain(conflicted, floor=conflicted)
    reached = below | conflicted
    children: dict[str, list[str]] = {}
    for event_id in reached:
        for auth_id in auth_event_ids(events[event_id]):
            children.setdefault(auth_id, []).append(event_id)
    on_path: set[str] = set()
    stack = list(conflicted)
    while stack:
        event_id = stack.pop()
        if event_id in on_path:
            continue
        on_path.add(event_id)
        stack.extend(children.get(event_id, ()))
    # on_path: events from which a conflicted event is reachable (or conflicted ones);
    # intersected with those reachable from a conflicted event.
    return (on_path & below) | conflicted


def conflicted_state_subgraph(
    conflicted: Collection[str], get_event: EventLookup, *, limit: int = MAX_AUTH_CHAIN_EVENTS
) -> set[str]:
    """v2.1's *conflicted state subgraph* of ``conflicted`` (spec v12 "Definitions").

    :func:`resolve_state` runs the same walk (``_conflicted_subgraph``) over its own
    event cache; this entry point states the definition on its own, so that its tests
    can check it against the spec's example without a whole resolution."""
    return _conflicted_subgraph(set(conflicted), _Events(get_event, limit, None))


def is_power_event(event: Event) -> bool:
    """Spec "Power events": power levels, join rules, and kicks or bans by another user."""
    if event.state_key is None:
        return False
    if event.type in ("m.room.power_levels", "m.room.join_rules") and event.state_key == "":
        return True
    return (
        event.type == "m.room.member"
        and event.membership in ("leave", "ban")
        and event.sender != event.state_key
    )


def _sender_power(event: Event, events: _Events) -> int:
    """The sender's power level "when looking at their respective auth_events"."""
    return user_power_level(event.sender, events.auth_map(event))


def _reverse_topological_power_order(ids: Collection[str], events: _Events) -> list[str]:
    """Kahn's algorithm over the auth DAG restricted to ``ids``, always taking the
    smallest candidate: greater sender power, then smaller origin_server_ts, then event
    ID. Earliest first."""
    selected = set(ids)
    waiting_on: dict[str, int] = {}
    children: dict[str, list[str]] = {}
    for event_id in selected:
        parents = {a for a in auth_event_ids(events[event_id]) if a in selected}
        waiting_on[event_id] = len(parents)
        for parent in parents:
            children.setdefault(parent, []).append(event_id)

    def key(event_id: str) -> tuple[int, int, str]:
        event = events[event_id]
        return (-_sender_power(event, events), event.origin_server_ts, event_id)

    heap = [key(e) for e, n in waiting_on.items() if n == 0]
    heapq.heapify(heap)
    order: list[str] = []
    while heap:
        event_id = heapq.heappop(heap)[2]
        order.append(event_id)
        for child in children.get(event_id, ()):
            waiting_on[child] -= 1
            if waiting_on[child] == 0:
                heapq.heappush(heap, key(child))
    return order


def _power_levels_parent(event: Event, events: _Events) -> str | None:
    for auth_id in auth_event_ids(event):
        if _state_key_of(events[auth_id]) == POWER_LEVELS_KEY:
            return auth_id
    return None


def _mainline_order(
    ids: Collection[str], power_levels_id: str | None, events: _Events
) -> list[str]:
    """Spec "Mainline ordering" of ``ids`` based on the power levels event
    ``power_levels_id``: larger mainline position first, then origin_server_ts, then ID."""
    mainline: list[str] = []
    current = power_levels_id
    while current is not None:
        mainline.append(current)
        if len(mainline) > events.limit:
            raise AuthChainTooLarge(events.limit)
        current = _power_levels_parent(events[current], events)
    index = {event_id: i for i, event_id in enumerate(mainline)}
    infinity = len(mainline)
    # first_on_mainline[p]: the mainline index of the first mainline event at or after
    # power levels event p on its chain; memoised so every chain is walked once.
    first_on_mainline: dict[str, int] = {}

    def position(event: Event) -> int:
        path: list[str] = []
        node = _power_levels_parent(event, events)
        value = infinity
        while node is not None:
            if node in index:
                value = index[node]
                break
            if node in first_on_mainline:
                value = first_on_mainline[node]
                break
            path.append(node)
            if len(path) > events.limit:
                raise AuthChainTooLarge(events.limit)
            node = _power_levels_parent(events[node], events)
        for visited in path:
            first_on_mainline[visited] = value
        return value

    def key(event_id: str) -> tuple[int, int, str]:
        event = events[event_id]
        return (-position(event), event.origin_server_ts, event_id)

    return sorted(ids, key=key)


def _iterative_auth_checks(
    initial: StateMap,
    ordered: Sequence[str],
    events: _Events,
    rejected: Collection[str],
) -> dict[tuple[str, str], str]:
    """Spec "Iterative auth checks": apply each event that passes the auth rules against
    the state so far, falling back to its own (non-rejected) auth events for keys the
    state lacks."""
    state = dict(initial)
    for event_id in ordered:
        event = events[event_id]
        if event.state_key is None:
            continue
        auth_state = {
            key: e for key, e in events.auth_map(event).items() if e.event_id not in rejected
        }
        wanted = auth_types_for_event(
            event.room_version, event.type, event.state_key, event.sender, event.content
        ) | {CREATE_KEY}
        for key in wanted:
            if key in state:
                auth_state[key] = events[state[key]]
        try:
            check_auth(event, auth_state)
        except AuthError:
            continue
        state[event.state_tuple()] = event_id
    return state


def resolve_state(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    get_event: EventLookup,
    *,
    rejected: Collection[str] = frozenset(),
    limit: int = MAX_AUTH_CHAIN_EVENTS,
    position: Position | None = None,
    work: ResolutionWork | None = None,
) -> dict[tuple[str, str], str]:
    """Resolve ``state_sets`` (``(type, state_key) -> event ID``) into one state map.

    ``get_event`` supplies events by ID (``None`` if unknown: :class:`MissingEvent`);
    ``rejected`` names events rejected against their auth chain, which iterative auth
    checks must not fall back on; ``position`` lets the walks stop early (module doc);
    ``work`` counts the cost. Raises :class:`StateResolutionError`.
    """
    if work is not None:
        work.resolutions += 1
        work.state_sets += len(state_sets)
    if not state_sets:
        return {}
    unconflicted, conflicted = split_state(state_sets)
    if not conflicted:
        return unconflicted
    events = _Events(get_event, limit, position)
    try:
        return _resolve_conflicts(
            room_version,
            state_sets=state_sets,
            unconflicted=unconflicted,
            conflicted=conflicted,
            events=events,
            rejected=rejected,
        )
    finally:
        if work is not None:
            work.events_visited += events.visited


def _resolve_conflicts(
    room_version: RoomVersion,
    *,
    state_sets: Sequence[StateMap],
    unconflicted: dict[tuple[str, str], str],
    conflicted: set[str],
    events: _Events,
    rejected: Collection[str],
) -> dict[tuple[str, str], str]:
    full_conflicted = conflicted | _auth_difference(state_sets, events)
    v21 = room_version.state_resolution == "v2.1"
    if v21:
        # v2.1: the conflicted state subgraph is part of the full conflicted set.
        full_conflicted |= _conflicted_subgraph(conflicted, events)
    power = {e for e in full_conflicted if is_power_event(events[e])}
    power |= events.auth_chain(power, floor=full_conflicted) & full_conflicted
    power_order = _reverse_topological_power_order(power, events)
    # v2.1 starts the first iterative auth checks from an empty state map.
    partial = _iterative_auth_checks({} if v21 else unconflicted, power_order, events, rejected)
    remaining = full_conflicted - power
    others = _mainline_order(remaining, partial.get(POWER_LEVELS_KEY), events)
    resolved = _iterative_auth_checks(partial, others, events, rejected)
    resolved.update(unconflicted)
    return resolved
