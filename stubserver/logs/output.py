"""The log's one observer, started once by ``main``: text lines on a stream, from a level up.

``stubserver run`` logs from ``info`` (``log_level`` in the config; ``--verbose`` is
``debug``), the short-lived commands from ``warn``. At ``info`` the log says what happened
to federation: the listeners, each outbound failure or retry and each inbound request
refused (one line each, naming the peer and the reason); the request log
(``request_log_path``) has every request. ``debug`` adds the details and the lines
:mod:`stubserver.logs.quiet` keeps out of the way.
"""

from __future__ import annotations

from typing import TextIO

#: The levels ``log_level`` may name, least severe first.
LOG_LEVELS = ("debug", "info", "warn", "error")


def start_logging(stream: TextIO, level: str) -> None:
    """Send twisted.logger events of ``level`` (one of ``LOG_LEVELS``) and above to
    ``stream``, once per process."""
    from twisted.logger import (  # noqa: PLC0415 - main only
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    if level not in LOG_LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LOG_LEVELS)}")
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(stream), [predicate])],
        redirectStandardIO=False,
    )
