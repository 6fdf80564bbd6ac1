"""Key fetching: the response checks (pure, table) and the fetcher's limits and cache."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._newclient import ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from twisted.web.resource import Resource
from twisted.web.server import Request

from stubserver.discovery.resolution import Target
from stubserver.server_keys.fetcher import (
    MAX_KEY_CACHE_MS,
    KeyFetchError,
    KeyNotFound,
    ServerKeyFetcher,
)
from stubserver.server_keys.key_response_check import check_key_response
from stubserver.signing.keys import ServerSigningKey, sign_json
from tests.support import failure_now, has_fired

NOW_MS = 1_700_000_000_000
KEY = ServerSigningKey.generate("k1")
OTHER = ServerSigningKey.generate("k2")
TARGET = Target("alpha.test", 8448, ("192.0.2.1",), "alpha.test", "alpha.test", "default_port")


def key_doc(
    server_name: str = "alpha.test",
    *,
    valid_until_ts: int = NOW_MS + 86_400_000,
    signer: ServerSigningKey | None = KEY,
    listed: tuple[ServerSigningKey, ...] = (KEY,),
    extra_keys: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "server_name": server_name,
        "valid_until_ts": valid_until_ts,
        "verify_keys": {k.key_id: {"key": k.verify_key_base64} for k in listed},
        "old_verify_keys": old or {},
    }
    doc["verify_keys"].update(extra_keys or {})
    if signer is not None:
        doc = sign_json(doc, "alpha.test", signer)
    return doc


def tampered() -> dict[str, Any]:
    doc = key_doc()
    doc["valid_until_ts"] += 1
    return doc


CHECK_TABLE: list[tuple[str, Any, str | None, bool]] = [
    ("valid", key_doc(), None, True),
    ("unknown algorithm ignored", key_doc(extra_keys={"curve9:x": {"key": "!!"}}), None, True),
    (
        "old keys accepted",
        key_doc(old={"ed25519:old": {"key": OTHER.verify_key_base64, "expired_ts": 5}}),
        None,
        True,
    ),
    ("wrong server name", key_doc("beta.test"), "names server 'beta.test'", False),
    ("unsigned", key_doc(signer=None), "no signature by alpha.test", False),
    (
        "signed by unlisted key",
        key_doc(signer=OTHER),
        "no signature by alpha.test with a key",
        False,
    ),
    ("tampered", tampered(), "does not verify", False),
    ("expired", key_doc(valid_until_ts=NOW_MS - 1), "in the past", True),
    ("bad base64", key_doc(extra_keys={"ed25519:bad": {"key": "not*base64"}}), "base64", False),
    ("short key", key_doc(extra_keys={"ed25519:short": {"key": "AAAA"}}), "32 bytes", False),
    ("not an object", [1, 2], "JSON list", False),
    ("no verify_keys", {"server_name": "alpha.test"}, "verify_keys", False),
]


@pytest.mark.parametrize(
    ("case", "document", "problem", "signature_ok"), CHECK_TABLE, ids=[c[0] for c in CHECK_TABLE]
)
def test_check_key_response(
    case: str, document: Any, problem: str | None, signature_ok: bool
) -> None:
    """A response is accepted only when named, self-signed by a listed key, and current."""
    check = check_key_response(document, "alpha.test", NOW_MS)
    if problem is None:
        assert check.error is None
        assert KEY.key_id in check.verify_keys
    else:
        assert problem in (check.error or "")
    assert check.signature_ok is signature_ok


class KeyResource(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.body = json.dumps(key_doc()).encode()
        self.content_type: bytes | None = b"application/json"
        self.code = 200
        self.hits = 0

    def render_GET(self, request: Request) -> bytes:
        self.hits += 1
        request.setResponseCode(self.code)
        if self.content_type is not None:
            request.setHeader(b"content-type", self.content_type)  # type: ignore[no-untyped-call]
        return self.body


class FakeFederationAgent:
    """Serves matrix-federation:// requests from a resource in memory."""

    def __init__(self, resource: Resource) -> None:
        self.inner = RequestTraversalAgent(resource)  # type: ignore[no-untyped-call]
        self.hang = False
        self.pending_factory: Callable[[], Deferred[IResponse]] = Deferred
        self.uris: list[bytes] = []

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        self.uris.append(uri)
        if self.hang:
            return self.pending_factory()
        https = uri.replace(b"matrix-federation://", b"https://")
        result: Deferred[IResponse] = self.inner.request(  # type: ignore[no-untyped-call]
            method, https, headers, bodyProducer
        )
        return result

    def connected_target(self, server_name: str) -> Target | None:
        return TARGET


class FetcherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW_MS / 1000)
        self.resource = KeyResource()
        self.agent = FakeFederationAgent(self.resource)
        self.fetcher = ServerKeyFetcher(self.agent, self.clock)

    def test_fetch(self) -> None:
        """fetch returns the verified keys, the document and the target that answered."""
        keys = self.successResultOf(self.fetcher.fetch("alpha.test"))
        assert keys.server_name == "alpha.test"
        assert bytes(keys.verify_keys[KEY.key_id]) == bytes(KEY.key.verify_key)
        assert keys.response == key_doc()
        assert keys.target == TARGET
        assert self.agent.uris == [b"matrix-federation://alpha.test/_matrix/key/v2/server"]

    def test_content_type_required(self) -> None:
        """A response not served as application/json is refused."""
        self.resource.content_type = b"text/plain"
        failure = failure_now(self.fetcher.fetch("alpha.test"))
        assert isinstance(failure.value, KeyFetchError)
        assert "application/json" in str(failure.value)

    def test_charset_parameter_allowed(self) -> None:
        """application/json with a charset parameter is accepted."""
        self.resource.content_type = b"application/json; charset=utf-8"
        self.successResultOf(self.fetcher.fetch("alpha.test"))

    def test_size_cap(self) -> None:
        """A body over 64 KiB is refused without being parsed."""
        doc = key_doc()
        doc["pad"] = "a" * 70_000
        self.resource.body = json.dumps(doc).encode()
        failure = failure_now(self.fetcher.fetch("alpha.test"))
        assert isinstance(failure.value, KeyFetchError)
        assert "larger than" in str(failure.value)

    def test_http_error_reported(self) -> None:
        """A non-200 status is an error naming it; 5xx is temporary."""
        self.resource.code = 502
        failure = failure_now(self.fetcher.fetch("alpha.test"))
        assert isinstance(failure.value, KeyFetchError)
        assert "HTTP 502" in str(failure.value)
        assert isinstance(failure.value, KeyFetchError) and failure.value.temporary

    def test_deadline(self) -> None:
        """A server that never answers fails after 10 s."""
        self.agent.hang = True
        d = self.fetcher.fetch("alpha.test")
        self.clock.advance(9.9)
        assert not has_fired(d)
        self.clock.advance(0.2)
        failure = failure_now(d)
        assert isinstance(failure.value, KeyFetchError)
        assert "timed out" in str(failure.value)

    def test_deadline_through_wrapped_cancellation(self) -> None:
        """The deadline reports 'timed out' when cancelling the HTTP request fails with
        Twisted's ResponseNeverReceived([CancelledError]), as a real connection does."""

        def cancel(d: Deferred[IResponse]) -> None:
            d.errback(ResponseNeverReceived([Failure(CancelledError())]))  # type: ignore[no-untyped-call]

        self.agent.pending_factory = lambda: Deferred(cancel)
        self.agent.hang = True
        d = self.fetcher.fetch("alpha.test")
        self.clock.advance(10.1)
        failure = failure_now(d)
        assert isinstance(failure.value, KeyFetchError)
        assert "timed out" in str(failure.value)

    def test_cached_until_valid_until(self) -> None:
        """fetch_cached_or_fresh serves the cache until valid_until_ts, then asks again."""
        self.successResultOf(self.fetcher.fetch_cached_or_fresh("alpha.test"))
        self.clock.advance(86_399)
        self.successResultOf(self.fetcher.fetch_cached_or_fresh("alpha.test"))
        assert self.resource.hits == 1
        self.resource.body = json.dumps(key_doc(valid_until_ts=NOW_MS + 3 * 86_400_000)).encode()
        self.clock.advance(2)
        self.successResultOf(self.fetcher.fetch_cached_or_fresh("alpha.test"))
        assert self.resource.hits == 2

    def test_cache_capped_at_seven_days(self) -> None:
        """Keys valid for a year are cached for at most 7 days."""
        self.resource.body = json.dumps(key_doc(valid_until_ts=NOW_MS + 365 * 86_400_000)).encode()
        self.successResultOf(self.fetcher.fetch_cached_or_fresh("alpha.test"))
        self.clock.advance(MAX_KEY_CACHE_MS / 1000 - 1)
        assert self.fetcher.cached("alpha.test") is not None
        self.clock.advance(2)
        assert self.fetcher.cached("alpha.test") is None

    def test_get_key_refetches_for_unknown_key(self) -> None:
        """get_key asks again when the cached keys lack the key ID (rotation)."""
        self.successResultOf(self.fetcher.get_key("alpha.test", KEY.key_id))
        self.resource.body = json.dumps(key_doc(listed=(KEY, OTHER))).encode()
        key = self.successResultOf(self.fetcher.get_key("alpha.test", OTHER.key_id))
        assert bytes(key) == bytes(OTHER.key.verify_key)
        assert self.resource.hits == 2

    def test_get_key_not_listed(self) -> None:
        """get_key fails with KeyNotFound when the fresh response does not list the key."""
        failure = failure_now(self.fetcher.get_key("alpha.test", "ed25519:nope"))
        assert isinstance(failure.value, KeyNotFound)

    def test_one_fetch_in_flight(self) -> None:
        """Concurrent fetches of one server share one request."""
        self.agent.hang = True
        self.fetcher.fetch("alpha.test")
        self.fetcher.fetch("alpha.test")
        assert len(self.agent.uris) == 1

    def test_report_json_shape(self) -> None:
        """The report's JSON has exactly DESIGN.md's keys for `keys --json`."""
        report = self.successResultOf(self.fetcher.fetch_report("alpha.test"))
        assert report.to_json() == {
            "server_name": "alpha.test",
            "target": TARGET.to_json(),
            "valid_until_ts": NOW_MS + 86_400_000,
            "verify_keys": {KEY.key_id: KEY.verify_key_base64},
            "old_verify_keys": {},
            "signature_ok": True,
            "response": key_doc(),
            "error": None,
        }


