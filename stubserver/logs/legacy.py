"""Lines Twisted writes through its legacy ``log.msg`` unconditionally, at debug level.

``udp.Port`` and ``tcp.Port`` announce every bind ("<factory> starting on N") and every
close through ``twisted.python.log.msg``, with no ``noisy`` switch. That API takes a
message's level from the ``logLevel`` key of the log context (``log.msg(...,
logLevel=logging.DEBUG)``, or ``log.callWithContext``): :func:`at_debug_level` runs a call
in such a context. Kept apart from :mod:`stubserver.logs.quiet` so that ``run`` can use it
without importing the HTTP client and UDP machinery at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.python import log as legacy_log

_T = TypeVar("_T")


def at_debug_level(function: Callable[..., _T], *args: Any) -> _T:
    """``function(*args)``, with the legacy ``log.msg`` lines it writes at debug level.

    Only for Twisted code whose lines are lifecycle chatter: a legacy ``log.err`` inside
    would be demoted too (``logLevel`` wins over ``isError``), so the calls wrapped are
    ones that report their faults by raising.
    """
    result: _T = legacy_log.callWithContext(  # type: ignore[no-untyped-call]
        {"logLevel": logging.DEBUG}, function, *args
    )
    return result
