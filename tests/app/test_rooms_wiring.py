"""How ``run`` composes rooms and the control listener (with a fake room service), and
the verify-key lookup handed to the room routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock, LoopingCall

from stubserver.app.rooms_wiring import RoomParts, key_valid_for, verify_key_lookup
from stubserver.app.run import compose
from stubserver.app.site import CONTROL_HANDLER_DEADLINE_SECONDS
from stubserver.config import Config, ListenerConfig
from stubserver.discovery.resolution import Target
from stubserver.rooms.dummy_events import DUMMY_EVENTS_INTERVAL_S
from stubserver.rooms.event import Event
from stubserver.rooms.pdu_keys import verifier_for
from stubserver.rooms.transaction import SignatureFailure
from stubserver.rooms.versions import ROOM_VERSIONS
from stubserver.server_keys.fetcher import ServerKeys
from stubserver.server_keys.refetch_limit import REFETCH_INTERVAL_SECONDS, RefetchLimit
from stubserver.signing.keys import ServerSigningKey
from tests.control.fakes import FakeRoomControl
from tests.support import FakeReactor, result_now, stub_treq

KEY = ServerSigningKey.generate("a_wire")
OTHER = ServerSigningKey.generate("a_old")
FEDERATION = ListenerConfig(8448, ("127.0.0.1",), frozenset({"federation"}), Path("c"), Path("k"))
CONTROL = ListenerConfig(8009, ("127.0.0.1",), frozenset({"control"}), None, None)
STATE_IDS = "https://a.test/_matrix/federation/v1/state_ids/!r:a.test?event_id=$e"


def config(*listeners: ListenerConfig) -> Config:
    return Config(
        server_name="a.test",
        signing_keys=(KEY,),
        listeners=listeners,
        control_token="tok",
        default_room_version="11",
    )


def sites(cfg: Config) -> tuple[Any, list[RoomParts], FakeRoomControl]:
    """The listener sites of ``cfg`` with the room service replaced by a fake."""
    reactor = FakeReactor()
    built: list[RoomParts] = []
    fake = FakeRoomControl()

    def factory(parts: RoomParts) -> FakeRoomControl:
        built.append(parts)
        return fake

    return compose(cfg, reactor, service_factory=factory).sites, built, fake


def status_of(stub: Any, url: str, **kwargs: Any) -> tuple[int, Any]:
    response = result_now(stub.get(url, **kwargs))
    return response.code, result_now(stub.json_content(response))


def test_a_control_listener_serves_the_control_api_over_the_room_service() -> None:
    """The control listener answers /_stubserver/v1/status from the room service, with the
    token, and the service is built from our name, key and default room version."""
    (_, control_site), built, fake = sites(config(FEDERATION, CONTROL))
    fake.answers["status"] = {"server_name": "a.test", "room_versions": [], "rooms": []}
    stub = stub_treq(control_site.router)
    assert status_of(
        stub, "http://127.0.0.1/_stubserver/v1/status", headers={"Authorization": "Bearer tok"}
    ) == (200, fake.answers["status"])
    (parts,) = built
    assert (parts.server_name, parts.signer.key_id, parts.default_room_version) == (
        "a.test",
        KEY.key_id,
        "11",
    )
    assert control_site.router._deadline == CONTROL_HANDLER_DEADLINE_SECONDS
    # Federation paths are not served on the control listener.
    assert status_of(stub, "http://127.0.0.1/_matrix/federation/v1/version")[0] == 404


def test_federation_listeners_gain_room_routes_and_feed_the_requests_endpoint() -> None:
    """With a control listener, a room endpoint on the federation listener needs X-Matrix
    (401, not 404) and that request shows in GET /requests of the control API."""
    (fed_site, control_site), _, _ = sites(config(FEDERATION, CONTROL))
    status, body = status_of(stub_treq(fed_site.router), STATE_IDS)
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
    _, feed = status_of(
        stub_treq(control_site.router),
        "http://127.0.0.1/_stubserver/v1/requests",
        headers={"Authorization": "Bearer tok"},
    )
    (entry,) = feed["requests"]
    assert (entry["uri"], entry["status"], entry["authenticated"]) == (
        "/_matrix/federation/v1/state_ids/!r:a.test?event_id=$e",
        401,
        False,
    )


def test_without_a_control_listener_no_rooms_are_served() -> None:
    """Without a control listener no room service is built and room paths stay 404."""
    (fed_site,), built, _ = sites(config(FEDERATION))
    assert built == []
    status, body = status_of(stub_treq(fed_site.router), STATE_IDS)
    assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")


def test_the_control_listener_sets_profiles_and_puts_media_the_federation_listener_serves() -> None:
    """With a control listener, a profile set through it lands in the table the profile
    route answers from, and the media download is a federation route (401 unsigned,
    not 404) over the store the control API fills."""
    reactor = FakeReactor()
    composed = compose(
        config(FEDERATION, CONTROL), reactor, service_factory=lambda parts: FakeRoomControl()
    )
    fed_site, control_site = composed.sites
    control = stub_treq(control_site.router)
    auth = {"Authorization": "Bearer tok"}
    response = result_now(
        control.put(
            "http://127.0.0.1/_stubserver/v1/users/bob/profile",
            data=b'{"displayname": "Bob"}',
            headers=auth,
        )
    )
    assert response.code == 200
    assert composed.extensions.profiles["bob"].displayname == "Bob"
    response = result_now(
        control.put(
            "http://127.0.0.1/_stubserver/v1/media/abc",
            data=b'{"content_type": "text/plain", "data": "aGk="}',
            headers=auth,
        )
    )
    assert result_now(control.json_content(response)) == {"content_uri": "mxc://a.test/abc"}
    status, body = status_of(
        stub_treq(fed_site.router), "https://a.test/_matrix/federation/v1/media/download/abc"
    )
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")


# --- verify keys ----------------------------------------------------------------------------


def keys(valid_until_ts: int, old_expired_ts: int = 0) -> ServerKeys:
    return ServerKeys(
        "b.test",
        {KEY.key_id: KEY.key.verify_key},
        {OTHER.key_id: (OTHER.key.verify_key, old_expired_ts)},
        valid_until_ts,
        b"{}",
        Target("b.test", 8448, (), "b.test", "b.test", "default_port"),
    )


def test_a_key_counts_while_valid() -> None:
    """A current key counts until valid_until_ts, an old one until it expired."""
    assert key_valid_for(keys(100), KEY.key_id, 100) == KEY.key.verify_key
    assert key_valid_for(keys(100), KEY.key_id, 101) is None
    assert key_valid_for(keys(0, 50), OTHER.key_id, 50) == OTHER.key.verify_key
    assert key_valid_for(keys(0, 50), OTHER.key_id, 51) is None
    assert key_valid_for(keys(100), "ed25519:nope", 0) is None


class FakeKeySource:
    """A key source over one answer per fetch (``fresh``, in order, the last repeated),
    with the fetcher's cache: what was fetched is cached; ``requests`` counts fetches."""

    def __init__(self, clock: Clock, *fresh: Deferred[ServerKeys]) -> None:
        self.fresh = list(fresh)
        self.refetch_limit = RefetchLimit(clock)
        self._cache: dict[str, ServerKeys] = {}
        self.requests = 0

    def cached(self, server_name: str) -> ServerKeys | None:
        return self._cache.get(server_name)

    def preload(self, server_name: str, found: ServerKeys) -> None:
        self._cache[server_name] = found

    def fetch(self, server_name: str) -> Deferred[ServerKeys]:
        self.requests += 1
        d = self.fresh.pop(0) if len(self.fresh) > 1 else self.fresh[0]

        def store(found: ServerKeys) -> ServerKeys:
            self._cache[server_name] = found
            return found

        return d.addCallback(store)

    def fetch_cached_or_fresh(self, server_name: str) -> Deferred[ServerKeys]:
        cached = self.cached(server_name)
        return succeed(cached) if cached is not None else self.fetch(server_name)


