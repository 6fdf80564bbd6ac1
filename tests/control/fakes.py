"""A fake :class:`~stubserver.rooms.port.RoomControl` recording every call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed

from stubserver.signing.canonical_json import JsonDict


class FakeRoomControl:
    """Answers each method with ``answers[name]`` (a dict, a Deferred, or an exception to
    raise, or to fail with when wrapped in a one-element tuple); records ``calls``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.answers: dict[str, Any] = {}

    @property
    def server_name(self) -> str:
        return "a.test"

    def _answer(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((method, args, kwargs))
        answer = self.answers.get(method, {"called": method})
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _deferred(self, method: str, /, *args: Any, **kwargs: Any) -> Deferred[JsonDict]:
        answer = self._answer(method, *args, **kwargs)
        if isinstance(answer, Deferred):
            return answer
        if isinstance(answer, tuple):
            failed: Deferred[JsonDict] = Deferred()
            failed.errback(answer[0])
            return failed
        return succeed(answer)

    def status(self) -> JsonDict:
        result: JsonDict = self._answer("status")
        return result

    def create_room(
        self,
        creator: str,
        *,
        room_version: str | None = None,
        preset: str | None = None,
        alias: str | None = None,
        name: str | None = None,
    ) -> Deferred[JsonDict]:
        return self._deferred(
            "create_room",
            creator,
            room_version=room_version,
            preset=preset,
            alias=alias,
            name=name,
        )

    def join(self, room: str, user: str, via: Sequence[str]) -> Deferred[JsonDict]:
        return self._deferred("join", room, user, list(via))

    def leave(self, room: str, user: str) -> Deferred[JsonDict]:
        return self._deferred("leave", room, user)

    def invite(self, room: str, sender: str, user_id: str) -> Deferred[JsonDict]:
        return self._deferred("invite", room, sender, user_id)

    def send(
        self,
        room: str,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        prev_events: Sequence[str] | None = None,
        auth_events: Sequence[str] | None = None,
        origin_server_ts: int | None = None,
        tamper: str | None = None,
        destinations: Sequence[str] | None = None,
    ) -> Deferred[JsonDict]:
        # destinations is recorded only when given (most tests do not use it).
        extra = {} if destinations is None else {"destinations": destinations}
        return self._deferred(
            "send",
            room,
            sender,
            event_type,
            dict(content),
            state_key=state_key,
            prev_events=prev_events,
            auth_events=auth_events,
            origin_server_ts=origin_server_ts,
            tamper=tamper,
            **extra,
        )

    def set_served(self, room: str, event_ids: Sequence[str], served: bool) -> Deferred[JsonDict]:
        return self._deferred("set_served", room, list(event_ids), served)

    def plant(
        self, room: str, sender: str, event_type: str, content_json: str
    ) -> Deferred[JsonDict]:
        return self._deferred("plant", room, sender, event_type, content_json)

    def resend(
        self, room: str, event_id: str, destinations: Sequence[str] | None = None
    ) -> Deferred[JsonDict]:
        return self._deferred("resend", room, event_id, destinations)

    def send_join_extra_state(
        self,
        room: str,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        *,
        state_key: str,
        tamper: str | None = None,
    ) -> Deferred[JsonDict]:
        return self._deferred(
            "send_join_extra_state",
            room,
            sender,
            event_type,
            dict(content),
            state_key=state_key,
            tamper=tamper,
        )

    def send_edu(self, room: str, edu_type: str, content: Mapping[str, Any]) -> Deferred[JsonDict]:
        return self._deferred("send_edu", room, edu_type, dict(content))

    def put_device(
        self,
        user: str,
        device_id: str,
        *,
        keys: Mapping[str, Any] | None = None,
        display_name: str | None = None,
    ) -> Deferred[JsonDict]:
        return self._deferred("put_device", user, device_id, keys=keys, display_name=display_name)

    def room_info(self, room: str) -> JsonDict:
        result: JsonDict = self._answer("room_info", room)
        return result

    def events(self, room: str, start: int, wait_ms: int) -> Deferred[JsonDict]:
        return self._deferred("events", room, start, wait_ms)

    def edus(self, start: int, wait_ms: int) -> Deferred[JsonDict]:
        return self._deferred("edus", start, wait_ms)

    def federation_request(
        self, destination: str, method: str, path: str, body: Any | None
    ) -> Deferred[JsonDict]:
        return self._deferred("federation_request", destination, method, path, body)
