"""``run``'s composition: what its listeners share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stubserver.app.run import compose
from stubserver.config import Config, ListenerConfig
from stubserver.signing.keys import ServerSigningKey
from tests.support import FakeReactor, result_now, stub_treq

KEY = ServerSigningKey.generate("a_run")
FEDERATION = ListenerConfig(8448, ("127.0.0.1",), frozenset({"federation"}), Path("c"), Path("k"))
#: Less than half the key document's validity (a day by default): no rebuild in between.
LATER_SECONDS = 600


def get_json(stub: Any, path: str) -> Any:
    response = result_now(stub.get("https://a.test" + path))
    assert response.code == 200
    return result_now(stub.json_content(response))


def test_key_endpoint_and_notary_serve_one_key_document() -> None:
    """/_matrix/key/v2/server and the notary's answer for our own name are the same signed
    document (same valid_until_ts), however far apart they are asked: run builds our key
    document once, not once for the listeners and once for the notary."""
    reactor = FakeReactor()
    reactor.advance(1_700_000_000)
    (site,) = compose(Config("a.test", (KEY,), (FEDERATION,)), reactor).sites
    stub = stub_treq(site.router)
    served = get_json(stub, "/_matrix/key/v2/server")
    reactor.advance(LATER_SECONDS)
    (notarised,) = get_json(stub, "/_matrix/key/v2/query/a.test")["server_keys"]
    assert notarised["valid_until_ts"] == served["valid_until_ts"]
    assert notarised == served
