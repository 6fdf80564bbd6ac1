"""The redaction algorithm: which keys of an event survive (spec: Client-Server API
"Redactions", per room version).

Room version 10 uses version 9's rules (``content/rooms/fragments/v9-redactions.md``);
versions 11 and 12 use version 11's (``v11-redactions.md``). The redacted form is what
event signatures and the reference hash (so the event ID) cover, so a wrong key here
changes the bytes every other server computes: each difference between the two rule sets
is listed and tested.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from stubserver.rooms.versions import RedactionRules, RoomVersion
from stubserver.signing.canonical_json import JsonDict

#: Top-level keys the v11 rules keep (rooms v11, v12); v9 keeps these and three more.
_KEPT_TOP_LEVEL_V11 = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "auth_events",
        "origin_server_ts",
    }
)
#: v9 rules (room v10) also keep these three, dropped from v11 on.
_KEPT_TOP_LEVEL_V9 = _KEPT_TOP_LEVEL_V11 | {"origin", "membership", "prev_state"}

#: Content keys kept per event type under the v9 rules (room v10); other types keep none.
_KEPT_CONTENT_V9: Mapping[str, frozenset[str]] = {
    "m.room.member": frozenset({"membership", "join_authorised_via_users_server"}),
    "m.room.create": frozenset({"creator"}),
    "m.room.join_rules": frozenset({"join_rule", "allow"}),
    "m.room.power_levels": frozenset(
        {
            "ban",
            "events",
            "events_default",
            "kick",
            "redact",
            "state_default",
            "users",
            "users_default",
        }
    ),
    "m.room.history_visibility": frozenset({"history_visibility"}),
}

#: Content keys kept per event type under the v11 rules (rooms v11, v12). The create
#: event keeps all of its content and the member event also keeps
#: ``third_party_invite.signed``; both are handled in :func:`_redact_content`.
_KEPT_CONTENT_V11: Mapping[str, frozenset[str]] = {
    "m.room.member": frozenset({"membership", "join_authorised_via_users_server"}),
    "m.room.join_rules": frozenset({"join_rule", "allow"}),
    "m.room.power_levels": _KEPT_CONTENT_V9["m.room.power_levels"] | {"invite"},
    "m.room.history_visibility": frozenset({"history_visibility"}),
    "m.room.redaction": frozenset({"redacts"}),
}


def redact(
    pdu: Mapping[str, Any], room_version: RoomVersion, *, copy_values: bool = True
) -> JsonDict:
    """The redacted form of ``pdu`` under ``room_version``'s rules, as a new dict.

    The input is not modified; kept values are deep copies, or with ``copy_values``
    False the input's own values (for a read-only use: encoding, a stored event). A
    ``content`` that is not an object becomes ``{}`` (such a PDU fails format checks
    anyway; this keeps the function total).
    """
    v11 = room_version.redaction_rules is RedactionRules.V11
    kept = _KEPT_TOP_LEVEL_V11 if v11 else _KEPT_TOP_LEVEL_V9
    same: Callable[[Any], Any] = copy.deepcopy if copy_values else _itself
    redacted = {key: same(value) for key, value in pdu.items() if key in kept}
    content = pdu.get("content")
    event_type = pdu.get("type")
    redacted["content"] = _redact_content(
        event_type if isinstance(event_type, str) else "",
        content if isinstance(content, Mapping) else {},
        v11=v11,
        same=same,
    )
    return redacted


def _itself(value: Any) -> Any:
    return value


def _redact_content(
    event_type: str, content: Mapping[str, Any], *, v11: bool, same: Callable[[Any], Any]
) -> JsonDict:
    if v11 and event_type == "m.room.create":
        # v11 rules: "m.room.create allows all keys".
        return {key: same(value) for key, value in content.items()}
    table = _KEPT_CONTENT_V11 if v11 else _KEPT_CONTENT_V9
    allowed = table.get(event_type, frozenset())
    kept = {key: same(value) for key, value in content.items() if key in allowed}
    if (
        v11
        and event_type == "m.room.member"
        and isinstance(content.get("third_party_invite"), Mapping)
    ):
        # v11 rules: the member event "allows the `signed` key of the
        # `third_party_invite` key"; an invite object without it is kept empty.
        invite = content["third_party_invite"]
        kept["third_party_invite"] = (
            {"signed": same(invite["signed"])} if "signed" in invite else {}
        )
    return kept
