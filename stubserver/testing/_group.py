"""``PeerGroup``: many servers served by one ``stubserver run`` (issue 23), each driven as
a :class:`~stubserver.testing.Peer` through its control prefix."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import yaml

from stubserver.discovery.server_name import parse_server_name
from stubserver.signing.key_files import (
    CONTROL_TOKEN_BYTES,
    PRIVATE_MODE,
    PUBLIC_MODE,
    new_key_version,
    paths_for,
    write_atomically,
)
from stubserver.signing.keys import ServerSigningKey
from stubserver.testing._errors import StrictModeViolation
from stubserver.testing._feeds import server_prefix
from stubserver.testing._files import (
    CONTROL_BIND,
    SPEC_FEDERATION_PORT,
    PeerFiles,
    choose_identity,
    load_or_make_ca,
)
from stubserver.testing._peer import Peer, add_reports
from stubserver.testing._process import (
    READY_TIMEOUT_SECONDS,
    STOP_TIMEOUT_SECONDS,
    MemberProcess,
    PeerProcess,
)
from stubserver.tls.certificates import KeyPair, issue_cert, tls_names

#: The mark a template's index replaces.
INDEX_MARK: Final = "{i}"
#: The file stem of the group's config, request log and stderr.
GROUP_STEM: Final = "group"


@dataclass(frozen=True)
class GroupOptions:
    """What every server of a group is given (:meth:`Peer.start`'s keywords)."""

    ca: tuple[str | Path, str | Path] | None = None
    dns_servers: tuple[str, ...] = ()
    allow_ips: tuple[str, ...] = ()
    ca_files: tuple[str | Path, ...] = ()
    room_version: str | None = None
    invites: str = "accept"
    users: Mapping[str, Mapping[str, Any]] | None = None
    extra_config: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class GroupMember:
    """One server of a group: its name and where its federation listener is."""

    server_name: str
    port: int
    own_listener: bool


def group_members(
    count: int, template: str | None, bind: str, port: int | None
) -> list[GroupMember]:
    """The servers of a group (see :meth:`Peer.start_many`)."""
    if count < 1:
        raise ValueError("a group has at least one server")
    if template is None:
        members: list[GroupMember] = []
        while len(members) < count:
            name, chosen = choose_identity(None, bind, None)
            if all(m.port != chosen for m in members):  # a port freed again may come back
                members.append(GroupMember(name, chosen, own_listener=True))
        return members
    if INDEX_MARK not in template:
        raise ValueError(f"the template {template!r} has no {INDEX_MARK}")
    names = [template.replace(INDEX_MARK, str(i)) for i in range(1, count + 1)]
    ports = {parse_server_name(name).port for name in names}
    if len(ports) != 1:
        raise ValueError(f"the template {template!r} names several ports")
    (named_port,) = ports
    shared = named_port or port or SPEC_FEDERATION_PORT
    if port not in (None, shared):
        raise ValueError(f"port {port} differs from the template's {shared}")
    return [GroupMember(name, shared, own_listener=False) for name in names]


def write_group_files(
    directory: Path, members: Sequence[GroupMember], bind: str, options: GroupOptions
) -> tuple[list[PeerFiles], Path]:
    """Keys and certificates (from one CA) of every member, and the one config serving
    them all; each member's files and the config's path."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_pair, ca_cert_path = load_or_make_ca(directory, options.ca)
    config_path = directory / f"{GROUP_STEM}.yaml"
    request_log = config_path.with_suffix(".requests.jsonl")
    token = secrets.token_urlsafe(CONTROL_TOKEN_BYTES)
    entries = [_write_member(directory, member, bind, ca_pair) for member in members]
    primary, *others = entries
    config: dict[str, Any] = {
        **{k: v for k, v in primary.items() if k != "listeners"},
        "listeners": [
            *primary.get("listeners", [_federation_listener(members[0].port, bind)]),
            {"port": 0, "bind_addresses": [CONTROL_BIND], "resources": ["control"]},
        ],
        "control_token": token,
        "invites": options.invites,
        "request_log_path": request_log.name,
        "federation_custom_ca_list": [
            str(ca_cert_path),
            *(str(Path(f).resolve()) for f in options.ca_files),
        ],
    }
    if others:
        config["servers"] = others
    if options.room_version is not None:
        config["default_room_version"] = options.room_version
    if options.dns_servers:
        config["federation_dns_servers"] = list(options.dns_servers)
    if options.allow_ips:
        config["ip_range_allowlist"] = list(options.allow_ips)
    if options.users:
        config["users"] = {name: dict(profile) for name, profile in options.users.items()}
    config.update(options.extra_config or {})
    write_atomically(
        config_path, yaml.safe_dump(config, sort_keys=False).encode("utf-8"), PUBLIC_MODE
    )
    files = [
        PeerFiles(member.server_name, config_path, request_log, ca_cert_path, token, member.port)
        for member in members
    ]
    return files, config_path


def _federation_listener(port: int, bind: str) -> dict[str, Any]:
    return {"port": port, "bind_addresses": [bind], "resources": ["federation"]}


def _write_member(
    directory: Path, member: GroupMember, bind: str, ca_pair: KeyPair
) -> dict[str, Any]:
    """Write one member's signing key and certificate; its ``servers:`` entry."""
    paths = paths_for(directory, member.server_name)
    signing_key = ServerSigningKey.generate(new_key_version())
    tls = issue_cert(tls_names(member.server_name, ()), ca_pair)
    write_atomically(paths.signing_key, signing_key.to_line().encode("ascii"), PRIVATE_MODE)
    write_atomically(paths.private_key, tls.key_pem, PRIVATE_MODE)
    write_atomically(paths.certificate, tls.cert_pem, PUBLIC_MODE)
    entry: dict[str, Any] = {
        "server_name": member.server_name,
        "signing_key_path": paths.signing_key.name,
        "tls_certificate_path": paths.certificate.name,
        "tls_private_key_path": paths.private_key.name,
    }
    if member.own_listener:
        entry["listeners"] = [_federation_listener(member.port, bind)]
    return entry


class PeerGroup:
    """Servers served by one ``stubserver run``, each a :class:`Peer` (``peers``, by
    index, by iteration or :meth:`by_name`) driving its server through
    ``/_stubserver/v1/servers/{name}``. A context manager: :meth:`close` stops the
    process (after the strict-mode checks of every member in strict mode)."""

    def __init__(self, peers: Sequence[Peer], process: PeerProcess) -> None:
        self.peers = list(peers)
        self.process = process
        self._closed = False

    @property
    def server_names(self) -> list[str]:
        """Every server's name, in order (the first is the config's primary)."""
        return [peer.server_name for peer in self.peers]

    def by_name(self, server_name: str) -> Peer:
        """The member named ``server_name`` (KeyError when none is)."""
        for peer in self.peers:
            if peer.server_name == server_name:
                return peer
        raise KeyError(server_name)

    def __getitem__(self, index: int) -> Peer:
        return self.peers[index]

    def __iter__(self) -> Iterator[Peer]:
        return iter(self.peers)

    def __len__(self) -> int:
        return len(self.peers)

    def close(self, *, check_strict: bool = True) -> None:
        """Stop the process; idempotent. In strict mode (and ``check_strict``), raise
        :class:`StrictModeViolation` for the first member that received unexpected
        requests (all are read before the process stops)."""
        if self._closed:
            return
        self._closed = True
        violations: list[tuple[str, list[dict[str, Any]]]] = []
        try:
            if check_strict and self.process.running:
                for peer in self.peers:
                    if peer.strict:
                        found = peer.unexpected_requests()
                        if found:
                            violations.append((peer.server_name, found))
        finally:
            self.process.stop(STOP_TIMEOUT_SECONDS)
        if violations:
            raise StrictModeViolation(*violations[0])

    def __enter__(self) -> PeerGroup:
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
        add_reports(exc, self.peers)
        self.close(check_strict=False)


def start_group(
    directory: Path,
    count: int,
    *,
    template: str | None,
    bind: str,
    port: int | None,
    options: GroupOptions,
    strict: bool = False,
    unexpected: Sequence[str] = (),
    timeout: float = READY_TIMEOUT_SECONDS,
    python: str | None = None,
) -> PeerGroup:
    """Write the group's files, start its process and wait until it is ready."""
    members = group_members(count, template, bind, port)
    files, config_path = write_group_files(directory, members, bind, options)
    process = PeerProcess.start(config_path, timeout=timeout, python=python)
    peers = [
        Peer(
            member_files,
            MemberProcess(process, member.server_name, bind, member.port),
            strict=strict,
            unexpected=unexpected,
            control_prefix=server_prefix(member.server_name),
        )
        for member_files, member in zip(files, members, strict=True)
    ]
    return PeerGroup(peers, process)
