"""``stubserver generate --count N --delegation METHOD [--zone-file FILE]``: how each
generated server is found, and the DNS zone that makes it so (issue 23). Pure.

The methods are the spec's three ways to reach a server name ("Resolving server names"):

* ``direct``: an A (AAAA) record for the name, served on the default port (8448, or the
  config's ``federation_default_port``).
* ``well_known``: an A record for the name, where a listener on the well-known port (443,
  or ``federation_well_known_port``) publishes ``{"m.server": "<first label>-fed.<rest>:
  <port>"}``; that delegated host has an A record too, and the server's certificate names
  both (the well-known fetch asks for the name, the federation connection for the
  delegated host).
* ``srv``: no record for the name itself, a ``_matrix-fed._tcp`` SRV record to
  ``<first label>-srv.<rest>:<port>`` and an A record for that target; the certificate
  names the server name only, as the spec demands for SRV.

``mixed`` takes them in turn: the servers at positions 0, 3, 6, ... (the primary first)
are ``direct``, 1, 4, ... ``well_known``, 2, 5, ... ``srv``. Every record points at the one
address the servers listen on (``--bind``); the zone is the format of
``stubserver.devtools.dns_server``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from stubserver.discovery.server_name import parse_server_name

DIRECT: Final = "direct"
WELL_KNOWN: Final = "well_known"
SRV: Final = "srv"
MIXED: Final = "mixed"
#: The choices of ``--delegation``.
DELEGATIONS: Final = (DIRECT, WELL_KNOWN, SRV, MIXED)
#: The order ``mixed`` gives the methods in.
MIXED_ORDER: Final = (DIRECT, WELL_KNOWN, SRV)
#: The suffixes of the first label of a delegated host and of an SRV target.
DELEGATED_SUFFIX: Final = "-fed"
SRV_TARGET_SUFFIX: Final = "-srv"
#: The SRV service and protocol of Matrix federation (spec v1.8 and later).
SRV_SERVICE: Final = "_matrix-fed._tcp"
#: TTL of every record of a generated zone, in seconds.
ZONE_TTL_SECONDS: Final = 300
SRV_PRIORITY: Final = 10
SRV_WEIGHT: Final = 5


def method_of(delegation: str, position: int) -> str:
    """The method of the server at ``position`` (0: the primary) under ``delegation``."""
    if delegation == MIXED:
        return MIXED_ORDER[position % len(MIXED_ORDER)]
    return delegation


def with_first_label_suffix(name: str, suffix: str) -> str:
    """``s2.test`` with ``suffix`` after its first label: ``s2-fed.test`` (``{i}`` kept,
    so it serves templates too)."""
    first, dot, rest = name.partition(".")
    return f"{first}{suffix}{dot}{rest}"


def delegated_template(server_name: str, port: int) -> str:
    """The default ``m.server`` of ``server_name``: ``<first label>-fed.<rest>:<port>``."""
    return f"{with_first_label_suffix(server_name, DELEGATED_SUFFIX)}:{port}"


@dataclass(frozen=True)
class Placement:
    """How one server is found: its ``method``, the ``m.server`` it publishes
    (``well_known`` only) and the names its certificate must carry."""

    server_name: str
    method: str
    wellknown: str | None
    tls_names: tuple[str, ...]


def placement(
    server_name: str,
    method: str,
    *,
    port: int,
    wellknown: str | None = None,
    requested_tls_names: Sequence[str] = (),
) -> Placement:
    """``server_name``'s placement; ``wellknown`` is the ``m.server`` for ``well_known``
    (default ``<first label>-fed.<rest>:<port>``), ``requested_tls_names`` the
    ``--tls-name`` values (default: the name's host)."""
    names = list(requested_tls_names) or [parse_server_name(server_name).bare_host]
    if method != WELL_KNOWN:
        return Placement(server_name, method, None, tuple(names))
    delegated = wellknown or delegated_template(server_name, port)
    delegated_host = parse_server_name(delegated).bare_host
    if delegated_host not in names:
        names.append(delegated_host)
    return Placement(server_name, method, delegated, tuple(names))


def zone_records(placements: Sequence[Placement], address: str, port: int) -> list[dict[str, Any]]:
    """The zone records (``stubserver.devtools.dns_server``'s JSON) that make each server
    findable at ``address`` as its placement says; ``port`` is the federation listener's."""
    kind = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"

    def host(name: str) -> dict[str, Any]:
        return {"name": name, "type": kind, "value": address, "ttl": ZONE_TTL_SECONDS}

    records: list[dict[str, Any]] = []
    for p in placements:
        if p.method == SRV:
            target = with_first_label_suffix(p.server_name, SRV_TARGET_SUFFIX)
            records.append(
                {
                    "name": f"{SRV_SERVICE}.{p.server_name}",
                    "type": "SRV",
                    "priority": SRV_PRIORITY,
                    "weight": SRV_WEIGHT,
                    "port": port,
                    "target": target,
                    "ttl": ZONE_TTL_SECONDS,
                }
            )
            records.append(host(target))
            continue
        records.append(host(p.server_name))
        if p.wellknown is not None:
            delegated = parse_server_name(p.wellknown).bare_host
            if delegated != p.server_name:
                records.append(host(delegated))
    return records
