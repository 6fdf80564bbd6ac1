"""The test DNS server: zone parsing and answers, in memory (no sockets)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.names import dns
from twisted.names import error as dns_error

from stubserver.devtools.dns_server import ZoneAuthority, ZoneError, parse_listen, parse_zone
from tests.support import failure_now, has_fired, result_now

ZONE = {
    "records": [
        {"name": "alpha.test", "type": "A", "value": "127.0.0.31", "ttl": 30},
        {"name": "alpha.test", "type": "AAAA", "value": "::1"},
        {"name": "www.alpha.test.", "type": "CNAME", "value": "alpha.test"},
        {
            "name": "_matrix-fed._tcp.gamma.test",
            "type": "SRV",
            "priority": 10,
            "weight": 5,
            "port": 8450,
            "target": "gamma-srv.test",
        },
        {"name": "_matrix-fed._tcp.refused.test", "type": "SRV", "port": 0, "target": "."},
        {"name": "broken.test", "type": "SERVFAIL"},
        {"name": "slow.test", "type": "TIMEOUT"},
    ]
}


@pytest.fixture
def authority() -> ZoneAuthority:
    return ZoneAuthority(parse_zone(ZONE))


def query(authority: ZoneAuthority, kind: str, name: str) -> Deferred[Any]:
    """``authority.<kind>(name)`` (twisted.names' lookup methods are untyped)."""
    result: Deferred[Any] = getattr(authority, kind)(name)
    return result


def answers(d: Any) -> list[str]:
    found, _authority, _additional = result_now(d)
    return [str(rr.payload) for rr in found]


def test_a_record(authority: ZoneAuthority) -> None:
    """An A query answers the zone's A record with its TTL."""
    assert answers(query(authority, "lookupAddress", "alpha.test")) == [
        "<A address=127.0.0.31 ttl=30>"
    ]


def test_aaaa_record(authority: ZoneAuthority) -> None:
    """An AAAA query answers the AAAA record only."""
    assert answers(query(authority, "lookupIPV6Address", "ALPHA.test")) == [
        "<AAAA address=::1 ttl=60>"
    ]


def test_cname_chased(authority: ZoneAuthority) -> None:
    """A query for a CNAME answers the CNAME and the target's records."""
    assert answers(query(authority, "lookupAddress", "www.alpha.test")) == [
        "<CNAME name=alpha.test ttl=60>",
        "<A address=127.0.0.31 ttl=30>",
    ]


def test_srv_record(authority: ZoneAuthority) -> None:
    """An SRV query answers priority, weight, port and target."""
    found, _, _ = result_now(query(authority, "lookupService", "_matrix-fed._tcp.gamma.test"))
    payload = found[0].payload
    assert (payload.priority, payload.weight, payload.port, payload.target.name) == (
        10,
        5,
        8450,
        b"gamma-srv.test",
    )


def test_srv_dot_target(authority: ZoneAuthority) -> None:
    """An SRV target '.' is served as the root name (service refused)."""
    found, _, _ = result_now(query(authority, "lookupService", "_matrix-fed._tcp.refused.test"))
    assert found[0].payload.target.name == b""


def test_unknown_name_nxdomain(authority: ZoneAuthority) -> None:
    """A name not in the zone is NXDOMAIN."""
    failure = failure_now(query(authority, "lookupAddress", "nope.test"))
    assert isinstance(failure.value, dns_error.AuthoritativeDomainError)


def test_known_name_other_type_empty(authority: ZoneAuthority) -> None:
    """A name in the zone without records of the type gets an empty answer."""
    assert answers(query(authority, "lookupService", "alpha.test")) == []


def test_servfail(authority: ZoneAuthority) -> None:
    """A SERVFAIL pseudo-record fails every query for the name (not as NXDOMAIN)."""
    failure = failure_now(query(authority, "lookupAddress", "broken.test"))
    assert not isinstance(failure.value, dns_error.AuthoritativeDomainError)


def test_timeout(authority: ZoneAuthority) -> None:
    """A TIMEOUT pseudo-record leaves queries unanswered."""
    assert not has_fired(query(authority, "lookupAddress", "slow.test"))


ZONE_ERRORS = [
    ({}, "records"),
    ({"records": [{"name": "a.test", "type": "MX", "value": "x"}]}, "type"),
    ({"records": [{"name": "a.test", "type": "A", "value": "::1"}]}, "not an A address"),
    ({"records": [{"name": "a.test", "type": "A", "value": "x"}]}, "not an IP address"),
    ({"records": [{"name": "a.test", "type": "SRV", "port": 70000, "target": "b"}]}, "port"),
    ({"records": [{"name": "a.test", "type": "SRV", "port": 1}]}, "target"),
    ({"records": [{"type": "A", "value": "1.2.3.4"}]}, "name"),
]


@pytest.mark.parametrize(("zone", "problem"), ZONE_ERRORS)
def test_zone_errors(zone: Any, problem: str) -> None:
    """A malformed zone is refused naming the record and field."""
    with pytest.raises(ZoneError, match=problem):
        parse_zone(zone)


def test_parse_listen() -> None:
    """--listen takes HOST:PORT and [V6]:PORT."""
    assert parse_listen("127.0.0.53:5353") == ("127.0.0.53", 5353)
    assert parse_listen("[::1]:0") == ("::1", 0)
    with pytest.raises(ValueError):
        parse_listen("localhost:53")


def test_rr_types() -> None:
    """The record types served match twisted.names' codes."""
    authority = ZoneAuthority(parse_zone(ZONE))
    found, _, _ = result_now(query(authority, "lookupAddress", "alpha.test"))
    assert found[0].type == dns.A
    assert found[0].auth
