"""A client of the homeserver under test's client-server API, for federation tests.

Just enough to drive the homeserver's side of a federation test: users (open
registration with the dummy stage, a registration token, Synapse's shared-secret admin
registration, a password login, or an access token given), rooms, membership, messages,
redactions, typing, receipts, ``/sync`` and reads. Synchronous and plain
(``http.client``); every non-2xx raises :class:`HomeserverError` with the answer.

Spec: Client-Server API v1.19; Synapse's admin API for ``/_synapse/admin/v1/register``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

from stubserver.http_json import HttpAnswer, HttpEndpoint, RawAnswer, TransportError
from stubserver.testing._errors import HomeserverError, HomeserverUnreachable, WaitTimeout

CLIENT_V3: Final = "/_matrix/client/v3"
ADMIN_REGISTER: Final = "/_synapse/admin/v1/register"
#: Time allowed for one request (a remote join makes the homeserver chain several), seconds.
REQUEST_TIMEOUT_SECONDS: Final = 120.0
#: Longest one ``/sync`` long poll waits, in milliseconds.
MAX_SYNC_WAIT_MS: Final = 30_000
#: Time allowed on top of a long poll's wait for its answer, in seconds.
HTTP_MARGIN_SECONDS: Final = 30.0
#: Default deadline of :meth:`HomeserverUser.wait_for_event`, in seconds.
DEFAULT_WAIT_SECONDS: Final = 30.0
#: How many user-interactive auth stages registration goes through before giving up.
MAX_AUTH_STAGES: Final = 5
#: Bytes of randomness in a generated password.
PASSWORD_BYTES: Final = 18
#: The user-interactive auth stages :meth:`Homeserver.register` can complete.
SUPPORTED_STAGES: Final = frozenset({"m.login.dummy", "m.login.registration_token"})


def registration_mac(
    shared_secret: str,
    nonce: str,
    username: str,
    password: str,
    *,
    admin: bool = False,
    user_type: str | None = None,
) -> str:
    """The ``mac`` of Synapse's shared-secret registration (pure).

    HMAC-SHA1 keyed with the shared secret over ``nonce``, ``username``, ``password``
    and ``admin``/``notadmin`` (then ``user_type`` when given), NUL-separated; hex.
    """
    mac = hmac.new(shared_secret.encode("utf-8"), digestmod=hashlib.sha1)
    parts = [nonce, username, password, "admin" if admin else "notadmin"]
    if user_type is not None:
        parts.append(user_type)
    mac.update(b"\x00".join(p.encode("utf-8") for p in parts))
    return mac.hexdigest()


def choose_auth_flow(flows: Sequence[Mapping[str, Any]]) -> list[str] | None:
    """The first flow whose every stage we can complete (pure); None when none is."""
    for flow in flows:
        stages = flow.get("stages")
        if isinstance(stages, list) and all(s in SUPPORTED_STAGES for s in stages):
            return [str(s) for s in stages]
    return None


class Homeserver:
    """The homeserver under test, at ``base_url`` (``https://hs.example:8448``, or ``http://``
    to a loopback address). ``ca_file`` verifies its certificate (else the system store)."""

    def __init__(
        self,
        base_url: str,
        *,
        server_name: str | None = None,
        ca_file: str | Path | None = None,
        allow_plain_http: bool = False,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self.base_url = base_url
        self._server_name = server_name
        self.endpoint = HttpEndpoint.from_url(
            base_url, ca_file=ca_file, allow_plain_http=allow_plain_http
        )
        self.timeout = timeout

    @property
    def server_name(self) -> str:
        """The homeserver's server name (given, or learnt from the first user's ID)."""
        if self._server_name is None:
            raise ValueError("the server name is not known yet: pass server_name=")
        return self._server_name

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        access_token: str | None = None,
        timeout: float | None = None,
        expect_ok: bool = True,
    ) -> HttpAnswer:
        """One request; HomeserverError on a non-2xx (unless not ``expect_ok``)."""
        headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
        try:
            answer = self.endpoint.request(
                method, path, body, headers=headers, timeout=timeout or self.timeout
            )
        except TransportError as e:
            raise HomeserverUnreachable(str(e)) from None
        if expect_ok and not answer.ok:
            raise HomeserverError(method, path, answer.status, answer.body)
        return answer

    def exchange(
        self,
        method: str,
        path: str,
        payload: bytes | None = None,
        *,
        content_type: str | None = None,
        access_token: str | None = None,
    ) -> RawAnswer:
        """One request with raw bytes both ways (media upload and download): the answer's
        status, headers and bytes, whatever the status."""
        headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        try:
            return self.endpoint.exchange(
                method, path, payload, headers=headers, timeout=self.timeout
            )
        except TransportError as e:
            raise HomeserverUnreachable(str(e)) from None

    def _user(self, answer: Mapping[str, Any]) -> HomeserverUser:
        user = HomeserverUser(
            self, str(answer["user_id"]), str(answer["access_token"]), answer.get("device_id")
        )
        if self._server_name is None:
            self._server_name = user.user_id.split(":", 1)[1]
        return user

    def user_with_token(self, access_token: str) -> HomeserverUser:
        """The user an existing access token belongs to (``/account/whoami``)."""
        answer = self.request("GET", f"{CLIENT_V3}/account/whoami", access_token=access_token)
        return self._user({**answer.body, "access_token": access_token})

    def login(self, username: str, password: str) -> HomeserverUser:
        """Log in with a password (``m.login.password``)."""
        body = {
            "type": "m.login.password",
            "password": password,
            "identifier": {"type": "m.id.user", "user": username},
        }
        return self._user(self.request("POST", f"{CLIENT_V3}/login", body).body)

    def register(
        self,
        username: str | None = None,
        password: str | None = None,
        *,
        registration_token: str | None = None,
    ) -> HomeserverUser:
        """Register through ``/register``, completing the dummy or registration-token stages.

        ``username`` None: a random one. Raises HomeserverError when registration is closed
        or needs a stage this client cannot complete (the error lists the flows).
        """
        body: dict[str, Any] = {
            "username": username or f"fed-{secrets.token_hex(6)}",
            "password": password or secrets.token_urlsafe(PASSWORD_BYTES),
            "initial_device_display_name": "stubserver.testing",
        }
        path = f"{CLIENT_V3}/register"
        answer = self.request("POST", path, body, expect_ok=False)
        for _ in range(MAX_AUTH_STAGES):
            if answer.ok:
                return self._user(answer.body)
            info = answer.body if isinstance(answer.body, dict) else {}
            if answer.status != 401 or "flows" not in info:
                raise HomeserverError("POST", path, answer.status, answer.body)
            flow = choose_auth_flow(info["flows"])
            if flow is None:
                raise HomeserverError("POST", path, answer.status, answer.body)
            completed = set(info.get("completed", []))
            stage = next(s for s in flow if s not in completed)
            auth: dict[str, Any] = {"type": stage, "session": info.get("session")}
            if stage == "m.login.registration_token":
                if registration_token is None:
                    raise ValueError("the homeserver wants a registration token: pass one")
                auth["token"] = registration_token
            answer = self.request("POST", path, {**body, "auth": auth}, expect_ok=False)
        raise HomeserverError("POST", path, answer.status, answer.body)

    def register_with_shared_secret(
        self,
        shared_secret: str,
        username: str | None = None,
        password: str | None = None,
        *,
        admin: bool = False,
    ) -> HomeserverUser:
        """Register through Synapse's admin API with its ``registration_shared_secret``."""
        nonce = self.request("GET", ADMIN_REGISTER).body["nonce"]
        name = username or f"fed-{secrets.token_hex(6)}"
        secret_password = password or secrets.token_urlsafe(PASSWORD_BYTES)
        body = {
            "nonce": nonce,
            "username": name,
            "password": secret_password,
            "admin": admin,
            "mac": registration_mac(shared_secret, nonce, name, secret_password, admin=admin),
        }
        return self._user(self.request("POST", ADMIN_REGISTER, body).body)


