"""The reactor stubserver is handed: one interface for the Twisted reactor interfaces it uses.

Only ``main`` touches the global reactor (STYLE 1); everything else receives it. A function
that needs one interface takes that interface (``clock: IReactorTime``); one that needs
several (the outbound stack dials TCP, sets timers, asks DNS over UDP and the reactor's name
resolver; ``run`` also listens with TLS, runs the request log's writes in threads and adds
shutdown triggers) takes :class:`IReactor`, their union, as Synapse types its reactor
(``ISynapseReactor``). Twisted's reactors provide every one of these interfaces but do not
declare this union, so ``main`` states it once with :func:`global_reactor`; test fakes
declare it with ``@implementer(IReactor)``.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorPluggableNameResolver,
    IReactorSSL,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
    IReactorUDP,
)


class IReactor(
    IReactorCore,
    IReactorTime,
    IReactorTCP,
    IReactorSSL,
    IReactorUDP,
    IReactorThreads,
    IReactorPluggableNameResolver,
):
    """The reactor of ``stubserver run`` and of the outbound commands: time, TCP, TLS
    listening, UDP (DNS), threads (the request log's writer), the pluggable name resolver
    (system DNS for addresses) and the core (running, system event triggers)."""


def global_reactor() -> IReactor:
    """Twisted's global reactor, as an :class:`IReactor`. For ``main`` functions only."""
    from twisted.internet import reactor  # noqa: PLC0415 - only main touches the reactor

    return cast(IReactor, reactor)