def test_lookup_uses_the_cache_first() -> None:
    """A key valid in the cached keys is answered without a fresh fetch."""
    source = FakeKeySource(Clock(), succeed(keys(100)))
    source.preload("b.test", keys(100))
    assert result_now(verify_key_lookup(source)("b.test", KEY.key_id, 90)) == KEY.key.verify_key
    assert source.requests == 0


def test_lookup_refetches_once_when_the_cached_key_is_too_old() -> None:
    """A cached key that expires before the event's time is refetched, once."""
    source = FakeKeySource(Clock(), succeed(keys(100)))
    source.preload("b.test", keys(10))
    assert result_now(verify_key_lookup(source)("b.test", KEY.key_id, 90)) == KEY.key.verify_key
    assert source.requests == 1


def test_lookup_failures_are_no_key() -> None:
    """Keys that cannot be fetched mean no key (None), not an error."""
    source = FakeKeySource(Clock(), fail(RuntimeError("down")))
    assert result_now(verify_key_lookup(source)("b.test", KEY.key_id, 90)) is None


def _signed_by_unknown_keys(count: int) -> list[Event]:
    """``count`` events of a user of victim.test, each signed with another key ID that
    victim.test does not have (what a hostile member can put in a transaction)."""
    return [
        Event(
            event_id=f"$e{i}",
            room_version=ROOM_VERSIONS["12"],
            pdu={
                "type": "m.room.message",
                "sender": "@u:victim.test",
                "content": {},
                "origin_server_ts": 1_000 + i,
                "signatures": {"victim.test": {f"ed25519:made_up_{i}": "c2ln"}},
            },
            room_id="!r:a.test",
        )
        for i in range(count)
    ]