def _room(room: str) -> str:
    return quote(room, safe="")


class HomeserverUser:
    """One user of the homeserver under test, acting with its access token.

    :meth:`sync` remembers ``next_batch``: each call continues from the last (pass
    ``since=`` to override). Event-sending methods answer the new event's ID.
    """

    def __init__(
        self, homeserver: Homeserver, user_id: str, access_token: str, device_id: str | None
    ) -> None:
        self.homeserver = homeserver
        self.user_id = user_id
        self.access_token = access_token
        self.device_id = device_id
        self.since: str | None = None
        self._txn = itertools.count()
        self._txn_prefix = secrets.token_hex(4)

    def _call(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        return self.homeserver.request(
            method, f"{CLIENT_V3}{path}", body, access_token=self.access_token, timeout=timeout
        ).body

    def _txn_id(self) -> str:
        return f"{self._txn_prefix}-{next(self._txn)}"

    # -- rooms and membership ------------------------------------------------------------

    def create_room(
        self,
        *,
        preset: str | None = "public_chat",
        room_version: str | None = None,
        alias: str | None = None,
        name: str | None = None,
        invite: Sequence[str] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """``POST /createRoom``; the room ID. ``alias`` is a localpart."""
        body: dict[str, Any] = {
            "preset": preset,
            "room_version": room_version,
            "room_alias_name": alias,
            "name": name,
            "invite": list(invite) or None,
        }
        body = {k: v for k, v in body.items() if v is not None}
        body.update(extra or {})
        return str(self._call("POST", "/createRoom", body)["room_id"])

    def join(self, room: str, via: Sequence[str] = ()) -> str:
        """``POST /join/{room}`` (ID or alias) through the ``via`` servers; the room ID."""
        query = (
            "?" + urlencode([("via", s) for s in via] + [("server_name", s) for s in via])
            if via
            else ""
        )
        return str(self._call("POST", f"/join/{_room(room)}{query}", {})["room_id"])

    def invite(self, room: str, user_id: str) -> None:
        """``POST /rooms/{room}/invite``."""
        self._call("POST", f"/rooms/{_room(room)}/invite", {"user_id": user_id})

    def leave(self, room: str) -> None:
        """``POST /rooms/{room}/leave``."""
        self._call("POST", f"/rooms/{_room(room)}/leave", {})

    # -- events ----------------------------------------------------------------------------

    def send(
        self, room: str, type: str, content: Mapping[str, Any], txn_id: str | None = None
    ) -> str:
        """``PUT /rooms/{room}/send/{type}/{txnId}``; the event ID."""
        txn = txn_id or self._txn_id()
        path = f"/rooms/{_room(room)}/send/{quote(type, safe='')}/{quote(txn, safe='')}"
        return str(self._call("PUT", path, dict(content))["event_id"])

    def send_message(self, room: str, text: str) -> str:
        """An ``m.text`` message; its event ID."""
        return self.send(room, "m.room.message", {"msgtype": "m.text", "body": text})

    def send_state(
        self, room: str, type: str, content: Mapping[str, Any], state_key: str = ""
    ) -> str:
        """``PUT /rooms/{room}/state/{type}/{stateKey}``; the event ID."""
        path = f"/rooms/{_room(room)}/state/{quote(type, safe='')}/{quote(state_key, safe='')}"
        return str(self._call("PUT", path, dict(content))["event_id"])

    def redact(self, room: str, event_id: str, reason: str | None = None) -> str:
        """``PUT /rooms/{room}/redact/{eventId}/{txnId}``; the redaction's event ID."""
        path = f"/rooms/{_room(room)}/redact/{quote(event_id, safe='')}/{self._txn_id()}"
        body = {"reason": reason} if reason is not None else {}
        return str(self._call("PUT", path, body)["event_id"])

    def typing(self, room: str, typing: bool = True, timeout_ms: int = 30_000) -> None:
        """``PUT /rooms/{room}/typing/{userId}``."""
        body: dict[str, Any] = {"typing": typing}
        if typing:
            body["timeout"] = timeout_ms
        self._call("PUT", f"/rooms/{_room(room)}/typing/{quote(self.user_id, safe='')}", body)

    def receipt(self, room: str, event_id: str, receipt_type: str = "m.read") -> None:
        """``POST /rooms/{room}/receipt/{type}/{eventId}``."""
        path = (
            f"/rooms/{_room(room)}/receipt/{quote(receipt_type, safe='')}/"
            f"{quote(event_id, safe='')}"
        )
        self._call("POST", path, {})

    # -- reads -----------------------------------------------------------------------------

    def sync(
        self,
        *,
        timeout_ms: int = 0,
        since: str | None = None,
        full_state: bool = False,
        filter: str | None = None,
    ) -> dict[str, Any]:
        """``GET /sync`` from ``since`` (default: where the last sync ended); remembers
        the answer's ``next_batch`` for the next call."""
        params: dict[str, str] = {"timeout": str(min(timeout_ms, MAX_SYNC_WAIT_MS))}
        start = since if since is not None else self.since
        if start is not None:
            params["since"] = start
        if full_state:
            params["full_state"] = "true"
        if filter is not None:
            params["filter"] = filter
        answer: dict[str, Any] = self._call(
            "GET",
            f"/sync?{urlencode(params)}",
            timeout=min(timeout_ms, MAX_SYNC_WAIT_MS) / 1000 + HTTP_MARGIN_SECONDS,
        )
        self.since = str(answer["next_batch"])
        return answer

    def members(self, room: str) -> dict[str, str]:
        """``GET /rooms/{room}/members``: user ID to membership."""
        answer = self._call("GET", f"/rooms/{_room(room)}/members")
        return {e["state_key"]: e["content"]["membership"] for e in answer["chunk"]}

    def event(self, room: str, event_id: str) -> dict[str, Any]:
        """``GET /rooms/{room}/event/{eventId}``."""
        result: dict[str, Any] = self._call(
            "GET", f"/rooms/{_room(room)}/event/{quote(event_id, safe='')}"
        )
        return result

    def state(self, room: str) -> list[dict[str, Any]]:
        """``GET /rooms/{room}/state``."""
        result: list[dict[str, Any]] = self._call("GET", f"/rooms/{_room(room)}/state")
        return result

    def messages(
        self, room: str, *, dir: str = "b", limit: int = 50, from_token: str | None = None
    ) -> dict[str, Any]:
        """``GET /rooms/{room}/messages``."""
        params = {"dir": dir, "limit": str(limit)}
        if from_token is not None:
            params["from"] = from_token
        result: dict[str, Any] = self._call(
            "GET", f"/rooms/{_room(room)}/messages?{urlencode(params)}"
        )
        return result

    def wait_for_event(
        self,
        room: str,
        *,
        type: str | None = None,
        sender: str | None = None,
        event_id: str | None = None,
        match: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = DEFAULT_WAIT_SECONDS,
    ) -> dict[str, Any]:
        """The first event in ``room``'s timeline (or state) in ``/sync`` that matches,
        from where this user's syncs stand; WaitTimeout lists the events that came."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            remaining = deadline - time.monotonic()
            answer = self.sync(timeout_ms=max(0, int(remaining * 1000)))
            for event in room_events(answer, room):
                if (
                    (type is None or event.get("type") == type)
                    and (sender is None or event.get("sender") == sender)
                    and (event_id is None or event.get("event_id") == event_id)
                    and (match is None or match(event))
                ):
                    return event
                seen.append(
                    f"{event.get('event_id')} {event.get('type')} from {event.get('sender')}"
                )
            if time.monotonic() >= deadline:
                filters = {"type": type, "sender": sender, "event_id": event_id}
                wanted = ", ".join(f"{k}={v!r}" for k, v in filters.items() if v is not None)
                raise WaitTimeout(
                    f"an event in {room} via /sync ({wanted or 'any'})", timeout, seen
                )


def room_events(sync_answer: Mapping[str, Any], room_id: str) -> list[dict[str, Any]]:
    """The state and timeline events of ``room_id`` in a ``/sync`` answer, joined or
    invited or left (pure)."""
    rooms = sync_answer.get("rooms") or {}
    events: list[dict[str, Any]] = []
    for section in ("join", "leave"):
        room = (rooms.get(section) or {}).get(room_id) or {}
        events += (room.get("state") or {}).get("events") or []
        events += (room.get("timeline") or {}).get("events") or []
    invited = (rooms.get("invite") or {}).get(room_id) or {}
    events += (invited.get("invite_state") or {}).get("events") or []
    return events
