"""Keys, version and request authentication (room-version independent).

Spec: Server-Server API v1.19, "Retrieving server keys" ("Publishing Keys", "Querying
Keys Through Another Server"), "Server implementation" (``/version``), "Authentication"
("Request Authentication").
"""

from __future__ import annotations

import time
from typing import Any

from stubserver.conformance.context import Context, expect, q
from stubserver.conformance.runner import CheckFailed, ConformanceTest
from stubserver.signing.keys import (
    ServerSigningKey,
    SignatureError,
    decode_verify_key,
    verify_signed_json,
)

PUBLISHING = "Retrieving server keys: Publishing Keys"
NOTARY = "Retrieving server keys: Querying Keys Through Another Server"
VERSION = "Server implementation: GET /_matrix/federation/v1/version"
REQUEST_AUTH = "Authentication: Request Authentication"
#: The positive baseline of the refusals: a request we sign, sent the same way, accepted.
SIGNED_BASELINE = "auth.signed_request_accepted"


def _check_key_document(document: Any, server_name: str, what: str) -> dict[str, str]:
    """The document's verify keys, after checking its name, lifetime and self-signature."""
    if not isinstance(document, dict):
        raise CheckFailed(what, "a JSON object", document)
    expect(f"{what}: server_name", server_name, document.get("server_name"))
    keys = document.get("verify_keys")
    if not isinstance(keys, dict) or not keys:
        raise CheckFailed(f"{what}: verify_keys", "at least one key", keys)
    valid_until = document.get("valid_until_ts")
    now_ms = int(time.time() * 1000)
    if not isinstance(valid_until, int) or valid_until <= now_ms:
        raise CheckFailed(f"{what}: valid_until_ts", f"after now ({now_ms})", valid_until)
    verify = {k: str(v.get("key")) for k, v in keys.items() if isinstance(v, dict)}
    for key_id, key in verify.items():
        try:
            verify_signed_json(document, server_name, key_id, decode_verify_key(key))
        except (SignatureError, ValueError, KeyError) as e:
            raise CheckFailed(f"{what}: signature by {key_id}", "valid", f"invalid ({e})") from e
    return verify


def _server_keys(ctx: Context) -> dict[str, str]:
    answer = ctx.peer.federation_request(ctx.server_name, "GET", "/_matrix/key/v2/server")
    expect("GET /_matrix/key/v2/server status", 200, answer.status)
    return _check_key_document(answer.body, ctx.server_name, "its key document")


def test_server_keys(ctx: Context) -> None:
    """Its key document names it, lives on, and is signed by each of its keys."""
    _server_keys(ctx)


def test_version(ctx: Context) -> None:
    """``/version`` answers 200 with ``server.name``."""
    answer = ctx.peer.federation_request(ctx.server_name, "GET", "/_matrix/federation/v1/version")
    expect("GET /version status", 200, answer.status)
    server = answer.body.get("server") if isinstance(answer.body, dict) else None
    if not isinstance(server, dict) or not isinstance(server.get("name"), str):
        raise CheckFailed("GET /version body", '{"server": {"name": ...}}', answer.body)


def _notary_vouches(ctx: Context, criteria: dict[str, Any]) -> None:
    """Ask its notary for our key under ``criteria``: a 200 with our key document, signed
    by us and by it."""
    ours = ctx.our_key()
    their_keys = _server_keys(ctx)
    peer = ctx.peer.server_name
    body: dict[str, Any] = {"server_keys": {peer: {ours.key_id: criteria}}}
    answer = ctx.peer.federation_request(ctx.server_name, "POST", "/_matrix/key/v2/query", body)
    expect("POST /_matrix/key/v2/query status", 200, answer.status, answer=answer.body)
    documents = answer.body.get("server_keys") if isinstance(answer.body, dict) else None
    mine = [d for d in documents or [] if isinstance(d, dict) and d.get("server_name") == peer]
    if not mine:
        raise CheckFailed("the notary's answer", f"a key document of {peer}", answer.body)
    document = mine[0]
    keys = _check_key_document(document, peer, "our key document from the notary")
    expect(f"our key {ours.key_id}", ours.verify_key_base64, keys.get(ours.key_id))
    signed_by = sorted((document.get("signatures") or {}).get(ctx.server_name) or {})
    usable = [k for k in signed_by if k in their_keys]
    if not usable:
        raise CheckFailed("the notary's signature", f"one by {ctx.server_name}", signed_by)
    try:
        verify_signed_json(
            document, ctx.server_name, usable[0], decode_verify_key(their_keys[usable[0]])
        )
    except (SignatureError, ValueError) as e:
        raise CheckFailed("the notary's signature", "valid", f"invalid ({e})") from e


