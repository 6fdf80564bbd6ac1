"""One room's event graph in memory: events with their outcome, the state after each,
forward extremities, current state, and the read answers other servers ask for.

Spec: Server-Server API "Checks performed on receipt of a PDU" (steps 4-6: auth against
the auth events → reject; against the state before the event → reject; against the
current state → soft fail), "Soft failure", and the ``backfill``, ``get_missing_events``,
``state_ids`` and ``event_auth`` endpoints; rooms.md 1.2 and 1.10 for Synapse's answers.

Pure and synchronous: the caller has already checked each event's format and signatures
(``stubserver.rooms.format``, ``stubserver.rooms.signing``) and fetches what we lack
(:class:`MissingEvents` says what). Every graph walk is iterative and bounded by a named
constant. State maps share structure (``stubserver.rooms.state_store``).

Forward extremities and state resolution (issue 22): the current state is kept
incrementally, as Synapse's event persister keeps it. The extremities are tracked by
:class:`~stubserver.rooms.forward_extremities.ForwardExtremities`: each counted on its
state's node; identical states are one; state resolution runs only when the distinct
states at the extremities change, so an accepted event costs the same in a room with
2,000 extremities on one state as in a linear one (``resolution_work`` and the
tracker's ``examined`` count it). The last resolutions are remembered (an event citing
the extremities has as its state before the resolution just made for them:
:mod:`stubserver.rooms.recent_resolutions`). Every event we build cites the 10 deepest extremities
(Synapse's count for its own events), so each of our sends merges up to 10 forks; the
extremities are capped by dummy events (:mod:`stubserver.rooms.dummy_events`, as
Synapse's ``_send_dummy_events_to_fill_extremities``). We do not drop "stuck"
extremities after a resolution as Synapse's event persister may (``_prune_extremities``:
remote ones, more than a day old and 100 deep behind, or 20 behind from the sender's
own server, when the resolved state is one extremity's): the dummy events merge them
instead, and no event of the graph is forgotten.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Final, Literal

from stubserver.rooms.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth,
    check_auth_events_selection,
)
from stubserver.rooms.event import Event
from stubserver.rooms.forward_extremities import ForwardExtremities
from stubserver.rooms.power_levels import CREATE_KEY, may_redact_others
from stubserver.rooms.recent_resolutions import RecentResolutions
from stubserver.rooms.state_res import (
    ResolutionWork,
    StateResolutionError,
    auth_event_ids,
    resolve_state,
)
from stubserver.rooms.state_store import EMPTY_STATE, StateKey, StateNode
from stubserver.rooms.versions import RoomVersion

Outcome = Literal["accepted", "rejected", "soft_failed"]

#: Most accepted and soft-failed events one room holds; past it :class:`RoomFull` is
#: raised. Rejected events do not count (issue 22 row 8: a non-member's rejected events
#: filled the room until our own sends failed).
MAX_EVENTS_PER_ROOM: Final = 100_000
#: Most rejected events one room keeps a record of; past it a rejected event is not kept
#: (:class:`RoomFull`: the ``/send`` answer is ``{}`` all the same). Each record holds
#: no content (:func:`rejected_stub`), so this bounds them at a few hundred bytes each.
MAX_REJECTED_PER_ROOM: Final = 100_000
#: The PDU keys a rejected event from another server keeps (:func:`rejected_stub`): what
#: the control API's ``events`` shows beside ``outcome`` and ``reason``, and the graph
#: links (each a list of at most 20 or 10 IDs) that backfill and get_missing_events walk
#: through. Never ``content``, ``hashes``, ``signatures`` or anything else.
REJECTED_KEPT_KEYS: Final = (
    "type",
    "sender",
    "room_id",
    "state_key",
    "depth",
    "prev_events",
    "auth_events",
    "origin_server_ts",
)

#: Our own events cite at most this many forward extremities, the deepest: Synapse's
#: choice (``get_prev_events_for_room`` takes the 10 newest), so that each event we send
#: merges up to 10 forks back into one.
PREV_EVENTS_FOR_NEW_EVENT: Final = 10

MEMBER = "m.room.member"
REDACTION = "m.room.redaction"


class RoomError(Exception):
    """An event cannot be added to this room; the subclasses say why."""


class WrongRoom(RoomError):
    """The event belongs to another room."""


class RoomFull(RoomError):
    """The room holds :data:`MAX_EVENTS_PER_ROOM` events already."""


def rejected_stub(event: Event) -> Event:
    """What a room keeps of a rejected event from another server: the same event ID and
    room, a PDU of :data:`REJECTED_KEPT_KEYS` only (issue 22 row 2: 50 rejected PDUs of
    63 KB took 3-4 MB each; Synapse keeps rejected events whole, in its database)."""
    pdu = {k: event.pdu[k] for k in REJECTED_KEPT_KEYS if k in event.pdu}
    return Event(
        event_id=event.event_id, room_version=event.room_version, pdu=pdu, room_id=event.room_id
    )


class MissingEvents(RoomError):
    """Events the check needs are unknown: fetch them (``kind`` says which endpoint helps:
    ``"prev"`` → get_missing_events / state_ids, ``"auth"`` → event_auth) and retry."""

    def __init__(self, kind: Literal["prev", "auth"], event_ids: Sequence[str]) -> None:
        super().__init__(f"unknown {kind} events: {', '.join(event_ids)}")
        self.kind = kind
        self.event_ids = tuple(event_ids)


@dataclass(frozen=True)
class EventRecord:
    """An event the room gained, with the outcome of its checks.

    ``position`` is its index in :meth:`Room.events_since` order; ``origin`` the server it
    came from (ours for our own); ``received_ts`` the ``now`` it was added at (ms);
    ``outlier`` marks events known only as state or auth chain (send_join's answer),
    which are not part of the graph walks.
    """

    event: Event
    outcome: Outcome
    reason: str | None
    position: int
    origin: str | None
    received_ts: int
    outlier: bool = False

    @property
    def event_id(self) -> str:
        return self.event.event_id


class Room:
    """One room's events and state. Create it with its create event (:meth:`add_event`
    checks it like any other) or from a join answer (:meth:`add_outlier` first).

    ``local_server`` is our server name: rejected events of any other origin are kept as
    :func:`rejected_stub` (ours stay whole: the control API sends them on purpose).
    ``max_events`` and ``max_rejected`` bound the events kept (the module's constants).
    """

    def __init__(
        self,
        room_id: str,
        room_version: RoomVersion,
        *,
        local_server: str | None = None,
        max_events: int = MAX_EVENTS_PER_ROOM,
        max_rejected: int = MAX_REJECTED_PER_ROOM,
    ) -> None:
        self.room_id = room_id
        self.room_version = room_version
        self.local_server = local_server
        self.max_events = max_events
        self.max_rejected = max_rejected
        self._records: dict[str, EventRecord] = {}
        self._timeline: list[EventRecord] = []
        self._state_after: dict[str, StateNode] = {}
        # Only where it differs from the state after (accepted state events).
        self._state_before: dict[str, StateNode] = {}
        self._cited: set[str] = set()
        # The users of each server the room holds a member event of (any outcome).
        self._users_of: dict[str, set[str]] = {}
        # Accepted redactions by target: (the redaction's sender, whether that sender had
        # the redact level in the state before it). The target may come later.
        self._redactions: dict[str, list[tuple[str, bool]]] = {}
        self._rejected: set[str] = set()
        self._extremities = ForwardExtremities()
        self._current = EMPTY_STATE
        #: What state resolution has cost this room, counted.
        self.resolution_work = ResolutionWork()
        # The same states are resolved twice in a row as a rule (the module's doc).
        self._recent_resolutions = RecentResolutions()
        self._listeners: list[Callable[[EventRecord], None]] = []
        # The current state's memberships and joined users per server, kept as the
        # current state moves (``_track_members``): reads never materialise the state.
        self._members_of: StateNode = EMPTY_STATE
        self._members: dict[str, str] = {}
        self._joined: Counter[str] = Counter()

    def add_listener(self, listener: Callable[[EventRecord], None]) -> None:
        """Call ``listener(record)`` after every event the room gains (outliers included):
        how the control API's long-polls learn of new events."""
        self._listeners.append(listener)

    # --- reading -----------------------------------------------------------------------

    def get_event(self, event_id: str) -> Event | None:
        """The event, whatever its outcome, or None."""
        record = self._records.get(event_id)
        return None if record is None else record.event

    def record(self, event_id: str) -> EventRecord | None:
        """The event's record (outcome, reason, position), or None."""
        return self._records.get(event_id)

    def __len__(self) -> int:
        return len(self._timeline)

    def events_since(self, position: int) -> list[EventRecord]:
        """Every event gained at ``position`` or later, in order (control API ``from=N``)."""
        return self._timeline[max(position, 0) :]

    @property
    def forward_extremities(self) -> Set[str]:
        """Accepted events no accepted event cites (soft-failed events never become one);
        a live read-only view."""
        return self._extremities

    @property
    def extremity_tracker(self) -> ForwardExtremities:
        """The same extremities with their tracker's reads (``deepest``, ``examined``)."""
        return self._extremities

    def prev_events_for_new_event(self, limit: int = PREV_EVENTS_FOR_NEW_EVENT) -> list[Event]:
        """The prev_events of an event we build: the deepest ``limit`` forward
        extremities (then by event ID)."""
        return [self._records[e].event for e in self._extremities.deepest(limit)]

    @property
    def current_state(self) -> dict[StateKey, str]:
        """The current state map ``{(type, state_key): event_id}`` (a fresh copy)."""
        return self._current.materialise()

    def current_state_id(self, key: StateKey) -> str | None:
        """The current state's event ID at ``key``."""
        return self._current.get(key)

    def state_at(self, event_id: str) -> dict[StateKey, str]:
        """The state after ``event_id`` (a rejected event's is the state before it).
        Raise KeyError for an event we have no state for (unknown or outlier)."""
        return self._state_after[event_id].materialise()

    def state_before(self, event_id: str) -> dict[StateKey, str]:
        """The state before ``event_id``: the state after it without the event itself
        (as ``/state_ids`` answers). Raise KeyError as :meth:`state_at`."""
        node = self._state_before.get(event_id)
        return node.materialise() if node is not None else self.state_at(event_id)

    def state_from_prev_events(self, event: Event) -> dict[StateKey, str]:
        """The state before ``event`` (not added yet) as its known prev_events give it:
        the state :meth:`add_event` checks it against."""
        return self._state_before_node(event).materialise()

    def state_after_events(self, event_ids: Sequence[str]) -> dict[StateKey, str]:
        """The state before an event citing ``event_ids`` (those we hold as graph events):
        their states resolved (an event we build on a planted one, which we do not hold,
        is added with the state its prev_events give)."""
        return self._state_from_ids(event_ids).materialise()

    def state_at_key(self, event_id: str, key: StateKey) -> str | None:
        """The event ID at ``key`` in the state after ``event_id`` (see
        :meth:`state_at`), without materialising that state. Raise KeyError as it."""
        return self._state_after[event_id].get(key)

    def server_memberships_at(self, event_id: str, server: str) -> list[str]:
        """The memberships of ``server``'s users in the state after ``event_id``, read
        key by key for the users of that server the room has member events of (not the
        whole state). Raise KeyError as :meth:`state_at`."""
        node = self._state_after[event_id]
        result = []
        for user_id in self._users_of.get(server, ()):
            member_id = node.get((MEMBER, user_id))
            if member_id is not None:
                membership = self._records[member_id].event.membership
                if membership is not None:
                    result.append(membership)
        return result

    def is_redacted(self, event_id: str) -> bool:
        """True when an accepted redaction takes effect on ``event_id`` (spec "Handling
        redactions", room versions 3 and later): one whose sender had the redact level,
        or was on the target's sender's server (Synapse applies the second case when it
        reads the event, as here)."""
        redactions = self._redactions.get(event_id)
        record = self._records.get(event_id)
        if not redactions or record is None:
            return False
        server = record.event.sender.partition(":")[2]
        return any(powered or sender.partition(":")[2] == server for sender, powered in redactions)

    @property
    def members(self) -> dict[str, str]:
        """``{user_id: membership}`` from the current state (a fresh copy)."""
        return dict(self._members)

    @property
    def servers(self) -> list[str]:
        """The servers with a joined member, sorted."""
        return sorted(server for server, joined in self._joined.items() if joined > 0)

    def is_server_in_room(self, server_name: str) -> bool:
        """True when a user of ``server_name`` is joined (the read endpoints' check)."""
        return self._joined[server_name] > 0

    def has_state_at(self, event_id: str) -> bool:
        """True for a graph event (one we hold the state at; not an outlier)."""
        return event_id in self._state_after

    def missing_prev_events(self, event: Event) -> list[str]:
        """The event's prev_events we do not have as graph events."""
        return [p for p in event.prev_event_ids if p not in self._state_after]

    def missing_auth_events(self, event: Event) -> list[str]:
        """The event's auth events (v12: with the implied create event) we lack."""
        return [a for a in auth_event_ids(event) if a not in self._records]

    def check_against_current_state(self, event: Event) -> str | None:
        """Why ``event`` (built, not added) would fail the rules against the current
        state, or None (make_join / make_leave ask this before answering)."""
        try:
            check_auth(event, self._auth_state_from(event, self._current))
        except AuthError as e:
            return e.reason
        return None

    # --- adding ------------------------------------------------------------------------

    def add_event(
        self,
        event: Event,
        now: int,
        *,
        origin: str | None = None,
        state_before: Mapping[StateKey, str] | None = None,
    ) -> EventRecord:
        """Check ``event`` as on receipt and add it to the graph; its record.

        Order (spec "Checks performed on receipt of a PDU"): the auth events selection
        and the rules against the event's auth events (rejected); against the state
        before it, from its prev_events or ``state_before`` when the caller got that from
        ``/state_ids`` (rejected); against the current state when its prev_events are
        not the forward extremities (soft-failed). An event seen before returns its
        first record. Raise :class:`MissingEvents`, :class:`WrongRoom`, :class:`RoomFull`.
        """
        known = self._records.get(event.event_id)
        if known is not None and not known.outlier:
            return known
        self._check_addable(event)
        missing_auth = self.missing_auth_events(event)
        if missing_auth:
            raise MissingEvents("auth", missing_auth)
        missing_prev = self.missing_prev_events(event)
        if missing_prev and state_before is None:
            raise MissingEvents("prev", missing_prev)
        if state_before is not None:
            before = EMPTY_STATE.with_changes(dict(state_before))
        else:
            before = self._state_before_node(event)
        outcome, reason = self._check(event, before)
        self._check_room_for(outcome)
        after = before
        if outcome != "rejected" and event.is_state:
            after = before.with_changes({event.state_tuple(): event.event_id})
            self._state_before[event.event_id] = before
        self._state_after[event.event_id] = after
        record = self._append(event, outcome, reason, origin, now, outlier=False)
        if outcome == "rejected":
            self._rejected.add(event.event_id)
        else:
            self._cited.update(event.prev_event_ids)
        if outcome == "accepted":
            self._advance(event, after)
            if event.type == REDACTION and event.redacts is not None:
                powered = may_redact_others(event, self._auth_state_from(event, before))
                self._redactions.setdefault(event.redacts, []).append((event.sender, powered))
        return record

    def add_outlier(self, event: Event, now: int, *, origin: str | None = None) -> EventRecord:
        """Add an event known only as state or auth chain (send_join's answer, fetched
        auth events): checked against its auth events only, not part of the graph.
        Raise :class:`MissingEvents` (``"auth"``) when its auth events are unknown."""
        known = self._records.get(event.event_id)
        if known is not None:
            return known
        self._check_addable(event)
        missing = self.missing_auth_events(event)
        if missing:
            raise MissingEvents("auth", missing)
        reason = self._auth_events_failure(event)
        outcome: Outcome = "accepted" if reason is None else "rejected"
        self._check_room_for(outcome)
        if reason is not None:
            self._rejected.add(event.event_id)
        return self._append(event, outcome, reason, origin, now, outlier=True)

    def _check_addable(self, event: Event) -> None:
        if event.room_id != self.room_id:
            raise WrongRoom(f"{event.event_id} is in {event.room_id}, not {self.room_id}")
        if len(self._rejected) >= self.max_rejected and self._kept() >= self.max_events:
            raise RoomFull(f"room {self.room_id} holds {self.max_events} events")

    def _kept(self) -> int:
        """The events counted toward :attr:`max_events`: every one but the rejected."""
        return len(self._timeline) - len(self._rejected)

    def _check_room_for(self, outcome: Outcome) -> None:
        """Raise :class:`RoomFull` when the cap of ``outcome``'s kind is reached."""
        if outcome == "rejected":
            if len(self._rejected) >= self.max_rejected:
                raise RoomFull(f"room {self.room_id} keeps {self.max_rejected} rejected events")
        elif self._kept() >= self.max_events:
            raise RoomFull(f"room {self.room_id} holds {self.max_events} events")

    def _append(
        self,
        event: Event,
        outcome: Outcome,
        reason: str | None,
        origin: str | None,
        now: int,
        *,
        outlier: bool,
    ) -> EventRecord:
        # Checked: what was derived to check it is not kept for the life of the room.
        event.derived.release()
        if outcome == "rejected" and (origin is None or origin != self.local_server):
            event = rejected_stub(event)
        record = EventRecord(event, outcome, reason, len(self._timeline), origin, now, outlier)
        self._records[event.event_id] = record
        self._timeline.append(record)
        if event.type == MEMBER and event.state_key is not None:
            server = event.state_key.partition(":")[2]
            self._users_of.setdefault(server, set()).add(event.state_key)
        for listener in self._listeners:
            listener(record)
        return record

    def _auth_events_failure(self, event: Event) -> str | None:
        """Why the event fails against its own auth events, or None."""
        return self._auth_events_check(event)[0]

    def _auth_events_check(self, event: Event) -> tuple[str | None, dict[StateKey, Event]]:
        """Why the event fails against its own auth events, or None; and those auth
        events by state key (what the rules were given)."""
        ids = auth_event_ids(event)
        for auth_id in ids:
            if auth_id in self._rejected:
                return f"auth event {auth_id} was rejected", {}
        auth_map = self._auth_map(ids)
        try:
            check_auth_events_selection(
                event, [self._records[a].event for a in event.auth_event_ids]
            )
            check_auth(event, auth_map)
        except AuthError as e:
            return e.reason, auth_map
        return None, auth_map

    def _auth_map(self, event_ids: Iterable[str]) -> dict[StateKey, Event]:
        result: dict[StateKey, Event] = {}
        for event_id in event_ids:
            auth_event = self._records[event_id].event
            if auth_event.state_key is not None:
                result[auth_event.state_tuple()] = auth_event
        return result

    def _auth_state_from(self, event: Event, state: StateNode) -> dict[StateKey, Event]:
        """The entries of ``state`` the rules read for ``event`` (its selection and the
        create event), as events: no full-state copy."""
        keys = auth_types_for_event(
            event.room_version, event.type, event.state_key, event.sender, event.content
        ) | {CREATE_KEY}
        ids = [i for i in (state.get(k) for k in keys) if i is not None and i in self._records]
        return self._auth_map(ids)

    def _check(self, event: Event, before: StateNode) -> tuple[Outcome, str | None]:
        reason, auth_map = self._auth_events_check(event)
        if reason is not None:
            return "rejected", reason
        before_map = self._auth_state_from(event, before)
        # The rules are a function of the event and the entries they are given: when the
        # state before the event holds exactly its auth events (the usual case: a message
        # citing the create event, the power levels and its sender's membership), the
        # check against it is the check just passed, not run twice (issue 22).
        if before_map != auth_map:
            try:
                check_auth(event, before_map)
            except AuthError as e:
                return "rejected", f"{e.reason} (against the state before the event)"
        # Soft failure needs a current state: the first graph event of a room joined
        # from a send_join answer (outliers only so far) has none to fail against.
        if not self._extremities or self._extremities.are(event.prev_event_ids):
            return "accepted", None
        try:
            check_auth(event, self._auth_state_from(event, self._current))
        except AuthError as e:
            return "soft_failed", f"{e.reason} (against the current state)"
        return "accepted", None

    def _state_before_node(self, event: Event) -> StateNode:
        return self._state_from_ids(event.prev_event_ids)

    def _state_from_ids(self, prev_event_ids: Sequence[str]) -> StateNode:
        prevs = [p for p in dict.fromkeys(prev_event_ids) if p in self._state_after]
        nodes = list({id(n): n for n in (self._state_after[p] for p in prevs)}.values())
        return self._resolve(nodes)

    def _resolve(self, nodes: Sequence[StateNode]) -> StateNode:
        if not nodes:
            return EMPTY_STATE
        if len(nodes) == 1:
            return nodes[0]
        remembered = self._recent_resolutions.get(nodes, len(self._rejected))
        if remembered is not None:
            return remembered
        try:
            resolved = resolve_state(
                self.room_version,
                [n.materialise() for n in nodes],
                self.get_event,
                rejected=self._rejected,
                position=self._position,
                work=self.resolution_work,
            )
        except StateResolutionError as e:
            raise RoomError(f"state resolution failed: {e}") from e
        base = max(nodes, key=lambda n: n.size)
        node = base.with_changes(base.diff_to(resolved))
        self._recent_resolutions.remember(nodes, len(self._rejected), node)
        return node

    def _position(self, event_id: str) -> int:
        """The order the event was gained in: later than each of its auth events (an
        event is added only once they are held), as state resolution's walks need."""
        return self._records[event_id].position

    def _advance(self, event: Event, after: StateNode) -> None:
        """Move the forward extremities and the current state on past ``event``.

        Incremental, as Synapse's event persister is: the extremities change by the
        event's prev_events and the event itself, each extremity counted on its state's
        node, so the cost is that of the event's prev_events, not of the number of
        extremities or of the room's history. State resolution runs only when the
        distinct states at the extremities change (identical states are one: Synapse
        compares state groups the same way); one distinct state is the current state.
        """
        self._extremities.advance(
            event.event_id,
            event.depth,
            event.prev_event_ids,
            after,
            cited=self._cited,
            state_of=self._state_after,
        )
        states = self._extremities.take_states()
        if states is not None:
            self._current = self._resolve(states)
        self._track_members()

    def _track_members(self) -> None:
        """Bring the membership tables to the current state: from the one delta a state
        event adds when the current state follows on from the last one, else (a state
        resolution, a snapshot) from the whole state."""
        current, known = self._current, self._members_of
        if current is known:
            return
        if current.parent is known:
            changes: Mapping[StateKey, str | None] = current.delta
        else:
            self._members = {}
            self._joined = Counter()
            changes = current.materialise()
        for (event_type, state_key), event_id in changes.items():
            if event_type == MEMBER:
                self._set_membership(state_key, event_id)
        self._members_of = current

    def _set_membership(self, user_id: str, event_id: str | None) -> None:
        server = user_id.partition(":")[2]
        if self._members.get(user_id) == "join":
            self._joined[server] -= 1
        membership = None if event_id is None else self._records[event_id].event.membership
        if membership is None:
            self._members.pop(user_id, None)
            return
        self._members[user_id] = membership
        if membership == "join":
            self._joined[server] += 1
