"""What every conformance test gets: the peer, the homeserver and its users, and the
helpers that wait for federation with a deadline and compare with expected-vs-got."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import quote

from stubserver.conformance import forged
from stubserver.conformance.runner import CheckFailed, ConformanceTest, Skipped
from stubserver.signing.keys import ServerSigningKey
from stubserver.testing import Homeserver, HomeserverError, HomeserverUser, Peer, RoomEvent
from stubserver.testing._homeserver import CLIENT_V3, room_events

#: How long a test waits for something to cross federation, in seconds.
FEDERATION_WAIT_SECONDS: Final = 30.0
#: Pause between two polls of the homeserver's client API, in seconds.
POLL_SECONDS: Final = 0.2
#: The peer's users: the one every test uses, and a second (banned in the soft-fail test).
PEER_USER: Final = "conformance"
PEER_USER_2: Final = "conformance-other"

T = TypeVar("T")


#: A per-version test: a function of the context and the room version (a returned string
#: is a note on how it passed).
VersionTest = Callable[["Context", str], "str | None"]


#: One entry of a per-version area: id, spec section, test, and optionally the ids (without
#: ``/vN``) of its positive baselines, taken in the same room version.
AreaEntry = tuple[str, str, VersionTest] | tuple[str, str, VersionTest, tuple[str, ...]]


def _bound(f: VersionTest, version: str) -> Callable[[Context], str | None]:
    """``f`` run in room version ``version``."""

    def run(ctx: Context) -> str | None:
        return f(ctx, version)

    return run


def per_version(
    area: Sequence[AreaEntry], versions: Sequence[str]
) -> list[ConformanceTest[Context]]:
    """One test per (room version, entry of ``area``): id ``name/vN``, in version order;
    an entry's baselines become ``depends_on`` of the same version."""

    return [
        ConformanceTest(
            f"{entry[0]}/v{v}",
            entry[1],
            v,
            _bound(entry[2], v),
            depends_on=tuple(f"{d}/v{v}" for d in (entry[3] if len(entry) > 3 else ())),
        )
        for v in versions
        for entry in area
    ]


def once_in_newest(
    area: Sequence[AreaEntry], versions: Sequence[str]
) -> list[ConformanceTest[Context]]:
    """One test per entry of ``area``, for behaviour the room version does not change:
    run in the newest of ``versions``, id without ``/vN``, ``room_version`` None; an
    entry's baselines are ids of the same kind (none when ``versions`` is empty)."""
    if not versions:
        return []
    return [
        ConformanceTest(
            entry[0],
            entry[1],
            None,
            _bound(entry[2], versions[-1]),
            depends_on=entry[3] if len(entry) > 3 else (),
        )
        for entry in area
    ]


def expect(what: str, expected: Any, got: Any, answer: Any = None) -> None:
    """Fail with ``what: expected X, got Y`` unless they are equal, followed by the
    ``answer`` the value came in when one is given."""
    if expected != got:
        raise CheckFailed(what, expected, got, answer)


def expect_accepted(what: str, event: RoomEvent) -> None:
    """Fail unless the peer accepted ``event``, with the peer's own verdict and reason
    (``rejected: ...``, ``soft_failed: ...``) as what came."""
    if event.outcome != "accepted":
        raise CheckFailed(what, "accepted", f"{event.outcome}: {event.reason}")


@dataclass(frozen=True)
class NotYet:
    """A wait's probe did not find what it waits for; ``seen`` is what it found instead
    (the failure reports the last one)."""

    seen: Any


def wait_until(
    what: str,
    probe: Callable[[], T | NotYet | None],
    timeout: float = FEDERATION_WAIT_SECONDS,
    expected: str = "it",
) -> T:
    """``probe()`` until it is neither None nor :class:`NotYet`; after ``timeout`` s,
    CheckFailed with ``expected`` and the last value a probe saw."""
    deadline = time.monotonic() + timeout
    last: NotYet | None = None
    while True:
        value = probe()
        if isinstance(value, NotYet):
            last = value
        elif value is not None:
            return value
        if time.monotonic() >= deadline:
            got = "nothing" if last is None else f"{last.seen} (the last seen)"
            raise CheckFailed(what, f"{expected} within {timeout:g} s", got)
        time.sleep(POLL_SECONDS)


def membership_is(
    user: HomeserverUser, room_id: str, user_id: str, membership: str
) -> Callable[[], bool | NotYet]:
    """A wait's probe: is ``user_id``'s membership ``membership`` in the room's member
    list as ``user`` (of the homeserver) reads it? NotYet with the one it shows."""

    def probe() -> bool | NotYet:
        now = user.members(room_id).get(user_id)
        return True if now == membership else NotYet(f"membership {now!r}")

    return probe


def visible_event(user: HomeserverUser, room_id: str, event_id: str) -> dict[str, Any] | None:
    """The event as the homeserver's client sees it, or None (404: unknown, rejected,
    soft-failed: clients cannot tell them apart, Client-Server API "GET /event")."""
    try:
        return user.event(room_id, event_id)
    except HomeserverError as e:
        if e.status == 404:
            return None
        raise


