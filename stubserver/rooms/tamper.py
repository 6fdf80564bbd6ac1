"""Deliberately broken copies of our PDUs, for the control API's ``send`` with
``tamper`` and its ``send_join_extra_state``: what a receiver must refuse.

* ``"signature"``: our signature replaced by a well-formed ed25519 signature of other
  bytes;
* ``"content"``: the content changed after hashing (:data:`TAMPER_KEY` added);
* ``"unsigned"`` (``send_join_extra_state`` only): no signature at all
  (``signatures: {}``);
* ``"unknown_key"`` (``send_join_extra_state`` only): our right signature, under a key
  ID we do not publish (:data:`UNKNOWN_KEY_SUFFIX` added to ours), so that a receiver
  cannot obtain the key to check it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from stubserver.rooms.builder import EventSigner
from stubserver.rooms.hashes import unpadded_base64

#: Content key marking an event whose content was changed after hashing (``tamper``).
TAMPER_KEY: Final = "org.stubserver.tampered"
#: The kinds of breakage the control API's ``send`` takes.
TAMPER_KINDS: Final = ("signature", "content")
#: The kinds ``send_join_extra_state`` takes: every kind ``tampered`` knows.
EXTRA_TAMPER_KINDS: Final = (*TAMPER_KINDS, "unsigned", "unknown_key")
#: What ``"unknown_key"`` adds to our key ID (a key ID we never publish).
UNKNOWN_KEY_SUFFIX: Final = "_unpublished"


def tampered(pdu: Mapping[str, Any], tamper: str, signer: EventSigner) -> dict[str, Any]:
    """A copy of our signed ``pdu`` broken as ``tamper`` says (one of
    :data:`EXTRA_TAMPER_KINDS`)."""
    broken = dict(pdu)
    if tamper == "unsigned":
        broken["signatures"] = {}
    elif tamper == "unknown_key":
        ours = pdu["signatures"][signer.server_name][signer.key_id]
        broken["signatures"] = {
            signer.server_name: {signer.key_id + UNKNOWN_KEY_SUFFIX: ours},
        }
    elif tamper == "signature":
        # A well-formed ed25519 signature, of other bytes.
        wrong = signer.signing_key.sign(b"not this event").signature
        broken["signatures"] = {signer.server_name: {signer.key_id: unpadded_base64(wrong)}}
    else:
        broken["content"] = {**dict(pdu.get("content") or {}), TAMPER_KEY: True}
    return broken
