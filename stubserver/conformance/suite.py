"""The built-in suite: every area's tests for the room versions the homeserver supports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from stubserver.conformance import (
    suite_acls,
    suite_auth,
    suite_device_joins,
    suite_devices,
    suite_edus,
    suite_fanout,
    suite_fetching,
    suite_gaps,
    suite_guards,
    suite_invites,
    suite_join_failover,
    suite_join_race,
    suite_keys,
    suite_knocks,
    suite_leaves,
    suite_media,
    suite_membership,
    suite_partial_state,
    suite_pdus,
    suite_queries,
    suite_restricted,
    suite_rooms,
    suite_serving,
    suite_stateres_v12,
    suite_unverifiable,
    suite_v1_membership,
)
from stubserver.conformance.context import Context
from stubserver.conformance.runner import ConformanceTest

#: The room versions the suite covers (those the peer speaks).
SUITE_ROOM_VERSIONS: Final = ("10", "11", "12")


def supported_versions(capabilities: object) -> list[str]:
    """The suite's room versions a ``/capabilities`` answer lists as available (pure)."""
    caps = capabilities.get("capabilities") if isinstance(capabilities, dict) else None
    versions = (caps or {}).get("m.room_versions") or {}
    available = versions.get("available") if isinstance(versions, dict) else None
    if not isinstance(available, dict):
        return []
    return [v for v in SUITE_ROOM_VERSIONS if available.get(v) == "stable"]


def build_suite(versions: Sequence[str]) -> list[ConformanceTest[Context]]:
    """Every test, in report order: keys and auth, fan-out and recovery (once), then per
    version rooms, what it serves,
    membership refusals, PDUs, EDUs,
    spoofed and ACL-denied traffic; then once: devices, keys, to-device, presence, queries."""
    vs = list(versions)
    return [
        *suite_keys.tests(),
        # early: their waits (a homeserver's retry timer, seconds) overlap the other tests
        *suite_fanout.tests(vs),
        *suite_rooms.tests(vs),
        *suite_gaps.tests(vs),
        *suite_serving.tests(vs),
        *suite_membership.tests(vs),
        *suite_leaves.tests(vs),
        *suite_v1_membership.tests(vs),
        *suite_unverifiable.tests(vs),
        *suite_join_race.tests(vs),
        *suite_join_failover.tests(vs),
        *suite_knocks.tests(vs),
        *suite_invites.tests(vs),
        *suite_restricted.tests(vs),
        *suite_partial_state.tests(vs),
        *suite_pdus.tests(vs),
        *suite_edus.tests(vs),
        *suite_auth.tests(vs),
        *suite_stateres_v12.tests(vs),
        *suite_fetching.tests(vs),
        *suite_guards.tests(vs),
        *suite_acls.tests(vs),
        *suite_devices.tests(vs),
        *suite_device_joins.tests(vs),
        *suite_queries.tests(vs),
        *suite_media.tests(vs),
    ]
