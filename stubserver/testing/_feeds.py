"""The control API's feeds (room events, EDUs, inbound requests): reads and waits.

:class:`ControlFeeds` is the part of :class:`~stubserver.testing.Peer` that reads the
three feeds: whole reads (no waiting) and ``wait_for_*`` long polls bounded by one
deadline, whose :class:`WaitTimeout` lists what did arrive. It needs one thing from its
subclass: a GET of the control API (:meth:`ControlFeeds._control_get`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final, TypeVar
from urllib.parse import quote, unquote, urlencode

from stubserver.testing._errors import WaitTimeout, summarize_request
from stubserver.testing._records import ReceivedEdu, RoomEvent

#: Default deadline of the ``wait_for_*`` methods, in seconds.
DEFAULT_WAIT_SECONDS: Final = 30.0
#: Longest one long poll asks the control API to wait (its own bound), in milliseconds.
MAX_POLL_MS: Final = 60_000
#: Time allowed on top of a long poll's wait for its answer to arrive, in seconds.
HTTP_MARGIN_SECONDS: Final = 30.0
#: Where the control API's paths start.
PREFIX: Final = "/_stubserver/v1"


def server_prefix(server_name: str) -> str:
    """Where the control paths of server ``server_name`` of a process serving several
    start (issue 23)."""
    return f"{PREFIX}/servers/{quote(server_name, safe=':')}"


_T = TypeVar("_T")


class ControlFeeds:
    """Reads and long-poll waits over the control API's feeds, for :class:`Peer`.

    A plain base class (no ABCMeta, so ``type(Peer)`` stays ``type``): a subclass
    provides :meth:`_control_get`, and may set ``_prefix``: where its server's control
    routes start (one server of several: ``/_stubserver/v1/servers/{name}``).
    """

    _prefix: str = PREFIX

    def _room_path(self, room: str) -> str:
        """The control API's path of ``room`` (an ID or an alias) on this server."""
        return f"{self._prefix}/rooms/{quote(room, safe='')}"

    def _control_get(self, operation: str, path: str, timeout: float) -> Any:
        """One GET of the control API: its JSON answer; a refusal raises ControlError."""
        raise NotImplementedError

    def _page(self, operation: str, path: str, start: int, wait_ms: int) -> Any:
        query = urlencode({"from": start, "wait_ms": wait_ms})
        return self._control_get(operation, f"{path}?{query}", wait_ms / 1000 + HTTP_MARGIN_SECONDS)

    def _read_all(self, operation: str, path: str, key: str, start: int) -> tuple[list[Any], int]:
        items: list[Any] = []
        while True:
            answer = self._page(operation, path, start, 0)
            page = answer[key]
            items.extend(page)
            if not page or answer["next"] == start:
                return items, int(answer["next"])
            start = int(answer["next"])

    def events(self, room: str, start: int = 0) -> list[RoomEvent]:
        """Every PDU ``room`` gained from position ``start``, in order (no waiting)."""
        items, _ = self._read_all(
            f"events {room}", f"{self._room_path(room)}/events", "events", start
        )
        return [_room_event(item, start + i) for i, item in enumerate(items)]

    def edus(self, start: int = 0) -> list[ReceivedEdu]:
        """Every EDU received from position ``start`` (no waiting)."""
        items, _ = self._read_all("edus", f"{self._prefix}/edus", "edus", start)
        return [_edu(item, start + i) for i, item in enumerate(items)]

    def requests(self, start: int = 0) -> list[dict[str, Any]]:
        """Every inbound federation request from position ``start`` (request log objects)."""
        items, _ = self._read_all("requests", f"{self._prefix}/requests", "requests", start)
        return list(items)

    def _wait(
        self,
        *,
        operation: str,
        path: str,
        key: str,
        convert: Callable[[Any, int], _T],
        matches: Callable[[_T], bool],
        describe: Callable[[_T], str],
        waited_for: str,
        start: int,
        timeout: float,
    ) -> _T:
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        position = start
        while True:
            remaining = deadline - time.monotonic()
            wait_ms = max(0, min(MAX_POLL_MS, int(remaining * 1000)))
            answer = self._page(operation, path, position, wait_ms)
            for index, raw in enumerate(answer[key]):
                item = convert(raw, position + index)
                if matches(item):
                    return item
                seen.append(describe(item))
            position = int(answer["next"])
            if time.monotonic() >= deadline:
                raise WaitTimeout(waited_for, timeout, seen)

    def wait_for_event(
        self,
        room: str,
        *,
        type: str | None = None,
        sender: str | None = None,
        state_key: str | None = None,
        event_id: str | None = None,
        match: Callable[[RoomEvent], bool] | None = None,
        start: int = 0,
        timeout: float = DEFAULT_WAIT_SECONDS,
    ) -> RoomEvent:
        """The first event of ``room`` from position ``start`` that matches every filter given.

        Looks from the room's first event by default, so an event that arrived before the
        call matches too (a test never races its own wait). Long-polls; on timeout raises
        :class:`WaitTimeout` listing the events that did arrive.
        """

        def matches(e: RoomEvent) -> bool:
            return (
                (type is None or e.type == type)
                and (sender is None or e.sender == sender)
                and (state_key is None or e.state_key == state_key)
                and (event_id is None or e.event_id == event_id)
                and (match is None or match(e))
            )

        filters = {"type": type, "sender": sender, "state_key": state_key, "event_id": event_id}
        wanted = ", ".join(f"{k}={v!r}" for k, v in filters.items() if v is not None)
        return self._wait(
            operation=f"events {room}",
            path=f"{self._room_path(room)}/events",
            key="events",
            convert=_room_event,
            matches=matches,
            describe=RoomEvent.summary,
            waited_for=f"an event in {room} ({wanted or 'any'}"
            f"{', and the match function' if match else ''})",
            start=start,
            timeout=timeout,
        )

    def wait_for_edu(
        self,
        edu_type: str,
        *,
        origin: str | None = None,
        match: Callable[[ReceivedEdu], bool] | None = None,
        start: int = 0,
        timeout: float = DEFAULT_WAIT_SECONDS,
    ) -> ReceivedEdu:
        """The first EDU of ``edu_type`` (from ``origin``) received; WaitTimeout lists the rest."""

        def matches(e: ReceivedEdu) -> bool:
            return (
                e.edu_type == edu_type
                and (origin is None or e.origin == origin)
                and (match is None or match(e))
            )

        return self._wait(
            operation="edus",
            path=f"{self._prefix}/edus",
            key="edus",
            convert=_edu,
            matches=matches,
            describe=ReceivedEdu.summary,
            waited_for=f"an EDU {edu_type!r} from {origin or 'any server'}",
            start=start,
            timeout=timeout,
        )

    def wait_for_request(
        self,
        path_prefix: str,
        *,
        method: str | None = None,
        match: Callable[[dict[str, Any]], bool] | None = None,
        start: int = 0,
        timeout: float = DEFAULT_WAIT_SECONDS,
    ) -> dict[str, Any]:
        """The first inbound request whose URI starts with ``path_prefix`` (request log
        object), percent-decoded or as sent, and that ``match`` accepts when given."""

        def matches(entry: dict[str, Any]) -> bool:
            uri = str(entry.get("uri", ""))
            return (
                (uri.startswith(path_prefix) or unquote(uri).startswith(path_prefix))
                and (method is None or entry.get("method") == method.upper())
                and (match is None or match(entry))
            )

        def convert(raw: Any, position: int) -> dict[str, Any]:
            return dict(raw)

        return self._wait(
            operation="requests",
            path=f"{self._prefix}/requests",
            key="requests",
            convert=convert,
            matches=matches,
            describe=summarize_request,
            waited_for=f"a {method or 'any-method'} request to {path_prefix}*",
            start=start,
            timeout=timeout,
        )


def _room_event(raw: Any, position: int) -> RoomEvent:
    return RoomEvent(
        raw["event_id"],
        raw["pdu"],
        raw.get("origin"),
        raw.get("outcome", ""),
        raw.get("reason"),
        position,
    )


def _edu(raw: Any, position: int) -> ReceivedEdu:
    content = raw.get("content")
    return ReceivedEdu(
        str(raw.get("origin")),
        str(raw.get("edu_type")),
        content if isinstance(content, dict) else {},
        position,
    )
