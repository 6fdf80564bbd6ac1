"""A destination we could not reach, as typed failures: its name did not resolve
(:class:`ResolutionFailed`) or none of the targets it resolved to connected
(:class:`FederationConnectError`). ``temporary`` says whether a retry may help.

The outbound agent (:mod:`stubserver.outbound.agent`) raises them; the key fetcher and the
doctor catch them. They live here, beside the resolution they describe, so that catching
them does not import the outbound stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stubserver.discovery.resolution import Resolution, Target

#: Longest connection error message, in characters; what does not fit is counted.
MAX_ERROR_MESSAGE_CHARS = 1024


class ResolutionFailed(Exception):
    """The server name could not be resolved to a target with an address."""

    def __init__(self, resolution: Resolution) -> None:
        super().__init__(f"resolving {resolution.server_name}: {resolution.error}")
        self.resolution = resolution
        self.temporary = resolution.temporary


@dataclass(frozen=True)
class ConnectAttempt:
    """One failed dial: which target and address, and why."""

    target: Target
    address: str | None
    error: str
    #: True when retrying cannot help (a blocked address, an unusable certificate name).
    permanent: bool = False


class FederationConnectError(Exception):
    """No target of a destination could be connected to. Temporary unless every
    attempt was blocked."""

    def __init__(
        self, destination: str, attempts: Sequence[ConnectAttempt], *, not_tried: int = 0
    ) -> None:
        parts = [
            f"{a.target.host}:{a.target.port}"
            + (f" ({a.address})" if a.address and a.address != a.target.host else "")
            + f": {a.error}"
            for a in attempts
        ]
        if not_tried:
            parts.append(f"{not_tried} more address(es) not tried")
        super().__init__(
            bounded_message(f"cannot connect to {destination}: ", parts or ["no target"])
        )
        self.destination = destination
        self.attempts = tuple(attempts)
        self.temporary = not all(a.permanent for a in attempts)


def bounded_message(prefix: str, parts: Sequence[str], limit: int = MAX_ERROR_MESSAGE_CHARS) -> str:
    """``prefix`` and ``parts`` joined with "; " in at most ``limit`` characters: each part
    is cut to a quarter of the limit, and the parts that do not fit are left out and
    counted ("; ... and 12 more")."""
    part_limit = max(limit // 4, 1)
    text = prefix
    for index, whole in enumerate(parts):
        part = whole if len(whole) <= part_limit else whole[: part_limit - 3] + "..."
        piece = part if index == 0 else f"; {part}"
        after = len(parts) - index - 1
        reserve = len(f"; ... and {after} more") if after else 0
        if len(text) + len(piece) + reserve > limit:
            more = f"... and {len(parts) - index} more"
            return (text + (f"; {more}" if index else more))[:limit]
        text += piece
    return text
