"""The reactor stubserver is handed: one interface for the Twisted reactor interfaces it uses.

Only ``main`` touches the global reactor (STYLE 1); everything else receives it. A function
that needs one interface takes that interface (``clock: IReactorTime``); one that needs
several (the outbound stack dials TCP, sets timers, asks DNS over UDP and the reactor's name
resolver; ``run`` also listens with TLS, runs the request log's writes in threads and adds
shutdown triggers) takes :class:`IReactor`, their union, as Synapse types its reactor
(``ISynapseReactor``). Twisted's reactors provide every one of these interfaces but do not
declare this union, so ``main`` states it once with :func:`global_reactor`; test fakes
declare it with ``@implementer(IReactor)``.

The functions here are the only ones that touch the global reactor and the global log
beginner: :func:`global_reactor` for ``run``, and :func:`react_main`, the one way a
short-lived command (or the demo's checks) runs asynchronous work.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TextIO, cast

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


#: Exit status when the body crashed rather than returning one.
EXIT_CRASHED = 1


def start_warning_logging(stream: TextIO) -> None:
    """Send twisted.logger events of level warn and above to ``stream``, once per process."""
    from stubserver.logs.output import start_logging  # noqa: PLC0415 - main only

    start_logging(stream, "warn")


def react_main(body: Callable[[IReactor], Coroutine[Any, Any, int]]) -> int:
    """Run ``body(reactor)`` under ``task.react`` and return the exit status it returns."""
    from twisted.internet import task  # noqa: PLC0415 - only main touches the reactor
    from twisted.internet.defer import Deferred  # noqa: PLC0415

    status = [EXIT_CRASHED]

    async def wrapped(reactor: IReactor) -> None:
        status[0] = await body(reactor)

    try:
        task.react(lambda reactor: Deferred.fromCoroutine(wrapped(reactor)))
    except SystemExit as e:
        if e.code not in (0, None):
            return EXIT_CRASHED
    return status[0]
