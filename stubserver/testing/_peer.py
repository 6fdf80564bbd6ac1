"""``Peer``: a running stubserver, driven through its control API, as a context manager."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import quote

from stubserver.http_json import HttpEndpoint, TransportError
from stubserver.testing._errors import (
    ControlError,
    ControlUnreachable,
    StrictModeViolation,
    summarize_request,
)
from stubserver.testing._faults import PeerFaults
from stubserver.testing._feeds import PREFIX, ControlFeeds, server_prefix
from stubserver.testing._files import CONTROL_BIND, PeerFiles, choose_identity, write_peer_files
from stubserver.testing._process import (
    READY_TIMEOUT_SECONDS,
    STOP_TIMEOUT_SECONDS,
    AttachedProcess,
    MemberProcess,
    PeerProcess,
)
from stubserver.testing._records import CreatedRoom, FederationAnswer, JoinedRoom
from stubserver.testing._strict import unexpected_requests

if TYPE_CHECKING:
    from stubserver.testing._group import PeerGroup

#: The localpart of the peer's user when a method is not told another.
DEFAULT_USER: Final = "stubserver"
#: Time allowed for an operation (a remote join chains several requests), in seconds.
OPERATION_TIMEOUT_SECONDS: Final = 120.0
#: Lines of stderr a failure report shows.
REPORT_STDERR_LINES: Final = 40
#: Requests a failure report lists (the last ones).
REPORT_REQUESTS: Final = 20


class Peer(ControlFeeds, PeerFaults):
    """A running ``stubserver run`` with a federation listener and a control listener.

    Start one with :meth:`start`; use it as a context manager (or call :meth:`close`) to
    stop it. Every method is synchronous and maps to one control API operation (DESIGN.md,
    "Rooms and the control API"); a refusal raises :class:`ControlError`, a wait that
    times out :class:`WaitTimeout` listing what did arrive.

    ``strict``: at :meth:`close`, fail (:class:`StrictModeViolation`) when the peer
    received a request to a path it does not serve or under a prefix declared unexpected
    (``unexpected`` at start, or :meth:`declare_unexpected`).
    """

    def __init__(
        self,
        files: PeerFiles,
        process: PeerProcess | AttachedProcess | MemberProcess,
        *,
        strict: bool = False,
        unexpected: Sequence[str] = (),
        control_prefix: str = PREFIX,
    ) -> None:
        """``control_prefix``: where the server's control routes start (one server of a
        :class:`PeerGroup`: ``/_stubserver/v1/servers/{name}``)."""
        self._prefix = control_prefix
        self.files = files
        self.process = process
        self.strict = strict
        self._unexpected = list(unexpected)
        self._closed = False
        control = [e for e in process.ready["listeners"] if "control" in e["resources"]]
        federation = [e for e in process.ready["listeners"] if "federation" in e["resources"]]
        self.control_port: int = int(control[0]["port"])
        self.federation_address: str = str(federation[0]["address"])
        self.federation_port: int = int(federation[0]["port"])
        control_host = str(control[0].get("address") or CONTROL_BIND)
        self._control = HttpEndpoint("http", control_host, self.control_port, None)

    @classmethod
    def start(
        cls,
        directory: str | Path,
        *,
        server_name: str | None = None,
        bind: str = "127.0.0.1",
        port: int | None = None,
        ca: tuple[str | Path, str | Path] | None = None,
        dns_servers: Sequence[str] = (),
        allow_ips: Sequence[str] = (),
        ca_files: Sequence[str | Path] = (),
        tls_names: Sequence[str] = (),
        room_version: str | None = None,
        invites: str = "accept",
        users: Mapping[str, Mapping[str, Any]] | None = None,
        extra_config: Mapping[str, Any] | None = None,
        strict: bool = False,
        unexpected: Sequence[str] = (),
        timeout: float = READY_TIMEOUT_SECONDS,
        python: str | None = None,
    ) -> Peer:
        """Write keys, a certificate and a config into ``directory``; start; wait until ready.

        ``server_name`` None: ``<bind>:<free port>``, reachable without DNS. A name with a
        port binds that port; a name without one binds ``port`` (default 8448, the spec's).
        ``ca`` is ``(cert_path, key_path)`` of the CA that issues the certificate (None:
        one is made and written as ``directory/ca.crt``, shared by every peer started in
        that directory). The peer trusts that CA and ``ca_files`` for outbound federation;
        it resolves names with ``dns_servers`` (``HOST:PORT``; none: the system's) and may
        dial the ``allow_ips`` (CIDRs; loopback needs ``127.0.0.0/8``). ``users`` are
        the profiles it answers; ``extra_config`` is merged into the config's top level.
        Raises :class:`PeerStartFailed` with its stderr when not ready within ``timeout`` s.
        """
        name, bound_port = choose_identity(server_name, bind, port)
        files = write_peer_files(
            Path(directory),
            server_name=name,
            bind=bind,
            port=bound_port,
            ca=ca,
            dns_servers=dns_servers,
            allow_ips=allow_ips,
            ca_files=ca_files,
            tls_name_list=tls_names,
            room_version=room_version,
            invites=invites,
            users=users,
            extra_config=extra_config,
        )
        process = PeerProcess.start(files.config_path, timeout=timeout, python=python)
        return cls(files, process, strict=strict, unexpected=unexpected)

    @classmethod
    def start_many(
        cls,
        directory: str | Path,
        count: int,
        *,
        template: str | None = None,
        bind: str = "127.0.0.1",
        port: int | None = None,
        ca: tuple[str | Path, str | Path] | None = None,
        dns_servers: Sequence[str] = (),
        allow_ips: Sequence[str] = (),
        ca_files: Sequence[str | Path] = (),
        room_version: str | None = None,
        invites: str = "accept",
        users: Mapping[str, Mapping[str, Any]] | None = None,
        extra_config: Mapping[str, Any] | None = None,
        strict: bool = False,
        unexpected: Sequence[str] = (),
        timeout: float = READY_TIMEOUT_SECONDS,
        python: str | None = None,
    ) -> PeerGroup:
        """``count`` servers served by one ``stubserver run`` (issue 23), as a
        :class:`PeerGroup` of peers that each behave as :meth:`start`'s.

        ``template`` None: each server is named ``<bind>:<free port>`` and listens there
        (reachable without DNS). A ``template`` with ``{i}`` (``s{i}.test``, or
        ``s{i}.test:8448`` with a port) names servers 1 to ``count``, all on one
        listener at ``bind`` (the template's port, else ``port``, else 8448), told apart
        by SNI and Host: reaching them needs their names in DNS (``dns_servers``).
        Certificates come from one CA (``ca``, or one made in ``directory``); the other
        keywords are :meth:`start`'s, for every server.
        """
        from stubserver.testing._group import GroupOptions, start_group  # noqa: PLC0415

        options = GroupOptions(
            ca=ca,
            dns_servers=tuple(dns_servers),
            allow_ips=tuple(allow_ips),
            ca_files=tuple(ca_files),
            room_version=room_version,
            invites=invites,
            users=users,
            extra_config=extra_config,
        )
        return start_group(
            Path(directory),
            count,
            template=template,
            bind=bind,
            port=port,
            options=options,
            strict=strict,
            unexpected=unexpected,
            timeout=timeout,
            python=python,
        )

    @classmethod
    def attach(cls, config_path: str | Path) -> Peer:
        """Drive a peer that is already running, from its config file.

        The control API is reached at the config's control listener (its first bind
        address, loopback for a wildcard one, and its port) with its ``control_token``;
        closing an attached peer does not stop it. Raises ``ConfigError`` for a config
        that does not load, and ValueError when it has no control listener or token.
        """
        from stubserver.config import load_config  # noqa: PLC0415 - only attach needs it

        path = Path(config_path)
        config = load_config(path)
        control = [lc for lc in config.listeners if lc.is_control]
        federation = [lc for lc in config.listeners if "federation" in lc.resources]
        if not control or not config.control_token:
            raise ValueError(f"{path}: no control listener with a control_token to attach to")
        host = _connectable(control[0].bind_addresses[0] if control[0].bind_addresses else "")
        fed_binds = federation[0].bind_addresses if federation else ()
        fed_host = fed_binds[0] if fed_binds else ""
        fed_port = federation[0].port if federation else 0
        ready = {
            "listeners": [
                {"address": host, "port": control[0].port, "resources": ["control"]},
                {"address": fed_host, "port": fed_port, "resources": ["federation"]},
            ]
        }
        ca_files = config.federation.ca_files
        files = PeerFiles(
            server_name=config.server_name,
            config_path=path,
            request_log_path=config.request_log_path or path.with_suffix(".requests.jsonl"),
            ca_cert_path=ca_files[0] if ca_files else path,
            control_token=config.control_token,
            port=fed_port,
        )
        return cls(files, AttachedProcess(ready, path))

    # -- identity ---------------------------------------------------------------------------

    @property
    def server_name(self) -> str:
        """The peer's server name."""
        return self.files.server_name

    @property
    def ca_cert_path(self) -> Path:
        """The CA certificate that issued the peer's certificate (for the homeserver to trust)."""
        return self.files.ca_cert_path

    @property
    def config_path(self) -> Path:
        """The peer's config file (``stubserver room ... -c`` works with it too)."""
        return self.files.config_path

    def user_id(self, localpart: str = DEFAULT_USER) -> str:
        """``@localpart:server_name``."""
        return f"@{localpart}:{self.server_name}"

    # -- the control API --------------------------------------------------------------------

    def _call(
        self,
        operation: str,
        method: str,
        path: str,
        body: Any = None,
        timeout: float = OPERATION_TIMEOUT_SECONDS,
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.files.control_token}"}
        try:
            answer = self._control.request(method, path, body, headers=headers, timeout=timeout)
        except TransportError as e:
            state = "running" if self.process.running else "exited"
            raise ControlUnreachable(f"{operation}: {e} (the peer has {state})") from None
        if answer.ok:
            return answer.body
        fields = answer.body if isinstance(answer.body, dict) else {}
        raise ControlError(
            operation,
            answer.status,
            errcode=fields.get("errcode"),
            error=fields.get("error"),
            remote_status=fields.get("remote_status"),
            remote_body=fields.get("remote_body"),
        )

    def _control_get(self, operation: str, path: str, timeout: float) -> Any:
        return self._call(operation, "GET", path, timeout=timeout)

    def status(self) -> dict[str, Any]:
        """``{"server_name", "room_versions", "rooms"}``."""
        result: dict[str, Any] = self._call("status", "GET", f"{self._prefix}/status")
        return result

    def create_room(
        self,
        creator: str = DEFAULT_USER,
        *,
        room_version: str | None = None,
        preset: str | None = None,
        alias: str | None = None,
        name: str | None = None,
    ) -> CreatedRoom:
        """Host a new room as ``creator`` (a localpart).

        ``preset`` is ``public_chat`` or ``private_chat``; ``alias`` a localpart.
        """
        body = {
            "creator": creator,
            "room_version": room_version,
            "preset": preset,
            "alias": alias,
            "name": name,
        }
        answer = self._call(
            "create_room",
            "POST",
            f"{self._prefix}/rooms",
            {k: v for k, v in body.items() if v is not None},
        )
        return CreatedRoom(answer["room_id"], answer["room_version"], tuple(answer["event_ids"]))

    def join(self, room: str, user: str = DEFAULT_USER, via: Sequence[str] = ()) -> JoinedRoom:
        """Join ``room`` (ID or alias) as ``user``, through the ``via`` servers when remote."""
        answer = self._call(
            f"join {room}",
            "POST",
            f"{self._room_path(room)}/join",
            {"user": user, "via": list(via)},
        )
        return JoinedRoom(answer["room_id"], answer["room_version"], answer["event_id"])

    def leave(self, room: str, user: str = DEFAULT_USER) -> str:
        """Leave ``room`` as ``user``; the leave event's ID."""
        answer = self._call(
            f"leave {room}", "POST", f"{self._room_path(room)}/leave", {"user": user}
        )
        return str(answer["event_id"])

    def invite(self, room: str, user_id: str, sender: str = DEFAULT_USER) -> str:
        """Invite ``user_id`` (of any server) as ``sender``; the invite event's ID."""
        answer = self._call(
            f"invite {user_id} to {room}",
            "POST",
            f"{self._room_path(room)}/invite",
            {"sender": sender, "user_id": user_id},
        )
        return str(answer["event_id"])

    def send(
        self,
        room: str,
        type: str,
        content: Mapping[str, Any],
        *,
        sender: str = DEFAULT_USER,
        state_key: str | None = None,
        prev_events: Sequence[str] | None = None,
        auth_events: Sequence[str] | None = None,
        origin_server_ts: int | None = None,
        tamper: str | None = None,
        destinations: Sequence[str] | None = None,
    ) -> str:
        """Send an event to every other server in ``room``; its event ID.

        ``destinations``: only to these servers (``[]`` withholds it, so that a later event
        makes the others fetch it with ``get_missing_events``).

        ``prev_events``, ``auth_events``, ``origin_server_ts`` and ``tamper``
        (``"signature"`` or ``"content"``: sent broken on purpose) are for negative tests.
        """
        body: dict[str, Any] = {"sender": sender, "type": type, "content": dict(content)}
        optional = {
            "state_key": state_key,
            "prev_events": prev_events,
            "auth_events": auth_events,
            "origin_server_ts": origin_server_ts,
            "tamper": tamper,
            "destinations": destinations,
        }
        body.update(
            {
                k: v if not isinstance(v, tuple) else list(v)
                for k, v in optional.items()
                if v is not None
            }
        )
        answer = self._call(f"send {type} to {room}", "POST", f"{self._room_path(room)}/send", body)
        return str(answer["event_id"])

    def send_join_extra_state(
        self,
        room: str,
        type: str,
        content: Mapping[str, Any],
        *,
        state_key: str,
        sender: str = DEFAULT_USER,
        tamper: str | None = None,
    ) -> str:
        """Make every later ``send_join`` answer of ``room`` (a room we hold) carry one
        more state event of ``sender``'s, never added to the room nor sent, broken as
        ``tamper`` says (``"unsigned"``, ``"signature"``, ``"unknown_key"``,
        ``"content"``; None: not broken); an earlier extra of the same type and state
        key moves to the answer's ``auth_chain``. Its event ID."""
        body: dict[str, Any] = {
            "sender": sender,
            "type": type,
            "content": dict(content),
            "state_key": state_key,
        }
        if tamper is not None:
            body["tamper"] = tamper
        answer = self._call(
            f"send_join_extra_state {type} to {room}",
            "POST",
            f"{self._room_path(room)}/send_join_extra_state",
            body,
        )
        return str(answer["event_id"])

    def send_message(self, room: str, text: str, *, sender: str = DEFAULT_USER) -> str:
        """Send an ``m.room.message`` with ``msgtype`` ``m.text``; its event ID."""
        return self.send(room, "m.room.message", {"msgtype": "m.text", "body": text}, sender=sender)

    def set_served(self, room: str, event_ids: Sequence[str], *, served: bool) -> list[str]:
        """Refuse (``served=False``) or go back to serving events of ``room`` over
        federation: a refused event is 404 on ``/event``, ``/state``, ``/state_ids`` and
        ``/event_auth`` and left out of the ``/state``, ``/event_auth``, ``/backfill`` and
        ``get_missing_events`` answers (``/state_ids`` still lists its ID). Every event
        of the room refused now."""
        answer = self._call(
            f"serving {room}",
            "POST",
            f"{self._room_path(room)}/serving",
            {"event_ids": list(event_ids), "served": served},
        )
        return [str(e) for e in answer["refused"]]

    def plant(self, room: str, type: str, content_json: str, *, sender: str = DEFAULT_USER) -> str:
        """Plant our non-state event of ``type`` whose content is the JSON text
        ``content_json`` (a float, an integer out of range: what canonical JSON forbids),
        built on the room's forward extremities, hashed over that text and signed; not
        sent, but served in the ``get_missing_events`` answers that walk through it, and
        ``send``'s ``prev_events`` may name it. Its event ID."""
        answer = self._call(
            f"plant {type} in {room}",
            "POST",
            f"{self._room_path(room)}/plant",
            {"sender": sender, "type": type, "content_json": content_json},
        )
        return str(answer["event_id"])

    def resend(
        self, room: str, event_id: str, *, destinations: Sequence[str] | None = None
    ) -> None:
        """Send our event ``event_id`` again, in a new transaction, to every other server
        in ``room`` (or to ``destinations``)."""
        body: dict[str, Any] = {"event_id": event_id}
        if destinations is not None:
            body["destinations"] = list(destinations)
        self._call(f"resend {event_id}", "POST", f"{self._room_path(room)}/resend", body)

    def send_edu(self, room: str, edu_type: str, content: Mapping[str, Any]) -> None:
        """Send an EDU to every other server in ``room``."""
        self._call(
            f"send_edu {edu_type}",
            "POST",
            f"{self._room_path(room)}/edu",
            {"edu_type": edu_type, "content": dict(content)},
        )

    def put_device(
        self,
        device_id: str,
        *,
        user: str = DEFAULT_USER,
        keys: Mapping[str, Any] | None = None,
        display_name: str | None = None,
    ) -> int:
        """Add or replace a device of our ``user`` (its keys, display name): the peer
        serves it on ``/user/devices`` and ``/user/keys/query`` and sends an
        ``m.device_list_update`` to every server sharing a room with the user. The
        change's ``stream_id``."""
        body: dict[str, Any] = {}
        if keys is not None:
            body["keys"] = dict(keys)
        if display_name is not None:
            body["display_name"] = display_name
        path = f"{self._prefix}/users/{quote(user, safe='')}/devices/{quote(device_id, safe='')}"
        answer = self._call(f"put_device {device_id}", "PUT", path, body)
        return int(answer["stream_id"])

    def put_profile(
        self,
        user: str = DEFAULT_USER,
        *,
        displayname: str | None = None,
        avatar_url: str | None = None,
    ) -> None:
        """Set our ``user``'s profile, whole (a field not given is unset): what
        ``/query/profile`` then answers for them."""
        body = {k: v for k, v in (("displayname", displayname), ("avatar_url", avatar_url)) if v}
        path = f"{self._prefix}/users/{quote(user, safe='')}/profile"
        self._call(f"put_profile {user}", "PUT", path, body)

    def put_media(
        self, media_id: str, data: bytes, content_type: str, *, filename: str | None = None
    ) -> str:
        """Put media of ours under ``media_id`` (A-Z, a-z, 0-9, ``_``, ``-``), served by
        ``/_matrix/federation/v1/media/download``; its ``mxc://`` URI."""
        body: dict[str, Any] = {
            "content_type": content_type,
            "data": base64.b64encode(data).decode("ascii"),
        }
        if filename is not None:
            body["filename"] = filename
        path = f"{self._prefix}/media/{quote(media_id, safe='')}"
        return str(self._call(f"put_media {media_id}", "PUT", path, body)["content_uri"])

    def room_state(self, room: str) -> dict[str, Any]:
        """``{"room_id", "room_version", "state", "members", "servers", "forward_extremities"}``."""
        result: dict[str, Any] = self._call(f"room_state {room}", "GET", self._room_path(room))
        return result

    def federation_request(
        self, destination: str, method: str, path: str, body: Any = None
    ) -> FederationAnswer:
        """A federation request signed with the peer's key; its answer, whatever the status."""
        request: dict[str, Any] = {"destination": destination, "method": method, "path": path}
        if body is not None:
            request["body"] = body
        answer = self._call(
            f"federation_request {method} {path}",
            "POST",
            f"{self._prefix}/federation/request",
            request,
        )
        return FederationAnswer(int(answer["status"]), answer.get("body"))

    # -- feeds: events, edus, requests and the wait_for_* methods are ControlFeeds' --------

    # -- faults: set_faults, clear_faults, down, faults and fault_counters are PeerFaults' --

    # -- strict mode and the end ------------------------------------------------------------

    def siblings(self) -> list[Peer]:
        """The other servers of this peer's process (issue 23, the config's ``servers:``),
        each driven as a :class:`Peer` through its control prefix (the primary through
        DESIGN.md's own routes), in the process's order, the primary first; empty for a
        process of one server. Their process is this one's (stopping is its owner's);
        their federation address and port are given as this peer's, the shared
        listener's."""
        answer = self._call("servers", "GET", f"{PREFIX}/servers")
        process = self.process
        if isinstance(process, MemberProcess):
            process = process.owner
        others: list[Peer] = []
        for entry in answer["servers"]:
            name = str(entry["server_name"])
            if name == self.server_name:
                continue
            prefix = PREFIX if entry["primary"] else server_prefix(name)
            files = PeerFiles(
                name,
                self.files.config_path,
                self.files.request_log_path,
                self.files.ca_cert_path,
                self.files.control_token,
                self.federation_port,
            )
            member = MemberProcess(process, name, self.federation_address, self.federation_port)
            others.append(Peer(files, member, strict=self.strict, control_prefix=prefix))
        return others

    def declare_unexpected(self, path_prefix: str) -> None:
        """In strict mode, a request under ``path_prefix`` from now on fails the test."""
        self._unexpected.append(path_prefix)

    def unexpected_requests(self) -> list[dict[str, Any]]:
        """The requests received so far that strict mode objects to."""
        return unexpected_requests(self.requests(), self._unexpected)

    def stderr_text(self) -> str:
        """Everything the peer wrote to stderr (its log) so far."""
        return self.process.stderr_text()

    def request_log_text(self) -> str:
        """The request log file as written so far ("" when not there yet)."""
        try:
            return self.files.request_log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def failure_report(self) -> str:
        """What a failed test shows: the last requests received and the end of stderr."""
        lines = [f"peer {self.server_name} (config {self.config_path}):"]
        try:
            received = self.requests()
            lines.append(f"  last of {len(received)} inbound request(s):")
            lines += [f"    {summarize_request(r)}" for r in received[-REPORT_REQUESTS:]]
        except (ControlError, ControlUnreachable) as e:
            lines.append(f"  inbound requests unavailable: {e}")
        tail = self.stderr_text().splitlines()[-REPORT_STDERR_LINES:]
        lines.append(f"  stderr ({self.process.stderr_path}), last {len(tail)} lines:")
        lines += [f"    {line}" for line in tail]
        return "\n".join(lines)

    def close(self, *, check_strict: bool = True) -> None:
        """Stop the peer (SIGTERM, then SIGKILL after a deadline); idempotent.

        In strict mode (and ``check_strict``), raise :class:`StrictModeViolation` when it
        received unexpected requests: they are read before the peer stops.
        """
        if self._closed:
            return
        self._closed = True
        violations: list[dict[str, Any]] = []
        try:
            if self.strict and check_strict and self.process.running:
                violations = self.unexpected_requests()
        finally:
            self.process.stop(STOP_TIMEOUT_SECONDS)
        if violations:
            raise StrictModeViolation(self.server_name, violations)

    def __enter__(self) -> Peer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # The test failed already: add what the peer saw to its report, and do not hide
        # the failure behind a strict-mode one.
        add_reports(exc, [self])
        self.close(check_strict=False)


def add_reports(exc: BaseException, peers: Sequence[Peer]) -> None:
    """Add each peer's :meth:`Peer.failure_report` to the failure ``exc`` (while the
    peers run; the report is a courtesy: one that fails says so instead)."""
    if not isinstance(exc, Exception):
        return
    for peer in peers:
        if not peer.process.running:
            continue
        try:
            exc.add_note(peer.failure_report())
        except Exception as e:
            exc.add_note(f"(no report from peer {peer.server_name}: {e})")


class PeerFactory(Protocol):
    """The ``stubserver_peer`` fixture: starts a :class:`Peer` (``Peer.start``'s keywords)."""

    def __call__(self, **kwargs: Any) -> Peer: ...


def _connectable(address: str) -> str:
    """Where to connect to a listener bound to ``address``: loopback for a wildcard."""
    if address in ("", "0.0.0.0"):  # noqa: S104 - the wildcard is compared, not bound
        return "127.0.0.1"
    if address == "::":
        return "::1"
    return address