def test_one_transaction_fetches_a_named_servers_keys_once() -> None:
    """Issue 22 row 6: 25 PDUs naming 25 unknown key IDs of victim.test cost one
    request toward victim.test (there were 25, one per key ID), and every PDU fails its
    check."""
    clock = Clock()
    source = FakeKeySource(clock, succeed(keys(10**15)))
    events = _signed_by_unknown_keys(25)
    verify = result_now(Deferred.fromCoroutine(verifier_for(verify_key_lookup(source), events)))
    assert source.requests == 1
    for event in events:
        with pytest.raises(SignatureFailure):
            verify(event)


def test_key_fetches_on_demand_are_limited_to_one_a_minute_per_server() -> None:
    """A second transaction naming new unknown key IDs within the minute asks nothing;
    a minute later it may ask once more."""
    clock = Clock()
    source = FakeKeySource(clock, succeed(keys(10**15)))
    lookup = verify_key_lookup(source)
    result_now(Deferred.fromCoroutine(verifier_for(lookup, _signed_by_unknown_keys(5))))
    result_now(Deferred.fromCoroutine(verifier_for(lookup, _signed_by_unknown_keys(25)[5:])))
    assert source.requests == 1
    clock.advance(REFETCH_INTERVAL_SECONDS)
    result_now(Deferred.fromCoroutine(verifier_for(lookup, _signed_by_unknown_keys(25)[5:])))
    assert source.requests == 2


def test_lookups_toward_one_server_share_the_fetch_in_flight() -> None:
    """Lookups started together for one uncached server wait for the first one's fetch
    instead of being refused by the limit: all find the key once it arrives."""
    answer: Deferred[ServerKeys] = Deferred()
    source = FakeKeySource(Clock(), answer)
    lookup = verify_key_lookup(source)
    pending = [lookup("b.test", KEY.key_id, 90) for _ in range(3)]
    answer.callback(keys(100))
    assert [result_now(d) for d in pending] == [KEY.key.verify_key] * 3
    assert source.requests == 1


def test_the_default_factory_builds_the_real_room_service() -> None:
    """Without a service factory, ``site_parts`` builds the real RoomService (its status
    names our server and the default room version), not a TypeError."""
    listener_sites = compose(config(FEDERATION, CONTROL), FakeReactor()).sites
    status, body = status_of(
        stub_treq(listener_sites[1].router),
        "http://127.0.0.1/_stubserver/v1/status",
        headers={"Authorization": "Bearer tok"},
    )
    assert (status, body["server_name"], body["rooms"]) == (200, "a.test", [])
    assert "11" in body["room_versions"]


def test_the_real_room_service_sends_dummy_events_every_five_minutes() -> None:
    """The default factory starts the room service's dummy events (the cap on forward
    extremities): a run is due on the reactor 5 minutes after start-up."""
    reactor = FakeReactor()
    compose(config(FEDERATION, CONTROL), reactor)
    loops = [
        (call.getTime() - reactor.seconds(), func.f)
        for call in reactor.getDelayedCalls()
        if isinstance(func := getattr(call, "func", None), LoopingCall)
    ]
    assert [(delay, f.__qualname__) for delay, f in loops] == [
        (DUMMY_EVENTS_INTERVAL_S, "DummyEvents.run")
    ]
