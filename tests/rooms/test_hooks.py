"""The hooks the federation room endpoints tell."""

from __future__ import annotations

from stubserver.rooms.hooks import CallbackHooks, HookRelay
from stubserver.rooms.store import ReceivedInvite
from stubserver.rooms.transaction import TransactionOutcome

OUTCOME = TransactionOutcome({"pdus": {}})


class Recorder:
    """InboundHooks that record what they are told."""

    def __init__(self) -> None:
        self.told: list[object] = []

    def on_transaction(self, origin: str, outcome: TransactionOutcome) -> None:
        self.told.append((origin, outcome))

    def on_invite(self, invite: ReceivedInvite) -> None:
        self.told.append(invite)


def test_a_relay_passes_on_to_the_hooks_attached() -> None:
    """Before anything is attached a relay tells nobody; then it tells the attached hooks."""
    relay = HookRelay()
    relay.on_transaction("b.test", OUTCOME)
    recorder = Recorder()
    relay.attach(recorder)
    relay.on_transaction("b.test", OUTCOME)
    assert recorder.told == [("b.test", OUTCOME)]


def test_callback_hooks_call_what_they_were_given() -> None:
    """CallbackHooks call the transaction callable, and ignore a missing one."""
    told: list[str] = []
    CallbackHooks(transaction=lambda origin, outcome: told.append(origin)).on_transaction(
        "b.test", OUTCOME
    )
    CallbackHooks().on_transaction("c.test", OUTCOME)
    assert told == ["b.test"]
