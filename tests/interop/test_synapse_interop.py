"""stubserver against a real Synapse, each finding the other through DNS and delegation.

The environment (tests/interop/harness.py) runs Synapse and three stubs in a network
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
from tests.interop.harness import (
    DEFAULT_STUBS,
    InteropEnvironment,
    RunningStub,
    http_request,
    x_matrix_header,
)

pytestmark = pytest.mark.interop

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


def _synapse_key(env: InteropEnvironment) -> ServerSigningKey:
    key: ServerSigningKey = env.synapse.files.signing_key()
    return key


# ---------------------------------------------------------------- 1. stub -> Synapse


def test_stub_fetches_and_verifies_synapse_keys(interop_env: InteropEnvironment) -> None:
    """`stubserver keys synapse.test` finds Synapse through DNS and verifies its self-signature."""
    env = interop_env
    stub = env.stubs["direct.test"]
    key = _synapse_key(env)
    out = env.stubserver("keys", env.synapse.server_name, "--json", "-c", stub.files.config_path)
    assert out["error"] is None, out
    assert out["server_name"] == env.synapse.server_name
    assert out["signature_ok"] is True
    assert out["verify_keys"] == {key.key_id: key.verify_key_base64}
    assert out["target"]["addresses"] == [env.synapse.files.spec.address]


@pytest.mark.parametrize("stub_name", STUB_NAMES, ids=STUB_IDS)
def test_signed_request_to_synapse_profile_query(
    interop_env: InteropEnvironment, stub_name: str
) -> None:
    """Synapse accepts a stub's signed profile query (fetching the stub's keys through its
    delegation) and answers 200 with its user's displayname."""
    env = interop_env
    stub = env.stubs[stub_name]
    user_id, displayname, _ = env.synapse_user
    out = env.stubserver(
        "request",
        env.synapse.server_name,
        _profile_uri(user_id),
        "--json",
        "-c",
        stub.files.config_path,
    )
    assert out["status"] == 200, f"{out}\nSynapse log:\n{env.synapse_log_tail()}"
    assert out["error"] is None
    assert out["body"]["displayname"] == displayname


# ---------------------------------------------------------------- 2. Synapse's notary


@pytest.mark.parametrize("stub_name", STUB_NAMES, ids=STUB_IDS)
def test_synapse_notary_returns_stub_keys(interop_env: InteropEnvironment, stub_name: str) -> None:
    """Synapse's notary resolves and reaches the stub, accepts its keys, and returns them
    signed by the stub and by Synapse."""
    env = interop_env
    stub = env.stubs[stub_name]
    answer = http_request(
        env.ns,
        "POST",
        f"{env.synapse.files.spec.federation_url}/_matrix/key/v2/query",
        # Synapse's notary fetches from the origin only on a cache miss for a named key
        # ID (a query for "all keys", {}, answers from its cache alone), and it requires
        # minimum_valid_until_ts: keys valid from now on.
        body={
            "server_keys": {
                stub_name: {stub.files.key_id: {"minimum_valid_until_ts": int(time.time() * 1000)}}
            }
        },
        ca_file=env.ca.cert_path,
    )
    assert answer.status == 200, f"{answer}\nSynapse log:\n{env.synapse_log_tail()}"
    responses = [r for r in answer.body["server_keys"] if r.get("server_name") == stub_name]
    assert len(responses) == 1, f"{answer.body}\nSynapse log:\n{env.synapse_log_tail()}"
    response = responses[0]
    assert response["verify_keys"] == {stub.files.key_id: {"key": stub.files.verify_key}}
    verify_signed_json(
        response, stub_name, stub.files.key_id, decode_verify_key(stub.files.verify_key)
    )
    synapse_key = _synapse_key(env)
    verify_signed_json(
        response, env.synapse.server_name, synapse_key.key_id, synapse_key.key.verify_key
    )


# ---------------------------------------------------------------- 3. Synapse -> stub


