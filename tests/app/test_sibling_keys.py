"""The servers of one ``run`` process know each other's keys from their key documents
(issue 23): no request for them; every other server's keys are fetched as before."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from nacl.signing import SigningKey
from twisted.internet.defer import Deferred

from stubserver.app.federation import LazyKeyFetcher
from stubserver.app.rooms_wiring import verify_key_lookup
from stubserver.app.run import compose
from stubserver.config import Config, ListenerConfig, OldVerifyKey
from stubserver.rooms.builder import EventSigner
from stubserver.rooms.create import build_in_room
from stubserver.rooms.event import Event
from stubserver.rooms.pdu_keys import verifier_for
from stubserver.rooms.transaction import signature_error
from stubserver.signing.keys import ServerSigningKey
from tests.rooms.room_fixtures import BOB, TS, new_room
from tests.support import FakeReactor, failure_now, result_now

FEDERATION = ListenerConfig(8448, ("127.0.0.1",), frozenset({"federation"}), Path("c"), Path("k"))
CONTROL = ListenerConfig(8009, ("127.0.0.1",), frozenset({"control"}), None, None)
#: b.test's current key (room_fixtures' B_SIGNER) and a retired one, expired after TS.
B_KEY = ServerSigningKey("b1", SigningKey(b"\x0b" * 32))
B_OLD = ServerSigningKey("b0", SigningKey(b"\x0d" * 32))
B_OLD_EXPIRED_TS = TS + 60_000
#: Outside the default blocklist's reach only through the real agent: a foreign server.
FOREIGN = "127.0.0.1:8448"


def process(*, with_sibling: bool = True) -> tuple[FakeReactor, LazyKeyFetcher]:
    """A process serving ``c.test`` (and ``b.test`` beside it); c.test's key fetcher."""
    reactor = FakeReactor()
    reactor.advance(TS / 1000)
    ours = Config(
        "c.test",
        (ServerSigningKey.generate("c1"),),
        (FEDERATION, CONTROL),
        control_token="tok",
        request_log_path=None,
    )
    sibling = replace(
        ours,
        server_name="b.test",
        signing_keys=(B_KEY,),
        old_signing_keys={B_OLD.key_id: OldVerifyKey(B_OLD.verify_key_base64, B_OLD_EXPIRED_TS)},
    )
    config = replace(ours, servers=(sibling,)) if with_sibling else ours
    return reactor, compose(config, reactor).servers[0].extensions.key_fetcher


def bobs_message(signer: EventSigner, ts: int = TS) -> Event:
    """A message of @bob:b.test signed by ``signer``."""
    room = new_room("12").room
    built = build_in_room(
        room, signer, sender=BOB, event_type="m.room.message", content={"body": "hi"}, now=ts
    )
    return built.event


def check(fetcher: LazyKeyFetcher, event: Event) -> str | None:
    """The signature error of ``event`` as a received PDU's is found, or None."""
    verify = result_now(Deferred.fromCoroutine(verifier_for(verify_key_lookup(fetcher), [event])))
    return signature_error(event, verify)


def test_a_siblings_keys_are_answered_without_a_request() -> None:
    """c.test asking for b.test's keys (fetch, cached or fresh, cached) gets b.test's
    current and old keys at once: no outbound stack is built, no connection made."""
    reactor, fetcher = process()
    for keys in (
        result_now(fetcher.fetch("b.test")),
        result_now(fetcher.fetch_cached_or_fresh("b.test")),
        fetcher.cached("b.test"),
    ):
        assert keys is not None and keys.server_name == "b.test"
        assert dict(keys.verify_keys) == {B_KEY.key_id: B_KEY.key.verify_key}
        assert dict(keys.old_verify_keys) == {
            B_OLD.key_id: (B_OLD.key.verify_key, B_OLD_EXPIRED_TS)
        }
    assert not fetcher.built
    assert reactor.tcpClients == []


def test_a_foreign_servers_keys_are_still_fetched() -> None:
    """A server the process does not serve is asked over the network, through the real
    agent (whose default blocklist refuses loopback)."""
    _, fetcher = process()
    failure = failure_now(fetcher.fetch(FOREIGN))
    assert fetcher.built
    assert "127.0.0.1 is in ip_range_blocklist" in str(failure.value)


def test_a_servers_own_keys_and_a_lone_servers_are_fetched_as_before() -> None:
    """A server's own name is not a sibling: it is fetched as before, and in a process
    of one server no name is known locally."""
    _, fetcher = process()
    assert fetcher.cached("c.test") is None
    fetcher.fetch("c.test").addErrback(lambda _: None)
    assert fetcher.built
    _, lone = process(with_sibling=False)
    assert lone.cached("b.test") is None
    lone.fetch("b.test").addErrback(lambda _: None)
    assert lone.built


def test_a_pdu_signed_by_a_sibling_verifies_and_a_wrong_signature_fails() -> None:
    """A PDU signed by b.test's current key verifies with the keys known from its
    document; one signed by its old key before that expired too; one signed by another
    key under b.test's key ID fails, as with fetched keys."""
    _, fetcher = process()
    assert check(fetcher, bobs_message(EventSigner("b.test", B_KEY.key_id, B_KEY.key))) is None
    old = EventSigner("b.test", B_OLD.key_id, B_OLD.key)
    assert check(fetcher, bobs_message(old)) is None
    wrong = EventSigner("b.test", B_KEY.key_id, SigningKey(b"\x0e" * 32))
    error = check(fetcher, bobs_message(wrong))
    assert error is not None and "unable to verify signature for sender domain b.test" in error
    assert not fetcher.built
