"""Deliberately broken copies of our PDUs, for the control API's ``send`` with
``tamper``: what a receiver must refuse.

* ``"signature"``: our signature replaced by a well-formed ed25519 signature of other
  bytes;
* ``"content"``: the content changed after hashing (:data:`TAMPER_KEY` added).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from stubserver.rooms.builder import EventSigner
from stubserver.rooms.hashes import unpadded_base64

#: Content key marking an event whose content was changed after hashing (``tamper``).
TAMPER_KEY: Final = "org.stubserver.tampered"
#: The kinds of breakage ``tampered`` knows.
TAMPER_KINDS: Final = ("signature", "content")


def tampered(pdu: Mapping[str, Any], tamper: str, signer: EventSigner) -> dict[str, Any]:
    """A copy of our ``pdu`` broken as ``tamper`` says (one of :data:`TAMPER_KINDS`)."""
    broken = dict(pdu)
    if tamper == "signature":
        # A well-formed ed25519 signature, of other bytes.
        wrong = signer.signing_key.sign(b"not this event").signature
        broken["signatures"] = {signer.server_name: {signer.key_id: unpadded_base64(wrong)}}
    else:
        broken["content"] = {**dict(pdu.get("content") or {}), TAMPER_KEY: True}
    return broken
