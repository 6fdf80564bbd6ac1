"""The federation site as run composes it: X-Matrix filter, profile, notary, unknown paths."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from nacl.signing import SigningKey, VerifyKey
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest

from stubserver.app.profile import profile_answer, profile_route
from stubserver.auth.authenticator import RequestAuthenticator
from stubserver.auth.filter import XMatrixFilter
from stubserver.auth.xmatrix import sign_request
from stubserver.config import UserProfile
from stubserver.server.router import FederationRouter, MatrixError, request_annotations
from stubserver.server_keys.key_document import KeyDocumentSource, build_key_document
from stubserver.server_keys.notary import (
    MAX_NOTARY_SERVERS,
    Notary,
    notary_routes,
    parse_notary_query,
)
from stubserver.signing.keys import ServerSigningKey, sign_json, verify_signed_json
from tests.support import stub_treq

US = "us.test"
ORIGIN = "origin.test"
OUR_KEY = ServerSigningKey(version="us1", key=SigningKey(b"\x05" * 32))
ORIGIN_KEY = ServerSigningKey(version="o1", key=SigningKey(b"\x06" * 32))
WRONG_KEY = ServerSigningKey(version="o1", key=SigningKey(b"\x07" * 32))
NOW_S = 1_700_000_000
NOW_MS = NOW_S * 1000
USERS = {
    "alice": UserProfile(displayname="Alice", avatar_url="mxc://us.test/a"),
    "bob": UserProfile(displayname="Bob"),
}
PROFILE = "/_matrix/federation/v1/query/profile?user_id=%40alice%3Aus.test"


@dataclass(frozen=True)
class Keys:
    verify_keys: Mapping[str, VerifyKey]
    valid_until_ts: int
    response: Mapping[str, Any]


def origin_keys(valid_until: int = NOW_MS + 3_600_000) -> Keys:
    doc = build_key_document(ORIGIN, [ORIGIN_KEY], {}, valid_until)
    return Keys({ORIGIN_KEY.key_id: ORIGIN_KEY.key.verify_key}, valid_until, doc)


@dataclass
class FakeFetcher:
    """Key fetcher fake: a result per server; refetch answers from ``fresh``."""

    results: dict[str, Keys | Exception] = field(default_factory=dict)
    fresh: dict[str, Keys | Exception] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def _answer(self, result: Keys | Exception) -> Deferred[Keys]:
        if isinstance(result, Exception):
            failed: Deferred[Keys] = fail(result)
            return failed
        return succeed(result)

    def fetch_cached_or_fresh(self, server_name: str) -> Deferred[Keys]:
        self.calls.append(("fetch", server_name))
        return self._answer(self.results.get(server_name, KeyError(server_name)))

    def fetch(self, server_name: str) -> Deferred[Keys]:
        self.calls.append(("refetch", server_name))
        return self._answer(self.fresh.get(server_name, ConnectionError("down")))


class Harness:
    """A router with the profile and notary routes, the X-Matrix filter and an observer."""

    def __init__(self, fetcher: FakeFetcher | None = None) -> None:
        self.reset_origins: list[str] = []
        self.clock = Clock()
        self.clock.advance(NOW_S)
        self.fetcher = fetcher or FakeFetcher({ORIGIN: origin_keys()})
        self.own = KeyDocumentSource(self.clock, US, [OUR_KEY], {}, 86_400_000)
        notary: Notary[Keys] = Notary(
            US,
            OUR_KEY,
            own_keys=self.own,
            fetch=self.fetcher.fetch_cached_or_fresh,
            refetch=self.fetcher.fetch,
            clock=self.clock,
        )
        authenticator = RequestAuthenticator(US, self.fetcher, self.clock)
        self.observed: list[tuple[int, dict[str, Any]]] = []
        router = FederationRouter(
            [profile_route(US, USERS), *notary_routes(notary)],
            filters=[XMatrixFilter(authenticator, on_authenticated=self.reset_origins.append)],
            observers=[self.observe],
        )
        self.treq = stub_treq(router)

    def observe(self, request: IRequest, status: int, body: Any) -> None:
        self.observed.append((status, dict(request_annotations(request))))

    def request(
        self,
        case: SynchronousTestCase,
        method: str,
        path: str,
        *,
        auth: bytes | None = None,
        body: Any = None,
    ) -> tuple[int, Any]:
        headers = {b"Authorization": [auth]} if auth is not None else {}
        data = None if body is None else json.dumps(body).encode()
        d = self.treq.request(method, "https://us.test" + path, headers=headers, data=data)
        self.treq.flush()
        response = case.successResultOf(d)
        content = self.treq.content(response)
        self.treq.flush()
        raw: bytes = case.successResultOf(content)
        return response.code, json.loads(raw)


def signed(
    path: str,
    method: str = "GET",
    *,
    content: Any = None,
    destination: str = US,
    key: ServerSigningKey = ORIGIN_KEY,
) -> bytes:
    return sign_request(
        method, path, origin=ORIGIN, destination=destination, key=key, content=content
    )


class ProfileAnswerTests(SynchronousTestCase):
    def test_table(self) -> None:
        """The pure profile answer for each case: (user_id, field) -> body or status."""
        cases: list[tuple[str | None, str | None, Any]] = [
            ("@alice:us.test", None, {"displayname": "Alice", "avatar_url": "mxc://us.test/a"}),
            ("@alice:us.test", "displayname", {"displayname": "Alice"}),
            ("@alice:us.test", "avatar_url", {"avatar_url": "mxc://us.test/a"}),
            ("@bob:us.test", None, {"displayname": "Bob"}),
            ("@bob:us.test", "avatar_url", {}),
            ("@carol:us.test", None, (404, "M_NOT_FOUND")),
            ("@alice:other.test", None, (400, "M_INVALID_PARAM")),
            ("alice", None, (400, "M_INVALID_PARAM")),
            ("@alice:bad host", None, (400, "M_INVALID_PARAM")),
            (None, None, (400, "M_MISSING_PARAM")),
            ("@alice:us.test", "email", (400, "M_INVALID_PARAM")),
        ]
        for user_id, wanted, expected in cases:
            with self.subTest(user_id=user_id, field=wanted):
                if isinstance(expected, tuple):
                    with pytest.raises(MatrixError) as info:
                        profile_answer(US, USERS, user_id, wanted)
                    assert (info.value.status, info.value.errcode) == expected
                else:
                    assert profile_answer(US, USERS, user_id, wanted) == expected


class ProfileRouteTests(SynchronousTestCase):
    def test_signed_request_answered(self) -> None:
        """A correctly signed profile query is answered and noted as authenticated."""
        h = Harness()
        status, body = h.request(self, "GET", PROFILE, auth=signed(PROFILE))
        assert (status, body) == (200, {"displayname": "Alice", "avatar_url": "mxc://us.test/a"})
        ((logged_status, notes),) = h.observed
        assert logged_status == 200
        assert (notes["origin"], notes["authenticated"], notes["auth_error"]) == (
            ORIGIN,
            True,
            None,
        )

    def test_authenticated_origin_reported(self) -> None:
        """A valid signed request reports its origin (run resets that origin's backoff)."""
        h = Harness()
        h.request(self, "GET", PROFILE, auth=signed(PROFILE))
        assert h.reset_origins == [ORIGIN]

    def test_rejected_origin_not_reported(self) -> None:
        """A request with a bad signature reports no origin as authenticated."""
        h = Harness()
        status, _ = h.request(self, "GET", PROFILE, auth=signed(PROFILE, key=OUR_KEY))
        assert status == 401
        assert h.reset_origins == []

    def test_field_selects(self) -> None:
        """``field`` selects one field."""
        h = Harness()
        path = PROFILE + "&field=displayname"
        assert h.request(self, "GET", path, auth=signed(path)) == (200, {"displayname": "Alice"})

    def test_no_header(self) -> None:
        """Without X-Matrix the profile is 401 M_UNAUTHORIZED and logged as such."""
        h = Harness()
        status, body = h.request(self, "GET", PROFILE)
        assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
        ((_, notes),) = h.observed
        assert (notes["authenticated"], notes["auth_error"]) == (
            False,
            "Missing Authorization headers",
        )

    def test_bad_signature(self) -> None:
        """A bad signature is 401, logged with the claimed origin and the reason."""
        h = Harness()
        status, body = h.request(self, "GET", PROFILE, auth=signed(PROFILE, key=WRONG_KEY))
        assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
        assert "Invalid signature" in body["error"]
        ((_, notes),) = h.observed
        assert (notes["origin"], notes["authenticated"]) == (ORIGIN, False)
        assert "Invalid signature" in notes["auth_error"]

    def test_wrong_destination(self) -> None:
        """A header for another destination is 401."""
        h = Harness()
        status, body = h.request(
            self, "GET", PROFILE, auth=signed(PROFILE, destination="other.test")
        )
        assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
        assert "Destination mismatch" in body["error"]

    def test_malformed_header(self) -> None:
        """A malformed X-Matrix header is 400 M_UNAUTHORIZED."""
        h = Harness()
        status, body = h.request(self, "GET", PROFILE, auth=b"X-Matrix origin=a b")
        assert (status, body["errcode"]) == (400, "M_UNAUTHORIZED")

    def test_unknown_user(self) -> None:
        """An unknown local user is 404 M_NOT_FOUND."""
        h = Harness()
        path = "/_matrix/federation/v1/query/profile?user_id=%40zed%3Aus.test"
        status, body = h.request(self, "GET", path, auth=signed(path))
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


class UnknownFederationPathTests(SynchronousTestCase):
    def test_signed_unknown_path(self) -> None:
        """An unknown federation path is 404 M_UNRECOGNIZED; its good X-Matrix is logged."""
        h = Harness()
        path = "/_matrix/federation/v1/nonesuch/x?y=1"
        status, body = h.request(
            self, "PUT", path, auth=signed(path, "PUT", content={"a": 1}), body={"a": 1}
        )
        assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")
        ((_, notes),) = h.observed
        assert (notes["origin"], notes["authenticated"], notes["content"]) == (
            ORIGIN,
            True,
            {"a": 1},
        )

    def test_unsigned_unknown_path(self) -> None:
        """Without credentials an unknown federation path is still 404."""
        h = Harness()
        status, body = h.request(self, "GET", "/_matrix/federation/v1/nonesuch")
        assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")

    def test_badly_signed_unknown_path(self) -> None:
        """Credentials that fail are answered 401 on any federation path."""
        h = Harness()
        path = "/_matrix/federation/v1/nonesuch"
        status, _ = h.request(self, "GET", path, auth=signed(path, key=WRONG_KEY))
        assert status == 401

    def test_other_matrix_paths_checked(self) -> None:
        """X-Matrix is checked on any /_matrix/ path, not only /_matrix/federation/."""
        h = Harness()
        path = "/_matrix/media/v3/download/x/y"
        assert h.request(self, "GET", path, auth=signed(path, key=WRONG_KEY))[0] == 401
        status, _ = h.request(self, "GET", path, auth=signed(path))
        assert status == 404
        assert h.observed[-1][1]["authenticated"] is True

    def test_key_endpoints_not_checked(self) -> None:
        """Key endpoints need no authentication: even a bad signature is not checked."""
        h = Harness()
        path = f"/_matrix/key/v2/query/{US}"
        status, _ = h.request(self, "GET", path, auth=signed(path, key=WRONG_KEY))
        assert status == 200
        assert h.observed[-1][1]["authenticated"] is False

    def test_non_json_body(self) -> None:
        """A signed federation request whose body is not JSON is 400 M_NOT_JSON; without
        credentials the body is never parsed (issue 22, row 1), so an unknown path is 404."""
        h = Harness()
        path = "/_matrix/federation/v1/x"
        header = signed(path, "PUT", content={})
        d = h.treq.request(
            "PUT", "https://us.test" + path, data=b"{nope", headers={b"Authorization": [header]}
        )
        h.treq.flush()
        response = self.successResultOf(d)
        assert response.code == 400
        d = h.treq.request("PUT", "https://us.test" + path, data=b"{nope")
        h.treq.flush()
        assert self.successResultOf(d).code == 404


class NotaryTests(SynchronousTestCase):
    def test_other_server_countersigned(self) -> None:
        """Another server's keys keep its signature and carry ours."""
        h = Harness()
        status, body = h.request(self, "GET", f"/_matrix/key/v2/query/{ORIGIN}")
        assert status == 200
        (doc,) = body["server_keys"]
        verify_signed_json(doc, ORIGIN, ORIGIN_KEY.key_id, ORIGIN_KEY.key.verify_key)
        verify_signed_json(doc, US, OUR_KEY.key_id, OUR_KEY.key.verify_key)
        assert doc["verify_keys"] == origin_keys().response["verify_keys"]

    def test_own_keys(self) -> None:
        """Our own keys come from our key document, without a fetch."""
        h = Harness()
        status, body = h.request(self, "GET", f"/_matrix/key/v2/query/{US}")
        assert (status, body["server_keys"]) == (200, [h.own.current()])
        assert h.fetcher.calls == []

    def test_minimum_valid_until_refetches(self) -> None:
        """Cached keys expiring before minimum_valid_until_ts are fetched again."""
        later = NOW_MS + 7 * 86_400_000
        fetcher = FakeFetcher({ORIGIN: origin_keys()}, fresh={ORIGIN: origin_keys(later + 1)})
        h = Harness(fetcher)
        path = f"/_matrix/key/v2/query/{ORIGIN}?minimum_valid_until_ts={later}"
        _, body = h.request(self, "GET", path)
        assert fetcher.calls == [("fetch", ORIGIN), ("refetch", ORIGIN)]
        assert body["server_keys"][0]["valid_until_ts"] == later + 1

    def test_fresh_enough_not_refetched(self) -> None:
        """Cached keys valid past minimum_valid_until_ts are served without a refetch."""
        h = Harness()
        h.request(self, "GET", f"/_matrix/key/v2/query/{ORIGIN}?minimum_valid_until_ts={NOW_MS}")
        assert h.fetcher.calls == [("fetch", ORIGIN)]

    def test_refetch_failure_serves_cached(self) -> None:
        """When the refetch fails the cached keys are served."""
        h = Harness()
        path = f"/_matrix/key/v2/query/{ORIGIN}?minimum_valid_until_ts={NOW_MS * 2}"
        _, body = h.request(self, "GET", path)
        assert len(body["server_keys"]) == 1

    def test_unreachable_left_out(self) -> None:
        """A server whose keys cannot be fetched is left out: an empty list."""
        h = Harness()
        assert h.request(self, "GET", "/_matrix/key/v2/query/down.test") == (
            200,
            {"server_keys": []},
        )

    def test_post_batch(self) -> None:
        """The POST form answers every server asked about that has keys."""
        h = Harness()
        query: dict[str, Any] = {"server_keys": {ORIGIN: {}, US: {}, "down.test": {}}}
        status, body = h.request(self, "POST", "/_matrix/key/v2/query", body=query)
        assert status == 200
        assert sorted(d["server_name"] for d in body["server_keys"]) == [ORIGIN, US]

    def test_bad_minimum(self) -> None:
        """A minimum_valid_until_ts that is not an integer is 400."""
        h = Harness()
        path = f"/_matrix/key/v2/query/{ORIGIN}?minimum_valid_until_ts=soon"
        assert h.request(self, "GET", path)[0] == 400

    def test_invalid_server_name(self) -> None:
        """A server name that is not one is 400."""
        h = Harness()
        assert h.request(self, "GET", "/_matrix/key/v2/query/a%20b")[0] == 400


class ParseNotaryQueryTests(SynchronousTestCase):
    def test_table(self) -> None:
        """The POST body's criteria: the largest minimum per server, now when absent."""
        q = {"a.test": {"ed25519:x": {"minimum_valid_until_ts": 5}, "ed25519:y": {}}}
        assert parse_notary_query({"server_keys": q}, 3) == {"a.test": 5}
        assert parse_notary_query({"server_keys": {"a.test": {}}}, 3) == {"a.test": 3}
        assert parse_notary_query({"server_keys": {}}, 3) == {}
        bad: list[Any] = [
            {},
            {"server_keys": []},
            {"server_keys": {"a.test": []}},
            {"server_keys": {"a.test": {"k": {"minimum_valid_until_ts": "1"}}}},
            {"server_keys": {"a b": {}}},
            {"server_keys": {f"s{i}.test": {} for i in range(MAX_NOTARY_SERVERS + 1)}},
        ]
        for body in bad:
            with self.subTest(body=str(body)[:60]), pytest.raises(MatrixError):
                parse_notary_query(body, 3)


class CountersignTests(SynchronousTestCase):
    def test_sign_json_keeps_origin_signature(self) -> None:
        """Adding our signature keeps the origin's (what the notary relies on)."""
        doc = build_key_document(ORIGIN, [ORIGIN_KEY], {}, NOW_MS)
        both = sign_json(doc, US, OUR_KEY)
        assert set(both["signatures"]) == {ORIGIN, US}


# ---- notary under attack (issue 12, rows 4, 5, 6 and 14)


def padded_keys(server: str, pad: int) -> Keys:
    """Keys of ``server`` whose document carries ``pad`` bytes of padding."""
    valid_until = NOW_MS + 3_600_000
    key = ServerSigningKey(version="p1", key=SigningKey(b"\x08" * 32))
    doc = build_key_document(server, [key], {}, valid_until)
    doc["unsigned"] = {"pad": "p" * pad}
    return Keys({key.key_id: key.key.verify_key}, valid_until, doc)


@dataclass
class PendingFetcher:
    """Key fetcher fake whose fetches stay pending until the test fires them."""

    pending: list[tuple[str, Deferred[Keys]]] = field(default_factory=list)

    def fetch_cached_or_fresh(self, server_name: str) -> Deferred[Keys]:
        d: Deferred[Keys] = Deferred()
        self.pending.append((server_name, d))
        return d

    fetch = fetch_cached_or_fresh


def raw_post(h: Harness, case: SynchronousTestCase, body: bytes) -> tuple[int, Any]:
    d = h.treq.request("POST", "https://us.test/_matrix/key/v2/query", data=body)
    h.treq.flush()
    response = case.successResultOf(d)
    content = h.treq.content(response)
    h.treq.flush()
    return response.code, json.loads(case.successResultOf(content))


class NotaryLimitTests(SynchronousTestCase):
    def test_unicode_digit_minimum_refused(self) -> None:
        """minimum_valid_until_ts=² (or another script's digit, which int() takes) is 400
        M_INVALID_PARAM: only ASCII digits are a timestamp."""
        h = Harness()
        for value in ("%C2%B2", "%D9%A3", "1%C2%B2"):
            path = f"/_matrix/key/v2/query/{ORIGIN}?minimum_valid_until_ts={value}"
            status, body = h.request(self, "GET", path)
            assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), value

    def test_lone_surrogate_key_id_refused(self) -> None:
        """A key ID holding a lone surrogate escape is 400, in the body and in the parsed
        query alike; nothing is fetched."""
        h = Harness()
        body = b'{"server_keys": {"origin.test": {"ed25519:\\ud800": {}}}}'
        status, answer = raw_post(h, self, body)
        assert status == 400
        assert answer["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM")
        with pytest.raises(MatrixError) as info:
            parse_notary_query({"server_keys": {ORIGIN: {"ed25519:\ud800": {}}}}, NOW_MS)
        assert (info.value.status, info.value.errcode) == (400, "M_INVALID_PARAM")
        assert h.fetcher.calls == []

    def test_servers_per_query_capped_at_twenty(self) -> None:
        """At most 20 servers per query (was 100); 21 is 400 M_LIMIT_EXCEEDED."""
        assert MAX_NOTARY_SERVERS == 20
        h = Harness()
        query: dict[str, Any] = {"server_keys": {f"s{i}.test": {} for i in range(21)}}
        status, body = h.request(self, "POST", "/_matrix/key/v2/query", body=query)
        assert (status, body["errcode"]) == (400, "M_LIMIT_EXCEEDED")
        assert h.fetcher.calls == []

    def test_key_ids_per_server_capped(self) -> None:
        """More than MAX_NOTARY_KEY_IDS key IDs for one server is 400."""
        from stubserver.server_keys.notary import MAX_NOTARY_KEY_IDS

        h = Harness()
        ids: dict[str, Any] = {f"ed25519:k{i}": {} for i in range(MAX_NOTARY_KEY_IDS + 1)}
        query = {"server_keys": {ORIGIN: ids}}
        status, _ = h.request(self, "POST", "/_matrix/key/v2/query", body=query)
        assert status == 400

    def test_answer_size_capped(self) -> None:
        """Servers past MAX_NOTARY_ANSWER_BYTES are left out: ten 60 KB documents give an
        answer under the cap holding the first few servers in query order."""
        from stubserver.server_keys.notary import MAX_NOTARY_ANSWER_BYTES

        names = [f"s{i}.test" for i in range(10)]
        h = Harness(FakeFetcher({n: padded_keys(n, 60_000) for n in names}))
        query: dict[str, Any] = {"server_keys": {n: {} for n in names}}
        status, body = h.request(self, "POST", "/_matrix/key/v2/query", body=query)
        assert status == 200
        kept = [d["server_name"] for d in body["server_keys"]]
        assert kept == names[: len(kept)]
        assert 0 < len(kept) < len(names)
        assert len(json.dumps(body).encode()) <= MAX_NOTARY_ANSWER_BYTES

    def test_fetches_in_flight_capped(self) -> None:
        """A 20-server query fetches at most MAX_NOTARY_FETCHES_IN_FLIGHT servers at once,
        and still answers once every fetch has ended."""
        from stubserver.server_keys.notary import MAX_NOTARY_FETCHES_IN_FLIGHT

        fetcher = PendingFetcher()
        clock = Clock()
        clock.advance(NOW_S)
        own = KeyDocumentSource(clock, US, [OUR_KEY], {}, 86_400_000)
        notary: Notary[Keys] = Notary(
            US, OUR_KEY, own_keys=own, fetch=fetcher.fetch, refetch=fetcher.fetch, clock=clock
        )
        answer = notary.query({f"s{i}.test": NOW_MS for i in range(MAX_NOTARY_SERVERS)})
        fired = 0
        while fetcher.pending[fired:]:
            assert len(fetcher.pending) - fired <= MAX_NOTARY_FETCHES_IN_FLIGHT
            _, d = fetcher.pending[fired]
            fired += 1
            d.errback(ConnectionError("down"))
        assert fired == MAX_NOTARY_SERVERS
        assert self.successResultOf(answer).body == {"server_keys": []}

    def test_far_minimum_refetches_once_per_interval(self) -> None:
        """A minimum_valid_until_ts far in the future does not bypass the cache on every
        request: one refetch per server per NOTARY_REFETCH_INTERVAL_SECONDS."""
        from stubserver.server_keys.notary import NOTARY_REFETCH_INTERVAL_SECONDS

        fetcher = FakeFetcher({ORIGIN: origin_keys()}, fresh={ORIGIN: origin_keys()})
        h = Harness(fetcher)
        path = f"/_matrix/key/v2/query/{ORIGIN}?minimum_valid_until_ts={2**52}"
        for _ in range(5):
            status, body = h.request(self, "GET", path)
            assert (status, len(body["server_keys"])) == (200, 1)
        assert fetcher.calls.count(("refetch", ORIGIN)) == 1
        h.clock.advance(NOTARY_REFETCH_INTERVAL_SECONDS)
        h.request(self, "GET", path)
        assert fetcher.calls.count(("refetch", ORIGIN)) == 2

    def test_minimum_clamped(self) -> None:
        """minimum_valid_until_ts is clamped to 7 days ahead; nearer values are kept."""
        from stubserver.server_keys.notary import (
            MAX_MINIMUM_VALID_UNTIL_MS,
            clamp_minimum_valid_until,
        )

        assert clamp_minimum_valid_until(2**53, NOW_MS) == NOW_MS + MAX_MINIMUM_VALID_UNTIL_MS
        assert clamp_minimum_valid_until(NOW_MS + 5, NOW_MS) == NOW_MS + 5

    def test_failure_remembered_for_seconds_only(self) -> None:
        """A flood naming a server that is down fetches once; NOTARY_FAILURE_MEMORY_SECONDS
        later (seconds, not minutes) it is asked again."""
        from stubserver.server_keys.notary import NOTARY_FAILURE_MEMORY_SECONDS

        assert NOTARY_FAILURE_MEMORY_SECONDS <= 5
        h = Harness()
        for _ in range(3):
            assert h.request(self, "GET", "/_matrix/key/v2/query/down.test")[0] == 200
        assert h.fetcher.calls == [("fetch", "down.test")]
        h.clock.advance(NOTARY_FAILURE_MEMORY_SECONDS)
        h.request(self, "GET", "/_matrix/key/v2/query/down.test")
        assert len(h.fetcher.calls) == 2

    def test_hostile_key_documents_answered(self) -> None:
        """Through a real key fetcher, a peer serving 1e400 or a lone surrogate escape (even
        in the unsigned part of a correctly signed document, which the old code cached and
        could then not encode) is left out of a 200 answer whose body encodes."""
        from stubserver.server_keys.fetcher import ServerKeyFetcher
        from tests.server_keys.test_fetcher import FakeFederationAgent, KeyResource

        signed_doc = json.dumps(origin_keys().response).encode()[:-1]
        for body in (
            b'{"server_name": "origin.test", "valid_until_ts": 1e400}',
            signed_doc + b', "unsigned": {"x": "\\ud800"}}',
            signed_doc + b', "unsigned": {"x": 1e400}}',
        ):
            resource = KeyResource()
            resource.body = body
            clock = Clock()
            clock.advance(NOW_S)
            fetcher = ServerKeyFetcher(FakeFederationAgent(resource), clock)
            own = KeyDocumentSource(clock, US, [OUR_KEY], {}, 86_400_000)
            notary: Notary[Any] = Notary(
                US,
                OUR_KEY,
                own_keys=own,
                fetch=fetcher.fetch_cached_or_fresh,
                refetch=fetcher.fetch,
                clock=clock,
            )
            answer = self.successResultOf(notary.query({ORIGIN: NOW_MS, US: NOW_MS}))
            assert [d["server_name"] for d in answer.body["server_keys"]] == [US]
            json.dumps(answer.body, allow_nan=False).encode("utf-8")
