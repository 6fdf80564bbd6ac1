"""The preflight's verdicts, fed with the answers (or silences) of a fake homeserver: each
broken link is named at its step with ``stubserver check``'s hint, and nothing after it is
asked."""

from __future__ import annotations

from typing import Any

from stubserver.check.hints import HINT_AUTH_STRIPPED
from stubserver.conformance.preflight import (
    STEP_REACH,
    STEP_SIGNED,
    STEP_WAY_BACK,
    PreflightProblem,
    check_command,
    preflight,
)
from stubserver.outbound.signed_request import FederationIdentity
from stubserver.signing.keys import ServerSigningKey

IDENTITY = FederationIdentity("peer.test", ServerSigningKey.generate("a"))
MORE = f"For the whole diagnosis run {check_command('hs.test', 'peer.yaml')}."
KEYS = {"server_name": "hs.test", "verify_keys": {}}
NOTARY_OK = {
    "server_keys": [{"server_name": "peer.test", "verify_keys": {"ed25519:a": {"key": "k"}}}]
}


class FakeHomeserver:
    """Answers by path prefix: a (status, body), or an exception for no answer; records
    every request as (method, path, signed)."""

    def __init__(self, answers: dict[str, tuple[int, Any] | Exception]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str, bool]] = []

    def send(
        self, method: str, path: str, key: ServerSigningKey | None, body: Any
    ) -> tuple[int, Any]:
        self.asked.append((method, path.split("?", maxsplit=1)[0], key is not None))
        for prefix, answer in self.answers.items():
            if path.startswith(prefix):
                if isinstance(answer, Exception):
                    raise answer
                return answer
        return 404, {"errcode": "M_UNRECOGNIZED"}


def _run(fake: FakeHomeserver) -> list[PreflightProblem]:
    return preflight(
        fake.send,
        server_name="hs.test",
        address="10.0.0.1:8448",
        identity=IDENTITY,
        user_id="@alice:hs.test",
        more=MORE,
        now_ms=1_000,
    )


def test_a_homeserver_that_talks_both_ways_passes_after_three_requests() -> None:
    """Its keys (unsigned), our keys through its notary (signed), a signed profile query:
    all answered, no problem."""
    fake = FakeHomeserver(
        {
            "/_matrix/key/v2/server": (200, KEYS),
            "/_matrix/key/v2/query": (200, NOTARY_OK),
            "/_matrix/federation/v1/query/profile": (200, {"displayname": "alice"}),
        }
    )
    assert _run(fake) == []
    assert fake.asked == [
        ("GET", "/_matrix/key/v2/server", False),
        ("POST", "/_matrix/key/v2/query", True),
        ("GET", "/_matrix/federation/v1/query/profile", True),
    ]


def test_an_unreachable_homeserver_is_named_with_checks_unreachable_hint() -> None:
    """No answer to the first request: one problem at the reach step, with the address,
    the error, check's hint for an address that does not answer, and the check command."""
    fake = FakeHomeserver({"/_matrix/key/v2/server": TimeoutError("timed out")})
    [problem] = _run(fake)
    assert problem.step == STEP_REACH
    assert problem.error == "10.0.0.1:8448 did not answer: timed out"
    assert "Other servers cannot reach hs.test there" in problem.hint
    assert problem.hint.endswith("run `stubserver check hs.test -c peer.yaml`.")
    assert len(fake.asked) == 1


def test_a_homeserver_that_cannot_reach_the_peer_fails_at_the_way_back() -> None:
    """Its notary silent past the deadline (it is still trying to reach us), or answering
    without our keys: the way-back step with check's way-back hint; nothing signed asked."""
    silent = FakeHomeserver(
        {"/_matrix/key/v2/server": (200, KEYS), "/_matrix/key/v2/query": TimeoutError()}
    )
    [problem] = _run(silent)
    assert problem.step == STEP_WAY_BACK
    assert problem.error.startswith("no answer within 10 s")
    assert "hs.test could not fetch the keys of peer.test" in problem.hint
    assert len(silent.asked) == 2
    empty = FakeHomeserver(
        {
            "/_matrix/key/v2/server": (200, KEYS),
            "/_matrix/key/v2/query": (200, {"server_keys": []}),
        }
    )
    [problem] = _run(empty)
    assert problem.step == STEP_WAY_BACK
    assert problem.error == "the notary returned no keys for peer.test"


def test_a_refused_signed_request_gets_checks_verdict_on_the_401() -> None:
    """A 401 for a missing Authorization header: the signed-request step, with check's
    hint that a proxy strips the header."""
    fake = FakeHomeserver(
        {
            "/_matrix/key/v2/server": (200, KEYS),
            "/_matrix/key/v2/query": (200, NOTARY_OK),
            "/_matrix/federation/v1/query/profile": (
                401,
                {"errcode": "M_UNAUTHORIZED", "error": "Missing Authorization headers"},
            ),
        }
    )
    [problem] = _run(fake)
    assert problem.step == STEP_SIGNED
    assert problem.error == "401 Missing Authorization headers"
    assert problem.hint == f"{HINT_AUTH_STRIPPED} {MORE}"