def test_notary(ctx: Context) -> None:
    """As a notary it returns our key document, signed by us and by itself, for a query
    naming our key ID with ``minimum_valid_until_ts`` (now)."""
    _notary_vouches(ctx, {"minimum_valid_until_ts": int(time.time() * 1000)})


def test_notary_without_minimum_valid_until_ts(ctx: Context) -> None:
    """A query whose criteria leave out ``minimum_valid_until_ts`` is answered as one
    with it: the spec makes it optional ("If not supplied, the current time as determined
    by the notary server is used."). Synapse 1.163.2 answers 400 M_MISSING_PARAM
    (expected/synapse.txt)."""
    _notary_vouches(ctx, {})


def _profile_path(ctx: Context) -> str:
    return f"/_matrix/federation/v1/query/profile?user_id={q(ctx.user.user_id)}"


def _forged(ctx: Context, key: ServerSigningKey | None, destination: str) -> tuple[int, Any]:
    return ctx.raw("GET", _profile_path(ctx), key=key, destination=destination)


def test_signed_request_accepted(ctx: Context) -> None:
    """A request we sign ourselves, sent the way the refused ones are, is answered 200
    (so that the refusals below are about the signature, nothing else).

    No mutant of the homeserver reaches this test's failure: the preflight sends the same
    signed request before any test, and a server that refuses it stops the run there
    ("it accepts a request we sign"; the mutation run's ``every_request_refused``)."""
    status, body = _forged(ctx, ctx.our_key(), ctx.server_name)
    expect("a correctly signed profile query", 200, status, answer=body)


def test_bad_signature_refused(ctx: Context) -> None:
    """A request signed with a key that is not ours (under our key ID) is refused 401
    (only when the same request signed rightly is accepted: a server that refuses
    everything gives no verdict)."""
    ours = ctx.our_key()
    wrong = ServerSigningKey.generate(ours.version)
    status, body = _forged(ctx, wrong, ctx.server_name)
    expect("a badly signed request", 401, status, answer=body)


def test_other_destination_refused(ctx: Context) -> None:
    """A request signed for another destination is refused 401."""
    status, body = _forged(ctx, ctx.our_key(), f"not-{ctx.server_name}")
    expect("a request signed for another destination", 401, status, answer=body)


def test_unsigned_refused(ctx: Context) -> None:
    """A request without an Authorization header is refused 401."""
    status, body = _forged(ctx, None, ctx.server_name)
    expect("an unsigned request", 401, status, answer=body)


def tests() -> list[ConformanceTest[Context]]:
    """This area's tests."""
    return [
        ConformanceTest("keys.server_keys_valid", PUBLISHING, None, test_server_keys),
        ConformanceTest("keys.version", VERSION, None, test_version),
        ConformanceTest("keys.notary_vouches_for_our_keys", NOTARY, None, test_notary),
        ConformanceTest(
            "keys.notary_minimum_valid_until_ts_optional",
            NOTARY,
            None,
            test_notary_without_minimum_valid_until_ts,
        ),
        ConformanceTest(SIGNED_BASELINE, REQUEST_AUTH, None, test_signed_request_accepted),
        ConformanceTest(
            "auth.bad_signature_refused",
            REQUEST_AUTH,
            None,
            test_bad_signature_refused,
            depends_on=(SIGNED_BASELINE,),
        ),
        ConformanceTest(
            "auth.other_destination_refused",
            REQUEST_AUTH,
            None,
            test_other_destination_refused,
            depends_on=(SIGNED_BASELINE,),
        ),
        ConformanceTest(
            "auth.unsigned_refused",
            REQUEST_AUTH,
            None,
            test_unsigned_refused,
            depends_on=(SIGNED_BASELINE,),
        ),
    ]