# ---- bounded work per document (issue 12, row 2)


def many_signatures_doc(count: int) -> dict[str, Any]:
    """A valid document padded with ``count`` signatures by other servers."""
    doc = key_doc()
    for i in range(count):
        doc["signatures"][f"s{i}.test"] = {"ed25519:x": "A" * 86}
    return doc


class CountingEncoder:
    """signable_bytes, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, obj: Any) -> bytes:
        from stubserver.signing.keys import signable_bytes

        self.calls += 1
        return signable_bytes(obj)


def test_document_encoded_once_for_all_its_signatures() -> None:
    """A document signed by every one of its MAX_VERIFY_KEYS keys is encoded once, and
    exactly those signatures are checked (the old code encoded once per signature)."""
    from stubserver.server_keys.key_response_check import MAX_VERIFY_KEYS

    keys = tuple(ServerSigningKey.generate(f"k{i}") for i in range(MAX_VERIFY_KEYS))
    doc = key_doc(listed=keys, signer=None)
    for key in keys:
        doc = sign_json(doc, "alpha.test", key)
    encoder = CountingEncoder()
    check = check_key_response(doc, "alpha.test", NOW_MS, encode=encoder)
    assert check.error is None
    assert encoder.calls == 1
    assert check.signatures_checked == MAX_VERIFY_KEYS


def test_signatures_by_others_are_not_checked() -> None:
    """Signatures by other servers cost nothing: one encoding, one verification."""
    from stubserver.server_keys.key_response_check import MAX_SIGNATURES

    encoder = CountingEncoder()
    check = check_key_response(
        many_signatures_doc(MAX_SIGNATURES - 1), "alpha.test", NOW_MS, encode=encoder
    )
    assert check.error is None
    assert (encoder.calls, check.signatures_checked) == (1, 1)


@pytest.mark.parametrize("what", ["signatures", "verify_keys", "old_verify_keys"])
def test_absurd_counts_refused_without_cryptography(what: str) -> None:
    """A document with ~370 signatures (or too many keys) is refused before any encoding."""
    from stubserver.server_keys.key_response_check import MAX_OLD_VERIFY_KEYS, MAX_VERIFY_KEYS

    if what == "signatures":
        doc = many_signatures_doc(370)
    elif what == "verify_keys":
        doc = key_doc(extra_keys={f"ed25519:x{i}": {"key": "A"} for i in range(MAX_VERIFY_KEYS)})
    else:
        count = MAX_OLD_VERIFY_KEYS + 1
        old = {f"ed25519:o{i}": {"key": "A", "expired_ts": 1} for i in range(count)}
        doc = key_doc(old=old)
    encoder = CountingEncoder()
    check = check_key_response(doc, "alpha.test", NOW_MS, encode=encoder)
    assert what in (check.error or "")
    assert encoder.calls == 0


# ---- bounded cache in bytes (issue 12, row 3)


class WeightTests(SynchronousTestCase):
    def test_cache_weight_bounded(self) -> None:
        """Caching 500 distinct 60 KB key documents keeps the cache under MAX_KEY_CACHE_BYTES,
        and each entry is weighed at least at its body's size."""
        from stubserver.server_keys.fetcher import MAX_KEY_CACHE_BYTES

        clock = Clock()
        clock.advance(NOW_MS / 1000)

        class PerServer(Resource):
            isLeaf = True

            def render_GET(self, request: Request) -> bytes:
                # The agent turns matrix-federation://<name>/ into https://<name>/.
                name = request.getRequestHostname().decode()  # type: ignore[no-untyped-call]
                doc: dict[str, Any] = {
                    "server_name": name,
                    "valid_until_ts": NOW_MS + 86_400_000,
                    "verify_keys": {KEY.key_id: {"key": KEY.verify_key_base64}},
                    "old_verify_keys": {},
                    "pad": "p" * 60_000,
                }
                request.setHeader(b"content-type", b"application/json")  # type: ignore[no-untyped-call]
                return json.dumps(sign_json(doc, name, KEY)).encode()

        fetcher = ServerKeyFetcher(FakeFederationAgent(PerServer()), clock)  # type: ignore[no-untyped-call]
        for i in range(500):
            keys = self.successResultOf(fetcher.fetch(f"s{i}.test"))
            assert len(keys.response_bytes) > 60_000
        assert 0 < fetcher.cache_weight <= MAX_KEY_CACHE_BYTES
        assert fetcher.cache_weight > MAX_KEY_CACHE_BYTES // 2  # the bodies are weighed
        assert fetcher.cached("s499.test") is not None
        assert fetcher.cached("s0.test") is None  # least recently used, dropped


