"""Keys, notary and signed requests between the stubs and a real homeserver, each finding
the other through DNS and delegation: the cases shared by Synapse (test_synapse_interop.py)
and Dendrite (test_dendrite_interop.py), each of which binds ``peer_env`` to its environment.

The environment (tests/interop/harness.py) runs the homeserver and three stubs in a network
namespace whose resolver is the tests' DNS server: ``direct.test`` (port 8448 on its own
address), ``wk.test`` (``.well-known`` delegating to ``wk-fed.test:8448``) and ``srv.test``
(``_matrix-fed._tcp`` SRV to ``srv-host.test:8450``). Spec: Server-Server API v1.19,
"Resolving server names", "Retrieving server keys", "Request Authentication".
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest

from stubserver.signing.keys import (
    ServerSigningKey,
    decode_verify_key,
    verify_signed_json,
)
from tests.interop.dendrite import DendriteEnvironment
from tests.interop.harness import (
    DEFAULT_STUBS,
    InteropEnvironment,
    RunningStub,
    http_request,
    x_matrix_header,
)

#: An environment with a real homeserver (``.homeserver``): Synapse's or Dendrite's.
PeerEnvironment = InteropEnvironment | DendriteEnvironment


STUB_NAMES = [spec.server_name for spec in DEFAULT_STUBS]
STUB_IDS = [spec.method for spec in DEFAULT_STUBS]
PROFILE_PATH = "/_matrix/federation/v1/query/profile"


def _profile_uri(user_id: str) -> str:
    return f"{PROFILE_PATH}?{urllib.parse.urlencode({'user_id': user_id})}"


def _is_profile_query_for(user_id: str) -> Callable[[dict[str, Any]], bool]:
    def matches(entry: dict[str, Any]) -> bool:
        uri = urllib.parse.urlsplit(entry.get("uri", ""))
        query = urllib.parse.parse_qs(uri.query)
        return uri.path == PROFILE_PATH and query.get("user_id") == [user_id]

    return matches


def _spoilt_headers(
    case: str, *, origin: str, key: ServerSigningKey, destination: str, uri: str
) -> dict[str, str]:
    """Headers for a GET of ``uri`` from ``origin`` signed with ``key``, spoilt as ``case`` says."""
    if case == "no_header":
        return {}
    if case == "bad_signature":
        # The right key ID, but a key that is not the origin's.
        key = ServerSigningKey(key.version, ServerSigningKey.generate("x").key)
    elif case == "wrong_destination":
        destination = "elsewhere.test"
    else:
        assert case == "valid"
    header = x_matrix_header(origin=origin, destination=destination, method="GET", uri=uri, key=key)
    return {"Authorization": header}


def _send_to_wk_stub(env: PeerEnvironment, case: str) -> tuple[Any, list[dict[str, Any]]]:
    """Send a profile query forged in the homeserver's name to wk.test's federation
    listener; return the answer and the request-log entries it added."""
    stub: RunningStub = env.stubs["wk.test"]
    user_id = "@alice:wk.test"
    uri = _profile_uri(user_id)
    _, port, _ = stub.files.spec.federation
    before = len(stub.request_log())
    answer = http_request(
        env.ns,
        "GET",
        f"https://wk-fed.test:{port}{uri}",
        headers=_spoilt_headers(
            case,
            origin=env.homeserver.server_name,
            key=env.homeserver.signing_key,
            destination=stub.server_name,
            uri=uri,
        ),
        ca_file=env.ca.cert_path,
    )
    return answer, stub.wait_for_log_entries(_is_profile_query_for(user_id), after=before)


class FederationInteropCases:
    """The cases; a subclass provides the ``peer_env`` fixture and says what its
    homeserver answers where the spec leaves the answer open."""

    #: The ``errcode`` the homeserver gives a request whose X-Matrix authentication fails
    #: (None: no ``errcode`` at all). The Server-Server API names none; it requires only
    #: "HTTP status code `401 Unauthorized`" (for a wrong ``destination``).
    auth_failure_errcode: str | None

    #: Cases the homeserver is known to fail, by test name (``test_x[param]``): the spec's
    #: words and the upstream issue. Run as strict xfails (tests/interop/conftest.py).
    expected_failures: dict[str, str] = {}

    # ------------------------------------------------------------ 1. stub -> homeserver

    def test_stub_fetches_and_verifies_homeserver_keys(self, peer_env: PeerEnvironment) -> None:
        """`stubserver keys <homeserver>` finds the homeserver through DNS and verifies its
        self-signature."""
        env, hs = peer_env, peer_env.homeserver
        stub = env.stubs["direct.test"]
        out = env.stubserver("keys", hs.server_name, "--json", "-c", stub.files.config_path)
        assert out["error"] is None, out
        assert out["server_name"] == hs.server_name
        assert out["signature_ok"] is True
        assert out["verify_keys"] == {hs.signing_key.key_id: hs.signing_key.verify_key_base64}
        assert out["target"]["addresses"] == [hs.spec.address]

    @pytest.mark.parametrize("stub_name", STUB_NAMES, ids=STUB_IDS)
    def test_signed_request_to_homeserver_profile_query(
        self, peer_env: PeerEnvironment, stub_name: str
    ) -> None:
        """The homeserver accepts a stub's signed profile query (fetching the stub's keys
        through its delegation) and answers 200 with its user's displayname."""
        env, hs = peer_env, peer_env.homeserver
        stub = env.stubs[stub_name]
        user_id, displayname, _ = hs.user
        out = env.stubserver(
            "request", hs.server_name, _profile_uri(user_id), "--json", "-c", stub.files.config_path
        )
        assert out["status"] == 200, f"{out}\n{hs.product} log:\n{hs.log_tail()}"
        assert out["error"] is None
        assert out["body"]["displayname"] == displayname

    # ------------------------------------------------------------ 2. the homeserver's notary

    @pytest.mark.parametrize("stub_name", STUB_NAMES, ids=STUB_IDS)
    def test_homeserver_notary_returns_stub_keys(
        self, peer_env: PeerEnvironment, stub_name: str
    ) -> None:
        """The homeserver's notary resolves and reaches the stub, accepts its keys, and
        returns them signed by the stub and by the homeserver.

        The query carries the Host header a homeserver would send, the bare server name:
        "Requests are made to the resolved IP address using port 8448 and a `Host` header
        containing the `<hostname>`" (Server-Server API, "Resolving server names", step 6).
        Dendrite's notary answers 404 "Server name not known" to ``Host: name:8448``, which
        a plain HTTPS client sends and Synapse ignores."""
        env, hs = peer_env, peer_env.homeserver
        stub = env.stubs[stub_name]
        answer = http_request(
            env.ns,
            "POST",
            f"{hs.spec.federation_url}/_matrix/key/v2/query",
            # Synapse's notary fetches from the origin only on a cache miss for a named key
            # ID (a query for "all keys", {}, answers from its cache alone), and it requires
            # minimum_valid_until_ts: keys valid from now on.
            body={
                "server_keys": {
                    stub_name: {
                        stub.files.key_id: {"minimum_valid_until_ts": int(time.time() * 1000)}
                    }
                }
            },
            headers={"Host": hs.server_name},
            ca_file=env.ca.cert_path,
        )
        assert answer.status == 200, f"{answer}\n{hs.product} log:\n{hs.log_tail()}"
        responses = [r for r in answer.body["server_keys"] if r.get("server_name") == stub_name]
        assert len(responses) == 1, f"{answer.body}\n{hs.product} log:\n{hs.log_tail()}"
        response = responses[0]
        assert response["verify_keys"] == {stub.files.key_id: {"key": stub.files.verify_key}}
        verify_signed_json(
            response, stub_name, stub.files.key_id, decode_verify_key(stub.files.verify_key)
        )
        verify_signed_json(
            response, hs.server_name, hs.signing_key.key_id, hs.signing_key.key.verify_key
        )

    # ------------------------------------------------------------ 3. homeserver -> stub

    @pytest.mark.parametrize("stub_name", STUB_NAMES, ids=STUB_IDS)
    def test_homeserver_client_gets_stub_user_profile(
        self, peer_env: PeerEnvironment, stub_name: str
    ) -> None:
        """A homeserver client asking for a stub user's profile gets the stub's displayname:
        the stub accepted the homeserver's signed request and logged it as authenticated,
        origin the homeserver."""
        env, hs = peer_env, peer_env.homeserver
        stub = env.stubs[stub_name]
        user_id = f"@alice:{stub_name}"
        _, _, token = hs.user
        before = len(stub.request_log())
        answer = http_request(
            env.ns,
            "GET",
            f"{hs.spec.client_url}/_matrix/client/v3/profile/" + urllib.parse.quote(user_id),
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status == 200, (
            f"{answer}\nstub log:\n{stub.process.log_tail()}\n{hs.product} log:\n{hs.log_tail()}"
        )
        assert answer.body["displayname"] == stub.files.spec.users["alice"]
        entries = stub.wait_for_log_entries(_is_profile_query_for(user_id), after=before)
        assert len(entries) == 1, stub.request_log()
        entry = entries[0]
        assert entry["method"] == "GET"
        assert entry["origin"] == hs.server_name
        assert entry["authenticated"] is True
        assert entry["auth_error"] is None
        assert entry["status"] == 200

    # ------------------------------------------------------------ 4. rejected requests

    def test_forged_valid_request_is_accepted(self, peer_env: PeerEnvironment) -> None:
        """A request signed with the homeserver's real key (the control for the rejections
        below) is answered 200 and logged as authenticated: the stub fetched the
        homeserver's keys to check it."""
        answer, entries = _send_to_wk_stub(peer_env, "valid")
        assert answer.status == 200, answer
        assert answer.body["displayname"] == "Alice Well-Known"
        assert len(entries) == 1, entries
        assert entries[0]["origin"] == peer_env.homeserver.server_name
        assert entries[0]["authenticated"] is True

    @pytest.mark.parametrize("case", ["no_header", "bad_signature", "wrong_destination"])
    def test_bad_request_is_rejected_and_logged(self, peer_env: PeerEnvironment, case: str) -> None:
        """A request without X-Matrix, with a bad signature or for another destination is
        answered 401 M_UNAUTHORIZED (as Synapse answers) and logged as rejected."""
        answer, entries = _send_to_wk_stub(peer_env, case)
        assert answer.status == 401, answer
        assert answer.body["errcode"] == "M_UNAUTHORIZED"
        assert answer.body["error"]
        assert len(entries) == 1, entries
        entry = entries[0]
        assert entry["authenticated"] is False
        assert entry["auth_error"]
        assert entry["status"] == 401
        expected_origin = None if case == "no_header" else peer_env.homeserver.server_name
        assert entry["origin"] == expected_origin

    @pytest.mark.parametrize("case", ["no_header", "bad_signature", "wrong_destination"])
    def test_homeserver_rejects_bad_request_the_same_way(
        self, peer_env: PeerEnvironment, case: str
    ) -> None:
        """The reference: the homeserver answers the same spoilt requests (from a stub's
        name) with 401, as the stub does, and its own ``errcode`` (:attr:`auth_failure_errcode`;
        the stub's is M_UNAUTHORIZED). For a wrong destination the spec requires it: "the
        receiving server must deny the request with an HTTP status code `401 Unauthorized`"
        (Server-Server API, "Request Authentication")."""
        env, hs = peer_env, peer_env.homeserver
        stub = env.stubs["direct.test"]
        uri = _profile_uri(hs.user[0])
        headers = _spoilt_headers(
            case,
            origin=stub.server_name,
            key=stub.files.signing_key(),
            destination=hs.server_name,
            uri=uri,
        )
        answer = http_request(
            env.ns,
            "GET",
            f"{hs.spec.federation_url}{uri}",
            headers=headers,
            ca_file=env.ca.cert_path,
        )
        assert answer.status == 401, answer
        assert answer.body.get("errcode") == self.auth_failure_errcode, answer
