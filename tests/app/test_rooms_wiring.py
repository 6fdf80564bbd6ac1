"""How ``run`` composes rooms and the control listener (with a fake room service), and
the verify-key lookup handed to the room routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from stubserver.app.rooms_wiring import RoomParts, key_valid_for, verify_key_lookup
from stubserver.app.run import compose
from stubserver.app.site import CONTROL_HANDLER_DEADLINE_SECONDS
from stubserver.config import Config, ListenerConfig
from stubserver.discovery.resolution import Target
from stubserver.server_keys.fetcher import ServerKeys
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
    def __init__(self, cached: Deferred[ServerKeys], fresh: Deferred[ServerKeys]) -> None:
        self.cached, self.fresh = cached, fresh
        self.fetched: list[str] = []

    def fetch_cached_or_fresh(self, server_name: str) -> Deferred[ServerKeys]:
        self.fetched.append("cached")
        return self.cached

    def fetch(self, server_name: str) -> Deferred[ServerKeys]:
        self.fetched.append("fresh")
        return self.fresh


def test_lookup_uses_the_cache_first() -> None:
    """A key valid in the cached keys is answered without a fresh fetch."""
    source = FakeKeySource(succeed(keys(100)), succeed(keys(100)))
    assert result_now(verify_key_lookup(source)("b.test", KEY.key_id, 90)) == KEY.key.verify_key
    assert source.fetched == ["cached"]


def test_lookup_refetches_once_when_the_cached_key_is_too_old() -> None:
    """A cached key that expires before the event's time is refetched, once."""
    source = FakeKeySource(succeed(keys(10)), succeed(keys(100)))
    assert result_now(verify_key_lookup(source)("b.test", KEY.key_id, 90)) == KEY.key.verify_key
    assert source.fetched == ["cached", "fresh"]


def test_lookup_failures_are_no_key() -> None:
    """Keys that cannot be fetched mean no key (None), not an error."""
    source = FakeKeySource(fail(RuntimeError("down")), succeed(keys(100)))
    assert result_now(verify_key_lookup(source)("b.test", KEY.key_id, 90)) is None


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
