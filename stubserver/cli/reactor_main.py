"""The one way a short-lived command runs asynchronous work: ``react_main(body)``.

Only these functions touch the global reactor and the global log beginner; the work
itself receives the reactor as an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TextIO

from stubserver.reactor import IReactor

#: Exit status when the body crashed rather than returning one.
EXIT_CRASHED = 1


def start_warning_logging(stream: TextIO) -> None:
    """Send twisted.logger events of level warn and above to ``stream``, once per process."""
    from twisted.logger import (  # noqa: PLC0415 - main only
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(stream), [predicate])],
        redirectStandardIO=False,
    )


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