# ---- every error path ends in an answer (issue 12, row 5)


HOSTILE_BODIES = {
    "overflowing float": b'{"server_name": "alpha.test", "valid_until_ts": 1e400}',
    "lone surrogate": b'{"server_name": "alpha.test", "unsigned": {"x": "\\ud800"}}',
    "lone surrogate key": b'{"\\udc00": 1}',
    "not JSON": b"{",
}


@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
def test_hostile_body_is_a_clean_failure(body: bytes) -> None:
    """A key body with 1e400 or a lone surrogate escape fails the fetch cleanly (a
    KeyFetchError saying the JSON is refused), and a second caller is answered too."""
    clock = Clock()
    clock.advance(NOW_MS / 1000)
    resource = KeyResource()
    resource.body = body
    fetcher = ServerKeyFetcher(FakeFederationAgent(resource), clock)
    first = fetcher.fetch("alpha.test")
    second = fetcher.fetch_cached_or_fresh("alpha.test")
    for d in (first, second):
        failure = failure_now(d)
        assert isinstance(failure.value, KeyFetchError)
        assert "JSON" in str(failure.value)


def test_signed_document_with_hostile_unsigned_is_refused() -> None:
    """A correctly signed document whose (unsigned) extra holds a lone surrogate is refused
    at the parser, so it is never cached and never countersigned by the notary."""
    clock = Clock()
    clock.advance(NOW_MS / 1000)
    resource = KeyResource()
    resource.body = json.dumps(key_doc()).encode()[:-1] + b', "unsigned": {"x": "\\ud800"}}'
    fetcher = ServerKeyFetcher(FakeFederationAgent(resource), clock)
    failure = failure_now(fetcher.fetch("alpha.test"))
    assert "surrogate" in str(failure.value)
    assert fetcher.cached("alpha.test") is None


class BrokenTargetAgent(FakeFederationAgent):
    """An agent whose connected_target raises: an error of our own in the error path."""

    def connected_target(self, server_name: str) -> Target | None:
        raise RuntimeError("bug")


def test_error_in_error_path_still_answers() -> None:
    """Even an error raised while reporting a failure ends in an answer for every caller."""
    clock = Clock()
    agent = BrokenTargetAgent(KeyResource())
    agent.hang = True
    fetcher = ServerKeyFetcher(agent, clock)
    first = fetcher.fetch("alpha.test")
    second = fetcher.fetch("alpha.test")
    clock.advance(11)
    for d in (first, second):
        assert isinstance(failure_now(d).value, KeyFetchError)


def test_twenty_hostile_servers_cost_no_cryptography() -> None:
    """The reactor-stall case: 20 servers (a full notary query) each serving a document with
    370 signatures are all refused on the count, with no signature checked (the old code
    encoded each document 370 times, about 372 ms apiece)."""
    clock = Clock()
    clock.advance(NOW_MS / 1000)
    resource = KeyResource()
    resource.body = json.dumps(many_signatures_doc(370)).encode()
    fetcher = ServerKeyFetcher(FakeFederationAgent(resource), clock)
    reports = [failure_now(fetcher.fetch(f"s{i}.test")) for i in range(20)]
    for failure in reports:
        assert isinstance(failure.value, KeyFetchError)
        report = failure.value.report
        assert report is not None
        assert report.check.signatures_checked == 0
        assert "carries 371 signatures" in (report.check.error or "")
