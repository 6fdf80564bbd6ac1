"""How ``run`` composes fault injection (issue 23): switched on the control listener,
acting on the federation listeners only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stubserver.app.run import compose
from stubserver.config import Config, ListenerConfig
from stubserver.signing.keys import ServerSigningKey
from tests.control.fakes import FakeRoomControl
from tests.support import FakeReactor, result_now, stub_treq

KEY = ServerSigningKey.generate("a_faults")
FEDERATION = ListenerConfig(8448, ("127.0.0.1",), frozenset({"federation"}), Path("c"), Path("k"))
CONTROL = ListenerConfig(8009, ("127.0.0.1",), frozenset({"control"}), None, None)
AUTH = {"Authorization": "Bearer tok"}
FAULTS = "http://127.0.0.1/_stubserver/v1/faults"
VERSION = "https://a.test/_matrix/federation/v1/version"


def config(*listeners: ListenerConfig) -> Config:
    return Config(
        server_name="a.test", signing_keys=(KEY,), listeners=listeners, control_token="tok"
    )


def answer(stub: Any, d: Any) -> tuple[int, Any]:
    response = result_now(d)
    return response.code, result_now(stub.json_content(response))


def test_faults_set_on_the_control_listener_act_on_the_federation_listener_only() -> None:
    """A fail rule PUT on the control listener answers the federation listener's requests
    with its status; the control listener goes on answering, and only the federation
    site consults the faults as it accepts connections."""
    composed = compose(
        config(FEDERATION, CONTROL), FakeReactor(), service_factory=lambda p: FakeRoomControl()
    )
    fed_site, control_site = composed.sites
    control = stub_treq(control_site.router)
    federation = stub_treq(fed_site.router)
    assert answer(federation, federation.get(VERSION))[0] == 200
    status, _ = answer(
        control, control.put(FAULTS, data=b'{"fail": {"status": 503}}', headers=AUTH)
    )
    assert status == 200
    assert answer(federation, federation.get(VERSION)) == (
        503,
        {"errcode": "M_UNKNOWN", "error": "injected fault"},
    )
    status, shown = answer(control, control.get(FAULTS, headers=AUTH))
    assert (status, shown["counters"]["requests_failed"]) == (200, 1)
    assert fed_site.site.faults is composed.faults is not None
    assert control_site.site.faults is None


def test_without_a_control_listener_there_are_no_faults() -> None:
    """Without a control listener nothing could switch faults: none are composed."""
    composed = compose(config(FEDERATION), FakeReactor())
    assert composed.faults is None
    (fed_site,) = composed.sites
    assert fed_site.site.faults is None
