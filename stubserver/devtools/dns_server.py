"""A small authoritative DNS server on twisted.names, for tests and the demo.

Command line (stable; other tools use it)::

    python -m stubserver.devtools.dns_server --zone ZONE.json --listen HOST:PORT [--listen ...]

serves UDP and TCP on each ``--listen`` (port 0: a free port, the same for UDP and TCP),
prints one line ``{"ready": true, "listen": ["127.0.0.53:5353"]}`` with the actual ports
once bound, and exits 0 on SIGTERM or SIGINT. Exit 2 for a bad zone or arguments.

Zone JSON::

    {"records": [
      {"name": "delta.test", "type": "A", "value": "127.0.0.24", "ttl": 60},
      {"name": "delta.test", "type": "AAAA", "value": "::1"},
      {"name": "www.delta.test", "type": "CNAME", "value": "delta.test"},
      {"name": "_matrix-fed._tcp.delta.test", "type": "SRV",
       "priority": 10, "weight": 5, "port": 8450, "target": "delta-srv.test"},
      {"name": "broken.test", "type": "SERVFAIL"},
      {"name": "slow.test", "type": "TIMEOUT"}
    ]}

Names not in the zone get NXDOMAIN; a name in the zone without records of the asked type
gets an empty answer. ``SERVFAIL`` and ``TIMEOUT`` are pseudo-records that make every
query for the name fail or go unanswered (to test resolvers). ``ttl`` defaults to 60 s.
``stubserver generate --count N --delegation ... --zone-file ZONE.json`` writes the zone of
a many-server config (issue 23).

Importable: :func:`parse_zone`, :class:`ZoneRecord`, :class:`ZoneAuthority`,
:func:`build_dns_server` ``(reactor, records, listen) -> DnsServer``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.names import dns, server
from twisted.names import error as dns_error
from twisted.names.common import ResolverBase

from stubserver.reactor import IReactor

#: Default record TTL, in seconds.
DEFAULT_TTL_SECONDS = 60
#: Largest zone file read, in bytes.
MAX_ZONE_BYTES = 4 * 1024 * 1024
#: Attempts to find a port free for both UDP and TCP when asked for port 0.
PORT_ZERO_ATTEMPTS = 20
#: Largest UDP datagram read, in bytes (Twisted's default for listenUDP).
MAX_UDP_PACKET_BYTES = 8192
RECORD_TYPES = {"A": dns.A, "AAAA": dns.AAAA, "CNAME": dns.CNAME, "SRV": dns.SRV}
PSEUDO_TYPES = frozenset({"SERVFAIL", "TIMEOUT"})
MAX_CNAME_CHAIN = 8
MAX_PORT = 65535


class ZoneError(ValueError):
    """The zone document is malformed; ``str()`` says which record and why."""


@dataclass(frozen=True)
class ZoneRecord:
    """One zone record (``value`` for A/AAAA/CNAME; SRV fields for SRV)."""

    name: str
    type: str
    value: str = ""
    ttl: int = DEFAULT_TTL_SECONDS
    priority: int = 0
    weight: int = 0
    port: int = 0
    target: str = ""


def _norm(name: str | bytes) -> str:
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return name.rstrip(".").lower()


def _int(where: str, entry: dict[str, Any], key: str, default: int, high: int) -> int:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise ZoneError(f"{where}.{key}: expected an integer 0..{high}")
    return value


def parse_zone(document: object) -> list[ZoneRecord]:
    """Validate a zone document (see the module docstring)."""
    if not isinstance(document, dict) or not isinstance(document.get("records"), list):
        raise ZoneError('the zone must be an object with a "records" list')
    records = []
    for i, entry in enumerate(document["records"]):
        where = f"records[{i}]"
        if not isinstance(entry, dict):
            raise ZoneError(f"{where}: expected an object")
        name = entry.get("name")
        rtype = entry.get("type")
        if not isinstance(name, str) or not name:
            raise ZoneError(f"{where}.name: expected a name")
        if rtype not in RECORD_TYPES and rtype not in PSEUDO_TYPES:
            raise ZoneError(f"{where}.type: one of A, AAAA, CNAME, SRV, SERVFAIL, TIMEOUT")
        ttl = _int(where, entry, "ttl", DEFAULT_TTL_SECONDS, 2**31 - 1)
        value = entry.get("value", "")
        if rtype in ("A", "AAAA", "CNAME") and (not isinstance(value, str) or not value):
            raise ZoneError(f"{where}.value: expected a string")
        if rtype in ("A", "AAAA"):
            try:
                ip = ipaddress.ip_address(value)
            except ValueError:
                raise ZoneError(f"{where}.value: {value!r} is not an IP address") from None
            if ip.version != (4 if rtype == "A" else 6):
                raise ZoneError(f"{where}.value: {value!r} is not an {rtype} address")
        if rtype == "SRV":
            target = entry.get("target")
            if not isinstance(target, str) or not target:
                raise ZoneError(f"{where}.target: expected a name (or '.')")
            records.append(
                ZoneRecord(
                    name=_norm(name),
                    type="SRV",
                    ttl=ttl,
                    priority=_int(where, entry, "priority", 0, 65535),
                    weight=_int(where, entry, "weight", 0, 65535),
                    port=_int(where, entry, "port", 0, MAX_PORT),
                    target=target,
                )
            )
            continue
        records.append(ZoneRecord(name=_norm(name), type=rtype, value=str(value), ttl=ttl))
    return records


class _ServFail(Exception):
    """Answer SERVFAIL."""


class ZoneAuthority(ResolverBase):
    """An in-memory authoritative resolver over :class:`ZoneRecord` s."""

    def __init__(self, records: Sequence[ZoneRecord]) -> None:
        ResolverBase.__init__(self)  # type: ignore[no-untyped-call]
        self._by_name: dict[str, list[ZoneRecord]] = {}
        for record in records:
            self._by_name.setdefault(record.name, []).append(record)
        self.pending: list[Deferred[Any]] = []

    def _rr(self, name: str, record: ZoneRecord) -> dns.RRHeader:
        payload: Any
        if record.type == "A":
            payload = dns.Record_A(record.value, record.ttl)  # type: ignore[no-untyped-call]
        elif record.type == "AAAA":
            payload = dns.Record_AAAA(record.value, record.ttl)  # type: ignore[no-untyped-call]
        elif record.type == "CNAME":
            payload = dns.Record_CNAME(  # type: ignore[no-untyped-call]
                record.value.encode("ascii"), record.ttl
            )
        else:
            payload = dns.Record_SRV(  # type: ignore[no-untyped-call]
                record.priority,
                record.weight,
                record.port,
                record.target.rstrip(".").encode("ascii") if record.target != "." else b"",
                record.ttl,
            )
        return dns.RRHeader(
            name=name.encode("ascii"),
            type=RECORD_TYPES[record.type],
            cls=dns.IN,
            ttl=record.ttl,
            payload=payload,
            auth=True,
        )

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> Deferred[Any]:
        key = _norm(name)
        answers: list[dns.RRHeader] = []
        for _ in range(MAX_CNAME_CHAIN):
            records = self._by_name.get(key)
            if records is None:
                if answers:
                    break
                d: Deferred[Any] = Deferred()
                d.errback(dns_error.AuthoritativeDomainError(name))
                return d
            kinds = {r.type for r in records}
            if "TIMEOUT" in kinds:
                never: Deferred[Any] = Deferred()
                self.pending.append(never)
                return never
            if "SERVFAIL" in kinds:
                failed: Deferred[Any] = Deferred()
                failed.errback(_ServFail(key))
                return failed
            cnames = [r for r in records if r.type == "CNAME"]
            if cnames and type != dns.CNAME:
                answers.append(self._rr(key, cnames[0]))
                key = _norm(cnames[0].value)
                continue
            answers.extend(
                self._rr(key, r)
                for r in records
                if r.type in RECORD_TYPES
                and (RECORD_TYPES[r.type] == type or type == dns.ALL_RECORDS)
            )
            break
        done: Deferred[Any] = Deferred()
        done.callback((answers, [], []))
        return done


class _Factory(server.DNSServerFactory):
    # No "Starting factory" line for every TCP query (issue 24).
    noisy = False

    def gotResolverError(self, failure: Any, protocol: Any, message: Any, address: Any) -> None:
        rcode = dns.ENAME if failure.check(dns_error.AuthoritativeDomainError) else dns.ESERVER
        response = self._responseFromMessage(message=message, rCode=rcode)  # type: ignore[no-untyped-call]
        self.sendReply(protocol, response, address)  # type: ignore[no-untyped-call]


@dataclass
class DnsServer:
    """A running server: its ``authority``, bound ``addresses`` (host, port), ``ports``."""

    authority: ZoneAuthority
    addresses: list[tuple[str, int]]
    ports: list[IListeningPort]

    def stop(self) -> Deferred[list[Any]]:
        """Stop listening (and drop queries held by TIMEOUT records)."""
        for d in self.authority.pending:
            if not d.called:
                d.cancel()
        return gatherResults([maybeDeferred(p.stopListening) for p in self.ports])


def _done() -> Deferred[None]:
    d: Deferred[None] = Deferred()
    d.callback(None)
    return d


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``; ValueError when malformed."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_s = rest.lstrip(":")
    else:
        host, _, port_s = text.rpartition(":")
    ipaddress.ip_address(host)
    if not port_s.isdigit() or int(port_s) > MAX_PORT:
        raise ValueError(f"bad port in {text!r}")
    return host, int(port_s)


def build_dns_server(
    reactor: IReactor, records: Sequence[ZoneRecord], listen: Sequence[tuple[str, int]]
) -> DnsServer:
    """Serve ``records`` on UDP and TCP at each ``(host, port)``; port 0 picks one free
    for both. Raises ``CannotListenError`` when a port is taken."""
    from twisted.internet.error import CannotListenError  # noqa: PLC0415

    authority = ZoneAuthority(records)
    factory = _Factory(authorities=[authority])  # type: ignore[no-untyped-call]
    protocol = dns.DNSDatagramProtocol(factory)  # type: ignore[no-untyped-call]
    protocol.noisy = False
    bound: list[tuple[str, int]] = []
    ports: list[IListeningPort] = []
    for host, port in listen:
        attempts = PORT_ZERO_ATTEMPTS if port == 0 else 1
        for attempt in range(attempts):
            udp = reactor.listenUDP(
                port, protocol, interface=host, maxPacketSize=MAX_UDP_PACKET_BYTES
            )
            actual = _bound_port(udp)
            try:
                tcp = reactor.listenTCP(actual, factory, interface=host)
            except CannotListenError:
                udp.stopListening()
                if attempt == attempts - 1:
                    raise
                continue
            ports.extend([udp, tcp])
            bound.append((host, actual))
            break
    return DnsServer(authority, bound, ports)


def _bound_port(port: IListeningPort) -> int:
    address = port.getHost()
    if not isinstance(address, IPv4Address | IPv6Address):
        raise TypeError(f"not an IP listening port: {address!r}")
    return address.port


def _format(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stubserver.devtools.dns_server``: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m stubserver.devtools.dns_server")
    parser.add_argument("--zone", type=Path, required=True, metavar="ZONE.json")
    parser.add_argument("--listen", action="append", required=True, metavar="HOST:PORT")
    args = parser.parse_args(argv)
    try:
        data = args.zone.read_bytes()[: MAX_ZONE_BYTES + 1]
        if len(data) > MAX_ZONE_BYTES:
            raise ZoneError(f"larger than {MAX_ZONE_BYTES} bytes")
        records = parse_zone(json.loads(data))
        listen = [parse_listen(item) for item in args.listen]
    except (OSError, ValueError) as e:
        print(f"stubserver.devtools.dns_server: {args.zone}: {e}", file=sys.stderr)
        return 2

    from twisted.internet import task  # noqa: PLC0415
    from twisted.internet.error import CannotListenError  # noqa: PLC0415

    status = [0]

    def run(reactor: IReactor) -> Deferred[None]:
        try:
            dns_server = build_dns_server(reactor, records, listen)
        except CannotListenError as e:
            print(f"stubserver.devtools.dns_server: cannot listen: {e}", file=sys.stderr)
            status[0] = 2
            return _done()
        line = {"ready": True, "listen": [_format(h, p) for h, p in dns_server.addresses]}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        return Deferred()  # until SIGTERM/SIGINT stops the reactor

    try:
        task.react(run)
    except SystemExit as e:
        if status[0]:
            return status[0]
        return int(e.code or 0)
    return status[0]


if __name__ == "__main__":
    sys.exit(main())