def client_call(user: HomeserverUser, method: str, path: str, body: Any = None) -> Any:
    """One client-server API call by ``user`` (``path`` under /_matrix/client/v3)."""
    return user.homeserver.request(
        method, f"{CLIENT_V3}{path}", body, access_token=user.access_token
    ).body


def q(value: str) -> str:
    """A path segment, quoted whole."""
    return quote(value, safe="")


class SyncStream:
    """A ``/sync`` stream of one test: a first sync with a filter no one used before
    (Synapse serves identical initial syncs from a cache), then ``since`` tokens."""

    def __init__(self, user: HomeserverUser) -> None:
        self.user = user
        nonce = f"conformance-{secrets.token_hex(8)}"
        answer = user.sync(filter=json.dumps({"account_data": {"not_types": [nonce]}}))
        self.since = str(answer["next_batch"])

    def wait(
        self,
        what: str,
        probe: Callable[[dict[str, Any]], bool],
        timeout: float = FEDERATION_WAIT_SECONDS,
        seen: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        """Sync until ``probe(answer)`` is true for one answer; on time-out, the failure
        shows ``seen`` of the last answer where it found something."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            remaining = deadline - time.monotonic()
            answer = self.user.sync(
                since=self.since, timeout_ms=max(0, min(5000, int(remaining * 1000)))
            )
            self.since = str(answer["next_batch"])
            if probe(answer):
                return
            found = seen(answer) if seen is not None else None
            last = found if found else last
            if time.monotonic() >= deadline:
                got = f"{last} (the last seen)" if last else "nothing in /sync"
                raise CheckFailed(what, f"within {timeout:g} s", got)


def ephemeral(answer: dict[str, Any], room_id: str) -> dict[str, Any]:
    """``{type: content}`` of a room's ephemeral events in a /sync answer."""
    room = ((answer.get("rooms") or {}).get("join") or {}).get(room_id) or {}
    return {e["type"]: e["content"] for e in (room.get("ephemeral") or {}).get("events") or []}


def invited(answer: dict[str, Any], room_id: str) -> bool:
    """True when a /sync answer lists an invite to ``room_id``."""
    return room_id in ((answer.get("rooms") or {}).get("invite") or {})


@dataclass
class Context:
    """The suite's world: ``peer`` (attached), the homeserver and its ``users``."""

    peer: Peer
    homeserver: Homeserver
    users: Sequence[HomeserverUser]
    server_name: str
    config_path: Path
    ca_files: tuple[Path, ...] = ()
    #: The other servers of the peer's process (its config's ``servers:``, issue 23), for
    #: the tests that need several servers; a test takes its own with :meth:`servers`.
    others: Sequence[Peer] = ()
    _claimed: set[str] = field(default_factory=set)
    _target: forged.Target | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _shared: dict[Any, Any] = field(default_factory=dict)
    _shared_locks: dict[Any, threading.Lock] = field(default_factory=dict)

    @property
    def user(self) -> HomeserverUser:
        """The homeserver's first user."""
        return self.users[0]

    def second_user(self) -> HomeserverUser:
        """The homeserver's second user; Skipped when only one was given."""
        if len(self.users) < 2:
            raise Skipped("needs two users of the homeserver (give --homeserver-token twice)")
        return self.users[1]

    def servers(self, count: int, purpose: str) -> list[Peer]:
        """``count`` of the peer's other servers that no other test of this run has taken,
        taken now for ``purpose`` (never given back: a test may leave them in rooms, and
        the faults it sets are cleared by the test itself). Skipped when the peer's process
        does not serve that many more."""
        with self._lock:
            free = [p for p in self.others if p.server_name not in self._claimed]
            if len(free) < count:
                taken = len(self.others) - len(free)
                raise Skipped(
                    f"{purpose} needs {count} more server name(s) served by the peer's process"
                    f" (its config's `servers:`, README 'Many servers in one process'); it"
                    f" serves {len(self.others)} besides {self.peer.server_name}, {taken}"
                    " taken by other tests"
                )
            chosen = free[:count]
            self._claimed.update(p.server_name for p in chosen)
            return chosen

    def target(self) -> forged.Target:
        """The homeserver's federation target, resolved once."""
        with self._lock:
            if self._target is None:
                files = self.ca_files + self.peer_config_ca_files()
                self._target = forged.resolve(self.server_name, self.config_path, files)
            return self._target

    def shared(self, key: Any, make: Callable[[], T]) -> T:
        """The value ``make()`` gave for ``key`` in this run, made once (by the first test
        that asks; the others wait for it): a room several tests use with fresh users each,
        which spares the homeserver a room creation per test. A ``make`` that failed is
        tried again by the next test."""
        with self._lock:
            lock = self._shared_locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._shared:
                self._shared[key] = make()
            value: T = self._shared[key]
            return value

    def peer_config_ca_files(self) -> tuple[Path, ...]:
        """The CAs the peer's config trusts for federation."""
        from stubserver.config import load_config  # noqa: PLC0415

        return tuple(load_config(self.config_path).federation.ca_files)

    def our_key(self, server_name: str | None = None) -> ServerSigningKey:
        """The peer's signing key (from its config), or that of its process's server
        ``server_name`` (one of :attr:`others`)."""
        from stubserver.config import load_config  # noqa: PLC0415

        config = load_config(self.config_path)
        if server_name is None:
            return config.signing_key
        [server] = [c for c in config.every_server if c.server_name == server_name]
        return server.signing_key

    def raw(
        self,
        method: str,
        path: str,
        *,
        key: ServerSigningKey | None,
        destination: str | None = None,
        origin: str | None = None,
        body: Any = None,
        timeout: float = forged.REQUEST_TIMEOUT_SECONDS,
    ) -> tuple[int, Any]:
        """One request of ours straight to its federation API (``forged``), signed with
        ``key`` (None: unsigned) as ``origin`` (default: the peer's name) for
        ``destination`` (default: its name); status and body."""
        headers = forged.authorization(
            method,
            path,
            origin=origin or self.peer.server_name,
            destination=destination or self.server_name,
            key=key,
            content=body,
        )
        files = self.ca_files + self.peer_config_ca_files()
        return forged.send(
            self.target(),
            forged.tls_context(files),
            method,
            path,
            headers=headers,
            body=body,
            timeout=timeout,
        )

    def raw_bytes(
        self, method: str, path: str, *, key: ServerSigningKey | None
    ) -> tuple[int, str, bytes]:
        """One GET-like request of ours straight to its federation API, signed with ``key``
        (None: unsigned): status, Content-Type and the body's bytes (media answers)."""
        headers = forged.authorization(
            method, path, origin=self.peer.server_name, destination=self.server_name, key=key
        )
        files = self.ca_files + self.peer_config_ca_files()
        return forged.exchange(
            self.target(), forged.tls_context(files), method, path, headers=headers
        )

    def peer_user_id(self, localpart: str = PEER_USER) -> str:
        """A user of the peer."""
        return self.peer.user_id(localpart)

    # -- the flows most tests start with --------------------------------------------------

    def join_homeserver_room(
        self, version: str, *, users: Sequence[str] = (PEER_USER,), preset: str = "public_chat"
    ) -> str:
        """The homeserver's user creates a room of ``version``; the peer's ``users`` join;
        the homeserver lists them joined. The room ID."""
        room_id = self.user.create_room(preset=preset, room_version=version)
        for localpart in users:
            self.peer_joins(room_id, localpart)
        return room_id

    def peer_joins(
        self,
        room_id: str,
        localpart: str = PEER_USER,
        *,
        viewer: HomeserverUser | None = None,
        server: Peer | None = None,
    ) -> str:
        """The user ``localpart`` of our ``server`` (by default the peer) joins ``room_id``
        through the homeserver (its make_join/send_join), once ``viewer`` (by default the
        homeserver's first user) lists it joined. Its user ID."""
        viewer = viewer or self.user
        server = server or self.peer
        server.join(room_id, localpart, via=[self.server_name])
        user_id = server.user_id(localpart)
        wait_until(
            f"{user_id} in the homeserver's member list of {room_id}",
            membership_is(viewer, room_id, user_id, "join"),
            expected="membership 'join'",
        )
        return user_id

    def wait_counted_in_room(self, room_id: str, sender: HomeserverUser | None = None) -> None:
        """A message of ``sender`` (by default the homeserver's first user) in ``room_id``
        reaches us: the marker that its sending side counts us among "the servers in the
        room". Its client listing us joined does not show that (Dendrite 0.13.8 learns a
        room's servers from its roomserver's output stream, after its client API does),
        and an EDU (typing, a receipt, a device list update, presence) sent before goes to
        nobody, never again."""
        marker = (sender or self.user).send_message(room_id, "marker before an EDU")
        self.peer.wait_for_event(room_id, event_id=marker)

    def send_text(self, room_id: str, text: str, **options: Any) -> str:
        """Our user sends an ``m.text`` message (``Peer.send``'s options); its event ID."""
        content = {"msgtype": "m.text", "body": text}
        return self.peer.send(room_id, "m.room.message", content, sender=PEER_USER, **options)

    def wait_visible(self, room_id: str, event_id: str, what: str) -> dict[str, Any]:
        """Wait until the homeserver's client can read ``event_id``."""
        return wait_until(
            f"{what} ({event_id}) through the homeserver's client",
            lambda: visible_event(self.user, room_id, event_id) or NotYet("404 (not readable)"),
            expected="readable",
        )

    def room_events(self, answer: dict[str, Any], room_id: str) -> list[dict[str, Any]]:
        """A room's events in a /sync answer."""
        return room_events(answer, room_id)
