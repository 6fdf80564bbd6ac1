"""What the federation room endpoints tell the rest of the server: :class:`InboundHooks`.

The endpoints (``stubserver.rooms.routes_send``, ``stubserver.rooms.routes_membership``)
answer other servers at once; what follows from an answer (fetching the events a
transaction lacked, keeping its EDUs, waking long-polls) is the follow-up's
(``stubserver.rooms.followup.InboundFollowUp`` implements these hooks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from stubserver.rooms.store import ReceivedInvite
from stubserver.rooms.transaction import TransactionOutcome

#: Told about every processed (not replayed) transaction: EDUs, added and pending events.
TransactionHook = Callable[[str, TransactionOutcome], None]
#: Told about every accepted invite.
InviteHook = Callable[[ReceivedInvite], None]


class InboundHooks(Protocol):
    """Told about what the endpoints accepted."""

    def on_transaction(self, origin: str, outcome: TransactionOutcome) -> None:
        """A processed ``/send`` from ``origin`` (its EDUs, and the events pending on
        missing prev or auth events, for the follow-up to fetch)."""

    def on_invite(self, invite: ReceivedInvite) -> None:
        """An accepted invite (already remembered by the store)."""


@dataclass(frozen=True)
class CallbackHooks:
    """:class:`InboundHooks` from two optional callables (absent: nothing is told)."""

    transaction: TransactionHook | None = None
    invite: InviteHook | None = None

    def on_transaction(self, origin: str, outcome: TransactionOutcome) -> None:
        """Call ``transaction`` when there is one."""
        if self.transaction is not None:
            self.transaction(origin, outcome)

    def on_invite(self, invite: ReceivedInvite) -> None:
        """Call ``invite`` when there is one."""
        if self.invite is not None:
            self.invite(invite)


class HookRelay:
    """:class:`InboundHooks` passed on to the hooks attached later (until then nothing is
    told): the endpoints are built beside the service that follows them up."""

    def __init__(self) -> None:
        self._hooks: InboundHooks | None = None

    def attach(self, hooks: InboundHooks) -> None:
        """Tell ``hooks`` from now on."""
        self._hooks = hooks

    def on_transaction(self, origin: str, outcome: TransactionOutcome) -> None:
        """Passed on to the attached hooks."""
        if self._hooks is not None:
            self._hooks.on_transaction(origin, outcome)

    def on_invite(self, invite: ReceivedInvite) -> None:
        """Passed on to the attached hooks."""
        if self._hooks is not None:
            self._hooks.on_invite(invite)