@pytest.mark.parametrize("stub_name", STUB_NAMES, ids=STUB_IDS)
def test_synapse_client_gets_stub_user_profile(
    interop_env: InteropEnvironment, stub_name: str
) -> None:
    """A Synapse client asking for a stub user's profile gets the stub's displayname: the
    stub accepted Synapse's signed request and logged it as authenticated, origin Synapse."""
    env = interop_env
    stub = env.stubs[stub_name]
    user_id = f"@alice:{stub_name}"
    _, _, token = env.synapse_user
    before = len(stub.request_log())
    answer = http_request(
        env.ns,
        "GET",
        f"{env.synapse.files.spec.client_url}/_matrix/client/v3/profile/"
        + urllib.parse.quote(user_id),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status == 200, (
        f"{answer}\nstub log:\n{stub.process.log_tail()}\nSynapse log:\n{env.synapse_log_tail()}"
    )
    assert answer.body["displayname"] == stub.files.spec.users["alice"]
    entries = stub.wait_for_log_entries(_is_profile_query_for(user_id), after=before)
    assert len(entries) == 1, stub.request_log()
    entry = entries[0]
    assert entry["method"] == "GET"
    assert entry["origin"] == env.synapse.server_name
    assert entry["authenticated"] is True
    assert entry["auth_error"] is None
    assert entry["status"] == 200


# ---------------------------------------------------------------- 4. rejected requests


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


def _send_to_wk_stub(env: InteropEnvironment, case: str) -> tuple[Any, list[dict[str, Any]]]:
    """Send a forged profile query to wk.test's federation listener; return the answer and
    the request-log entries it added."""
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
            origin=env.synapse.server_name,
            key=_synapse_key(env),
            destination=stub.server_name,
            uri=uri,
        ),
        ca_file=env.ca.cert_path,
    )
    return answer, stub.wait_for_log_entries(_is_profile_query_for(user_id), after=before)


def test_forged_valid_request_is_accepted(interop_env: InteropEnvironment) -> None:
    """A request signed with Synapse's real key (the control for the rejections below) is
    answered 200 and logged as authenticated: the stub fetched Synapse's keys to check it."""
    answer, entries = _send_to_wk_stub(interop_env, "valid")
    assert answer.status == 200, answer
    assert answer.body["displayname"] == "Alice Well-Known"
    assert len(entries) == 1, entries
    assert entries[0]["origin"] == interop_env.synapse.server_name
    assert entries[0]["authenticated"] is True


@pytest.mark.parametrize("case", ["no_header", "bad_signature", "wrong_destination"])
def test_bad_request_is_rejected_and_logged(interop_env: InteropEnvironment, case: str) -> None:
    """A request without X-Matrix, with a bad signature or for another destination is
    answered 401 M_UNAUTHORIZED (as Synapse answers) and logged as rejected."""
    answer, entries = _send_to_wk_stub(interop_env, case)
    assert answer.status == 401, answer
    assert answer.body["errcode"] == "M_UNAUTHORIZED"
    assert answer.body["error"]
    assert len(entries) == 1, entries
    entry = entries[0]
    assert entry["authenticated"] is False
    assert entry["auth_error"]
    assert entry["status"] == 401
    expected_origin = None if case == "no_header" else interop_env.synapse.server_name
    assert entry["origin"] == expected_origin


@pytest.mark.parametrize("case", ["no_header", "bad_signature", "wrong_destination"])
def test_synapse_rejects_bad_request_the_same_way(
    interop_env: InteropEnvironment, case: str
) -> None:
    """The reference: Synapse answers the same spoilt requests (from a stub's name) with
    401 M_UNAUTHORIZED, the error the stub gives."""
    env = interop_env
    stub = env.stubs["direct.test"]
    user_id = env.synapse_user[0]
    uri = _profile_uri(user_id)
    headers = _spoilt_headers(
        case,
        origin=stub.server_name,
        key=stub.files.signing_key(),
        destination=env.synapse.server_name,
        uri=uri,
    )
    answer = http_request(
        env.ns,
        "GET",
        f"{env.synapse.files.spec.federation_url}{uri}",
        headers=headers,
        ca_file=env.ca.cert_path,
    )
    assert answer.status == 401, answer
    assert answer.body["errcode"] == "M_UNAUTHORIZED"
