"""Many servers in one ``run`` (issue 23): Host dispatch on shared listeners, listeners of
a server's own, the per-server control prefix, and what the servers share."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from twisted.web.test.requesthelper import DummyRequest

from stubserver.app.hosting import SERVER_ANNOTATION, HostDispatch, host_from_header
from stubserver.app.run import Composition, compose, per_address_cap, ready_line
from stubserver.config import Config, ListenerConfig
from stubserver.server.connections import MAX_CONCURRENT_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS
from stubserver.server.limits import ServerLimits
from stubserver.server.router import request_annotations
from stubserver.signing.keys import ServerSigningKey
from tests.support import FakeReactor, result_now, stub_treq

KEYS = [ServerSigningKey.generate(f"a_h{i}") for i in range(3)]
FEDERATION = ListenerConfig(8448, ("127.0.0.1",), frozenset({"federation"}), Path("c"), Path("k"))
OWN = ListenerConfig(8449, ("127.0.0.2",), frozenset({"federation"}), Path("c2"), Path("k2"))
CONTROL = ListenerConfig(8009, ("127.0.0.1",), frozenset({"control"}), None, None)
AUTH = {"Authorization": "Bearer tok"}


def three_servers() -> Config:
    """Primary ``a.test`` and ``s1.test`` on the shared listeners (``s1`` delegating to
    ``s1-fed.test``), ``s2.test`` on a listener of its own."""
    primary = Config(
        "a.test", (KEYS[0],), (FEDERATION, CONTROL), control_token="tok", request_log_path=None
    )
    s1 = replace(
        primary,
        server_name="s1.test",
        signing_keys=(KEYS[1],),
        serve_server_wellknown="s1-fed.test",
    )
    s2 = replace(
        primary,
        server_name="s2.test",
        signing_keys=(KEYS[2],),
        listeners=(OWN,),
        own_listeners=True,
    )
    return replace(primary, servers=(s1, s2))


def composed() -> Composition:
    return compose(three_servers(), FakeReactor())


def get(resource: Any, url: str, **kwargs: Any) -> tuple[int, Any]:
    stub = stub_treq(resource)
    response = result_now(stub.get(url, **kwargs))
    return response.code, result_now(stub.json_content(response))


def key_owner(resource: Any, host: str) -> str:
    """The ``server_name`` of the key document served for Host ``host``."""
    status, body = get(resource, f"https://{host}/_matrix/key/v2/server")
    assert status == 200
    return str(body["server_name"])


def noted_server(resource: HostDispatch, host: bytes) -> Any:
    """The ``server`` a request for the key endpoint with Host ``host`` is noted with
    (the request log's field), None when it is noted with none."""
    request: Any = DummyRequest([b"_matrix", b"key", b"v2", b"server"])
    request.uri = request.path = b"/_matrix/key/v2/server"
    request.requestHeaders.setRawHeaders(b"host", [host])
    resource.render(request)
    return request_annotations(request).get(SERVER_ANNOTATION)


@pytest.mark.parametrize(
    ("header", "host"),
    [
        (b"s1.test", "s1.test"),
        (b"S1.Test:8448", "s1.test"),
        (b"s1.test.", "s1.test"),
        (b"[::1]:8448", "::1"),
        (b"[::1]", "::1"),
        (b"127.0.0.1:8448", "127.0.0.1"),
        (b"::1", "::1"),
        (b"", None),
        (None, None),
        (b"\xff.test", None),
    ],
)
def test_host_from_header(header: bytes | None, host: str | None) -> None:
    """The Host header's host: lower-cased, without port, brackets or a trailing dot."""
    assert host_from_header(header) == host


def test_a_shared_listener_answers_as_the_server_the_host_names() -> None:
    """On the shared listener the Host header chooses the server (by name or delegated
    name, any case, any port); a Host naming none of them is the primary's."""
    site = composed().sites[0]
    resource = site.site.resource
    assert isinstance(resource, HostDispatch)
    assert key_owner(resource, "s1.test") == "s1.test"
    assert key_owner(resource, "S1-FED.test:8448") == "s1.test"
    assert key_owner(resource, "a.test") == "a.test"
    assert key_owner(resource, "127.0.0.1:8448") == "a.test"
    assert key_owner(resource, "s2.test") == "a.test"  # s2 is served on its own listener


def test_a_servers_own_listener_answers_as_that_server_whatever_the_host() -> None:
    """A listener of a server's own serves that server only."""
    own = composed().sites[2]
    assert own.listener == OWN
    assert key_owner(own.site.resource, "a.test") == "s2.test"


def test_servers_other_than_the_primary_are_built_on_their_first_request() -> None:
    """Only the primary's parts exist at start-up; another server's are built when a
    request first reaches it."""
    composition = composed()
    primary, s1, s2 = composition.servers
    assert (primary.built, s1.built, s2.built) == (True, False, False)
    key_owner(composition.sites[0].site.resource, "s1.test")
    assert (s1.built, s2.built) == (True, False)


def test_every_server_has_its_own_key_fetcher_over_one_outbound_stack() -> None:
    """The servers' key fetchers are their own, their agent (connection pool, resolver)
    is the process's one."""
    primary, s1, _ = composed().servers
    assert primary.extensions.key_fetcher is not s1.extensions.key_fetcher
    assert primary.extensions.key_document is not s1.extensions.key_document
    context = primary.extensions.key_fetcher.federation_context()
    assert s1.extensions.key_fetcher.federation_context() is context


def test_the_prefix_addresses_each_server_and_the_plain_routes_the_primary() -> None:
    """``/_stubserver/v1/servers/{name}/status`` answers for that server,
    ``/_stubserver/v1/status`` for the primary."""
    control = composed().sites[1].site.resource
    base = "http://127.0.0.1/_stubserver/v1"
    assert get(control, f"{base}/status", headers=AUTH)[1]["server_name"] == "a.test"
    for name in ("a.test", "s1.test", "s2.test"):
        status, body = get(control, f"{base}/servers/{name}/status", headers=AUTH)
        assert (status, body["server_name"]) == (200, name)


def test_the_server_list_names_every_server_primary_first() -> None:
    """``GET /_stubserver/v1/servers`` lists every server, the primary marked."""
    control = composed().sites[1].site.resource
    assert get(control, "http://127.0.0.1/_stubserver/v1/servers", headers=AUTH) == (
        200,
        {
            "servers": [
                {"server_name": "a.test", "primary": True},
                {"server_name": "s1.test", "primary": False},
                {"server_name": "s2.test", "primary": False},
            ]
        },
    )


def test_an_unknown_server_is_not_found_and_every_route_needs_the_token() -> None:
    """An unknown server name is 404 ``M_NOT_FOUND``; without the token, the list and the
    prefixed routes are 401 (even for an unknown name: nothing is told unauthenticated)."""
    control = composed().sites[1].site.resource
    base = "http://127.0.0.1/_stubserver/v1"
    status, body = get(control, f"{base}/servers/x.test/status", headers=AUTH)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    for path in ("/servers", "/servers/x.test/status", "/servers/s1.test/status"):
        status, body = get(control, base + path)
        assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")


def test_each_server_feeds_its_own_requests_marked_with_its_name() -> None:
    """A request answered as ``s1.test`` is in s1's request feed with ``"server":
    "s1.test"``, and not in the primary's."""
    composition = composed()
    get(
        composition.sites[0].site.resource,
        "https://s1.test/_matrix/federation/v1/state_ids/!r:a.test?event_id=$e",
    )
    control = composition.sites[1].site.resource
    base = "http://127.0.0.1/_stubserver/v1"
    _, feed = get(control, f"{base}/servers/s1.test/requests", headers=AUTH)
    (entry,) = feed["requests"]
    assert (entry["server"], entry["status"]) == ("s1.test", 401)
    assert get(control, f"{base}/requests", headers=AUTH)[1]["requests"] == []


def test_the_ready_line_names_the_servers_when_there_are_several() -> None:
    """``servers`` joins the ready line with more than one server, and only then."""
    assert "servers" not in json.loads(ready_line("a.test", [], ["a.test"]))
    line = json.loads(ready_line("a.test", [], ["a.test", "s1.test"]))
    assert (line["server_name"], line["servers"]) == ("a.test", ["a.test", "s1.test"])


def test_the_per_address_connection_cap_grows_with_the_servers() -> None:
    """One address may hold the one-server cap of connections to each server of the
    process (a homeserver keeps one per peer), within the global cap."""
    (site, control, own) = composed().sites
    assert site.site.connections is own.site.connections
    assert site.site.connections.per_address_limit == 3 * MAX_CONNECTIONS_PER_ADDRESS
    assert per_address_cap(ServerLimits(), 100) == MAX_CONCURRENT_CONNECTIONS
    assert control.site.connections is not site.site.connections


def put(resource: Any, url: str, body: bytes) -> tuple[int, Any]:
    stub = stub_treq(resource)
    response = result_now(stub.put(url, data=body, headers=AUTH))
    return response.code, result_now(stub.json_content(response))


def version_status(resource: Any, host: str) -> int:
    stub = stub_treq(resource)
    response = result_now(stub.get(f"https://{host}/_matrix/federation/v1/version"))
    return int(response.code)


def test_each_server_has_faults_of_its_own_under_its_prefix() -> None:
    """A fault set under ``/servers/s1.test/faults`` acts on s1's requests only, on the
    listener it shares with the primary; the primary's faults (unprefixed) and s2's stay
    clear, and each server counts what its own faults did."""
    composition = composed()
    control = composition.sites[1].site.resource
    shared = composition.sites[0].site.resource
    status, _ = put(
        control, "http://c/_stubserver/v1/servers/s1.test/faults", b'{"fail": {"status": 503}}'
    )
    assert status == 200
    assert version_status(shared, "s1.test") == 503
    assert version_status(shared, "a.test") == 200
    assert version_status(composition.sites[2].site.resource, "s2.test") == 200
    _, s1 = get(control, "http://c/_stubserver/v1/servers/s1.test/faults", headers=AUTH)
    _, primary = get(control, "http://c/_stubserver/v1/faults", headers=AUTH)
    assert s1["counters"]["requests_failed"] == 1
    assert primary["faults"]["fail"] is None
    assert primary["counters"]["requests_failed"] == 0


def test_only_a_listener_a_server_has_alone_goes_down_with_it() -> None:
    """The faults of s2 (its own listener) act on that listener's connections; the
    shared listener's connections answer to no server's faults (a server on it is down
    by its requests being reset), the control listener's neither."""
    composition = composed()
    primary, _, s2 = composition.servers
    shared, control, own = composition.sites
    assert composition.owners == (None, None, s2)
    assert s2.faults is not None
    assert own.site.faults is s2.faults
    assert shared.site.faults is None and control.site.faults is None
    assert primary.faults is not None and primary.faults is composition.faults


def test_a_single_servers_listener_goes_down_with_it() -> None:
    """With one server, its federation listener is its own: its faults act on it."""
    primary = three_servers()
    single = replace(primary, servers=())
    composition = compose(single, FakeReactor())
    assert composition.owners == (composition.servers[0], None)
    assert composition.sites[0].site.faults is composition.faults is not None


def test_a_single_server_reads_no_host_and_notes_no_server_name() -> None:
    """One server: its listener answers every Host as that server without reading Host,
    and its requests carry no ``server`` note (its request log keeps DESIGN.md's shape)."""
    single = replace(three_servers(), servers=())
    composition = compose(single, FakeReactor())
    resource = composition.sites[0].site.resource
    assert isinstance(resource, HostDispatch)
    request: Any = DummyRequest([b""])
    request.requestHeaders.setRawHeaders(b"host", [b"s1.test"])
    assert resource.server_for(request) is composition.servers[0]
    assert key_owner(resource, "anything.test") == "a.test"
    assert resource.alone is composition.servers[0]
    assert noted_server(resource, b"s1.test") is None
    several = composed().sites[0].site.resource
    assert isinstance(several, HostDispatch)
    assert several.alone is None
    assert noted_server(several, b"s1.test") == "s1.test"
