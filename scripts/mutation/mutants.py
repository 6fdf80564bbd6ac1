"""The mutants of issue 20: one function of Synapse each, replaced at start-up by ours.

A :class:`Mutant` names its target by dotted path (``module:Class.method`` or
``module:function``, looked up where Synapse calls it), gives ``make(original)``, which
returns the replacement (a few lines of ours that call the original and spoil its answer,
or skip it), the conformance tests that must fail (globs of test ids) and the fragment of
the first failure's message a developer should see. Synapse is AGPL: nothing of its code
is copied here, only names of what we replace.

This module is imported by Synapse's python (``boot.py``, which patches) and by ours
(``run.py``, which reads the table), so it imports nothing but the standard library at
the top; what a replacement needs from Synapse it imports when it runs.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: ``make(original)``: the replacement of the original function.
Factory = Callable[[Any], Any]


@dataclass(frozen=True)
class Mutant:
    """One broken behaviour: where, how, and what the suite must then say."""

    name: str
    #: What the spec requires that this mutant breaks (for the table).
    breaks: str
    target: str
    make: Factory
    #: Globs of the test ids that must fail (every version's, ``/v*``).
    must_fail: tuple[str, ...]
    #: A fragment of the message the first of them must give.
    message: str


def _synapse(module: str) -> Any:
    """A module of Synapse, imported when a replacement runs (in Synapse's python)."""
    return importlib.import_module(module)


def _async_returning(value: Any) -> Factory:
    """An async replacement that does nothing and returns ``value``."""

    def make(original: Any) -> Any:
        async def replacement(*args: Any, **kwargs: Any) -> Any:
            return value

        return replacement

    return make


def _sync_returning(value: Any) -> Factory:
    """A plain replacement that does nothing and returns ``value``."""

    def make(original: Any) -> Any:
        def replacement(*args: Any, **kwargs: Any) -> Any:
            return value

        return replacement

    return make


def _async_after(change: Callable[[Any, Any], Any]) -> Factory:
    """An async replacement that calls the original, then returns ``change(self, result)``."""

    def make(original: Any) -> Any:
        async def replacement(self: Any, *args: Any, **kwargs: Any) -> Any:
            return change(self, await original(self, *args, **kwargs))

        return replacement

    return make


def _async_before(change: Callable[[tuple[Any, ...], dict[str, Any]], None]) -> Factory:
    """An async replacement that changes the arguments in place, then calls the original."""

    def make(original: Any) -> Any:
        async def replacement(*args: Any, **kwargs: Any) -> Any:
            change(args, kwargs)
            return await original(*args, **kwargs)

        return replacement

    return make


def _resigned_key_document(change: Callable[[dict[str, Any]], None]) -> Factory:
    """LocalKey.response_json_object: the document changed by ``change``, signed again
    with the server's keys (so that only the change is wrong)."""

    def make(original: Any) -> Any:
        def replacement(self: Any) -> Any:
            sign_json = _synapse("signedjson.sign").sign_json
            document = {k: v for k, v in original(self).items() if k != "signatures"}
            change(document)
            for key in self.config.key.signing_key:
                document = sign_json(document, self.config.server.server_name, key)
            return document

        return replacement

    return make


def _expired(document: dict[str, Any]) -> None:
    document["valid_until_ts"] = int(time.time() * 1000) - 3_600_000


def _renamed(document: dict[str, Any]) -> None:
    document["server_name"] = "someone-else.test"


def _unsigned_key_document(original: Any) -> Any:
    def replacement(self: Any) -> Any:
        return {k: v for k, v in original(self).items() if k != "signatures"}

    return replacement


def _version_without_name(original: Any) -> Any:
    async def replacement(*args: Any, **kwargs: Any) -> Any:
        return 200, {"server": {"version": "mutant"}}

    return replacement


def _notary_not_signing(self: Any, result: Any) -> Any:
    """Each document keeps only its own server's signature: the notary's is gone."""
    for document in result.get("server_keys", []):
        own = document.get("server_name")
        document["signatures"] = {own: document.get("signatures", {}).get(own, {})}
    return result


def _destination_of(request: Any) -> str | None:
    for header in request.requestHeaders.getRawHeaders(b"Authorization") or []:
        found = re.search(rb'destination="?([^",]+)', header)
        if found:
            return found.group(1).decode()
    return None


def _any_destination(original: Any) -> Any:
    """Authenticator.authenticate_request: a refused request signed for another
    destination is tried again as if we were that destination."""

    async def replacement(self: Any, request: Any, content: Any) -> Any:
        try:
            return await original(self, request, content)
        except Exception:
            destination = _destination_of(request)
            if destination is None or destination == self.server_name:
                raise
            saved = self.server_name, self._is_mine_server_name
            self.server_name, self._is_mine_server_name = destination, lambda _name: True
            try:
                return await original(self, request, content)
            finally:
                self.server_name, self._is_mine_server_name = saved

    return replacement


def _unsigned_welcome(original: Any) -> Any:
    """Authenticator.authenticate_request: no Authorization header, no questions."""

    async def replacement(self: Any, request: Any, content: Any) -> Any:
        if not request.requestHeaders.getRawHeaders(b"Authorization"):
            return "anonymous.invalid"
        return await original(self, request, content)

    return replacement


def _refuse_everything(original: Any) -> Any:
    """Authenticator.authenticate_request: every signed request refused 401 (one without
    a signature goes on as before: /version, which needs none, still answers)."""

    async def replacement(self: Any, request: Any, content: Any) -> Any:
        if not request.requestHeaders.getRawHeaders(b"Authorization"):
            return await original(self, request, content)
        errors = _synapse("synapse.federation.transport.server._base")
        raise errors.AuthenticationError(401, "mutant: every request refused", "M_UNAUTHORIZED")

    return replacement


def _set(key: str, value: Any) -> Callable[[Any, Any], Any]:
    def change(self: Any, result: Any) -> Any:
        result[key] = value
        return result

    return change


def _strip_signatures(self: Any, result: Any) -> Any:
    for event in result.get("state", []):
        event["signatures"] = {}
    return result


def _refuse_remote_aliases(original: Any) -> Any:
    async def replacement(self: Any, room_alias: Any) -> Any:
        if room_alias.domain != self.server_name:
            errors = _synapse("synapse.api.errors")
            raise errors.SynapseError(404, "mutant: remote aliases not looked up", "M_NOT_FOUND")
        return await original(self, room_alias)

    return replacement


def _fail_invites(original: Any) -> Any:
    async def replacement(*args: Any, **kwargs: Any) -> Any:
        raise _synapse("synapse.api.errors").SynapseError(502, "mutant: invites not sent")

    return replacement


def _drop_messages(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """FederationServer._handle_pdus_in_txn(self, origin, transaction, ...): the
    transaction's m.room.message PDUs are thrown away unseen."""
    transaction = args[2]
    transaction.pdus[:] = [p for p in transaction.pdus if p.get("type") != "m.room.message"]


def _raise(original: Any) -> Any:
    async def replacement(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("mutant: not asked")

    return replacement


def _trim(field: str, limit: int) -> Callable[[tuple[Any, ...], dict[str, Any]], None]:
    """FederationServer.on_incoming_transaction(self, origin, txn_id, destination, data):
    the transaction cut to the limit before it is checked against it."""

    def change(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        data = args[4]
        data[field] = list(data.get(field) or [])[:limit]

    return change


def _fresh_transaction_ids(original: Any) -> Any:
    """FederationServer.on_incoming_transaction: every transaction taken as a new one."""
    counter = iter(range(1 << 62))

    async def replacement(self: Any, origin: str, txn_id: str, *rest: Any) -> Any:
        return await original(self, origin, f"{txn_id}~{next(counter)}", *rest)

    return replacement


def _lenient_notary(original: Any) -> Any:
    """RemoteKey.on_POST: criteria without ``minimum_valid_until_ts`` taken as "now" (what
    the spec says; Synapse 1.163.2 answers 400 instead: its expected failure)."""

    async def replacement(self: Any, request: Any) -> Any:
        servlet = _synapse("synapse.http.servlet")
        criteria = _synapse("synapse.rest.key.v2.remote_key_resource")._KeyQueryCriteriaDataModel
        query = {
            server: {
                key_id: criteria(minimum_valid_until_ts=c.get("minimum_valid_until_ts"))
                for key_id, c in keys.items()
            }
            for server, keys in servlet.parse_json_object_from_request(request)[
                "server_keys"
            ].items()
        }
        return 200, await self.query_keys(query, query_remote_on_cache_miss=True)

    return replacement


FED_SERVER = "synapse.federation.federation_server:FederationServer"
AUTHENTICATOR = "synapse.federation.transport.server._base:Authenticator.authenticate_request"
LOCAL_KEY = "synapse.rest.key.v2.local_key_resource:LocalKey.response_json_object"
EVENT_HANDLER = "synapse.handlers.federation_event:FederationEventHandler"
ALL_AUTH_REFUSALS = ("auth.*",)

# ------------------------------------------------------- issue 20: devices, ACLs, queries


def _speaking_for(user_of: Callable[[Any], str | None]) -> Factory:
    """An EDU handler ``(self, origin, content)`` called as if the EDU came from the
    server of the user it names (``user_of(content)``): the origin check always passes."""

    def make(original: Any) -> Any:
        async def replacement(self: Any, origin: str, content: Any) -> Any:
            user_id = user_of(content)
            claimed = user_id.split(":", 1)[1] if user_id and ":" in user_id else origin
            return await original(self, claimed, content)

        return replacement

    return make


def _typing_user(content: Any) -> str | None:
    return content.get("user_id") if isinstance(content, dict) else None


def _first_receipt_user(content: Any) -> str | None:
    for kinds in (content or {}).values():
        for readers in (kinds or {}).values():
            for user_id in readers or {}:
                return str(user_id)
    return None


def _edus_without(edu_type: str) -> Callable[[Any, Any], Any]:
    """A per-destination queue's ``(edus, stream_id)`` without the EDUs of ``edu_type``
    (taken from the stream all the same: they are lost)."""

    def change(self: Any, result: Any) -> Any:
        edus, stream_id = result
        return [e for e in edus if e.edu_type != edu_type], stream_id

    return change


def _devices_without_keys(self: Any, result: Any) -> Any:
    """``/user/devices`` with every device's keys left out."""
    status, body = result
    for device in body.get("devices", []):
        device.pop("keys", None)
    return status, body


def _device_keys_unsigned(self: Any, result: Any) -> Any:
    """``/user/keys/query`` with the devices' self-signatures left out."""
    status, body = result
    for devices in body.get("device_keys", {}).values():
        for keys in devices.values():
            keys.pop("signatures", None)
    return status, body


def _no_one_time_keys(self: Any, result: Any) -> Any:
    return {"one_time_keys": {}}


def _bad_origin_accepted(original: Any) -> Any:
    """A request whose X-Matrix origin ends in ``:http`` is taken as coming from there,
    unchecked."""

    async def replacement(self: Any, request: Any, content: Any) -> Any:
        header = request.requestHeaders.getRawHeaders(b"Authorization") or [b""]
        found = re.search(rb'origin="?([^",]+:http)"?', header[0])
        if found:
            return found.group(1).decode("ascii")
        return await original(self, request, content)

    return replacement


def _without(field: str) -> Callable[[Any, Any], Any]:
    """A change of a JSON answer: ``field`` left out."""

    def change(self: Any, result: Any) -> Any:
        return {k: v for k, v in result.items() if k != field}

    return change


def _chunk_without(field: str) -> Callable[[Any, Any], Any]:
    """A public room list whose entries lack ``field``."""

    def change(self: Any, result: Any) -> Any:
        for entry in result.get("chunk", []):
            entry.pop(field, None)
        return result

    return change


def _no_search_filter(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    kwargs["search_filter"] = None


def _hierarchy_without_children(self: Any, result: Any) -> Any:
    return {**result, "children": []}


def _flipped_direction(original: Any) -> Any:
    """The event nearest the time, looked for in the other direction."""

    async def replacement(self: Any, room_id: str, timestamp: int, direction: Any) -> Any:
        flipped = type(direction)("b" if direction.value == "f" else "f")
        return await original(self, room_id, timestamp, flipped)

    return replacement


def _media_as_client_download(original: Any) -> Any:
    """The federation download answered as the client API's plain download (not
    multipart)."""

    async def replacement(
        self: Any, origin: Any, content: Any, request: Any, media_id: str
    ) -> None:
        await self.media_repo.get_local_media(request, media_id, None, 20_000)

    return replacement


def _media_without_auth(original: Any) -> Any:
    """An unsigned request to the federation media endpoints is taken as one from a
    made-up origin."""

    async def replacement(self: Any, request: Any, content: Any) -> Any:
        path = request.path.decode("ascii", "replace")
        if path.startswith(
            "/_matrix/federation/v1/media/"
        ) and not request.requestHeaders.hasHeader(b"Authorization"):
            return "anyone.test"
        return await original(self, request, content)

    return replacement


MUTANTS: tuple[Mutant, ...] = (
    # ---------------------------------------------------------------- keys
    Mutant(
        "key_document_expired",
        "a key document's valid_until_ts lies in the future",
        LOCAL_KEY,
        _resigned_key_document(_expired),
        ("keys.server_keys_valid",),
        "its key document: valid_until_ts: expected after now",
    ),
    Mutant(
        "key_document_misnamed",
        "the key document names its server",
        LOCAL_KEY,
        _resigned_key_document(_renamed),
        ("keys.server_keys_valid",),
        "its key document: server_name: expected",
    ),
    Mutant(
        "key_document_unsigned",
        "the key document is signed by each of its keys",
        LOCAL_KEY,
        _unsigned_key_document,
        ("keys.server_keys_valid",),
        "its key document: signature by",
    ),
    Mutant(
        "version_without_name",
        "/version answers server.name",
        "synapse.federation.transport.server.federation:FederationVersionServlet.on_GET",
        _version_without_name,
        ("keys.version",),
        "GET /version body",
    ),
    Mutant(
        "notary_not_signing",
        "a notary signs the key documents it returns",
        "synapse.rest.key.v2.remote_key_resource:RemoteKey.query_keys",
        _async_after(_notary_not_signing),
        ("keys.notary_vouches_for_our_keys",),
        "the notary's signature: expected one by",
    ),
    Mutant(
        "notary_minimum_valid_until_ts_optional",
        "(the spec's rule Synapse breaks) a notary takes criteria without a minimum",
        "synapse.rest.key.v2.remote_key_resource:RemoteKey.on_POST",
        _lenient_notary,
        ("keys.notary_minimum_valid_until_ts_optional",),
        "passed, but the expect-fail file says it fails",
    ),
    # ---------------------------------------------------------------- request auth
    Mutant(
        "bad_signature_accepted",
        "a request's X-Matrix signature is verified",
        "synapse.crypto.keyring:Keyring.verify_json_for_server",
        _async_returning(None),
        ("auth.bad_signature_refused",),
        "a badly signed request",
    ),
    Mutant(
        "other_destination_accepted",
        "a request signed for another destination is refused",
        AUTHENTICATOR,
        _any_destination,
        ("auth.other_destination_refused",),
        "a request signed for another destination",
    ),
    Mutant(
        "unsigned_accepted",
        "a request without Authorization is refused",
        AUTHENTICATOR,
        _unsigned_welcome,
        ("auth.unsigned_refused",),
        "an unsigned request",
    ),
    Mutant(
        "every_request_refused",
        "a rightly signed request is answered",
        AUTHENTICATOR,
        _refuse_everything,
        ("auth.signed_request_accepted",),
        "it accepts a request we sign",
    ),
    # ---------------------------------------------------------------- joins, invites, leaves
    Mutant(
        "make_join_wrong_room_version",
        "make_join reports the room's version",
        f"{FED_SERVER}.on_make_join_request",
        _async_after(_set("room_version", "1")),
        ("rooms.we_join_its_room/v*",),
        "refused make_join (room version '1')",
    ),
    Mutant(
        "send_join_empty_auth_chain",
        "send_join answers the auth chain of the state",
        f"{FED_SERVER}.on_send_join_request",
        _async_after(_set("auth_chain", [])),
        ("rooms.we_join_its_room/v*",),
        "auth chain",
    ),
    Mutant(
        "send_join_unsigned_state",
        "the state send_join answers carries its events' signatures",
        f"{FED_SERVER}.on_send_join_request",
        _async_after(_strip_signatures),
        ("rooms.we_join_its_room/v*",),
        "bad signature",
    ),
    Mutant(
        "send_join_empty_state",
        "send_join answers the room's state",
        f"{FED_SERVER}.on_send_join_request",
        _async_after(_set("state", [])),
        ("rooms.we_join_its_room/v*",),
        "the state has no (valid) m.room.create event",
    ),
    Mutant(
        "send_leave_ignored",
        "a send_leave is taken into the room",
        f"{FED_SERVER}.on_send_leave_request",
        _async_returning({}),
        ("rooms.we_leave/v*",),
        "expected membership 'leave'",
    ),
    Mutant(
        "invite_not_countersigned",
        "an invite is answered signed by the invitee's server",
        "synapse.handlers.federation:compute_event_signature",
        _sync_returning({}),
        ("rooms.we_invite_it/v*",),
        "",
    ),
    Mutant(
        "invites_not_sent",
        "an invite of a remote user goes to its server",
        "synapse.federation.federation_client:FederationClient.send_invite",
        _fail_invites,
        ("rooms.it_invites_us/v*",),
        "createRoom: HTTP 502",
    ),
    Mutant(
        "remote_alias_not_queried",
        "a remote alias is resolved by a directory query",
        "synapse.handlers.directory:DirectoryHandler.get_association",
        _refuse_remote_aliases,
        ("rooms.it_joins_our_room_by_alias/v*",),
        "HTTP 404",
    ),
    # ---------------------------------------------------------------- messages
    Mutant(
        "outbound_pdus_dropped",
        "its events are sent to the servers in the room",
        "synapse.federation.sender.per_destination_queue:PerDestinationQueue.send_pdu",
        _sync_returning(None),
        ("messages.its_message_reaches_us/v*",),
        "timed out after 30 s waiting for an event",
    ),
    Mutant(
        "inbound_messages_ignored",
        "the PDUs of a transaction are processed",
        f"{FED_SERVER}._handle_pdus_in_txn",
        _async_before(_drop_messages),
        ("messages.our_message_reaches_it/v*",),
        "expected readable within 30 s, got 404",
    ),
    Mutant(
        "never_backfills",
        "history before the join is backfilled",
        "synapse.handlers.federation:FederationHandler.maybe_backfill",
        _async_returning(False),
        ("messages.it_backfills_our_history/v*",),
        "our history in its client's /messages: expected all 3 events",
    ),
    Mutant(
        "no_get_missing_events",
        "missing prev_events are fetched",
        f"{EVENT_HANDLER}._get_missing_events_for_pdu",
        _async_returning(None),
        ("messages.it_fetches_a_missing_event/v*",),
        "the event after the gap",
    ),
    Mutant(
        "no_state_at_a_gap",
        "a gap get_missing_events does not close is bridged by the state at it",
        f"{EVENT_HANDLER}._get_state_ids_after_missing_prev_event",
        _raise,
        ("messages.it_fills_a_deep_gap/v*",),
        "the event after the deep gap",
    ),
    # ---------------------------------------------------------------- PDU checks
    Mutant(
        "pdu_signatures_unchecked",
        "a PDU whose signature fails is dropped",
        "synapse.federation.federation_base:_check_sigs_on_pdu",
        _async_returning(None),
        ("pdus.bad_signature_dropped/v*",),
        "the forged event as its client sees it: expected None",
    ),
    Mutant(
        "content_hash_unchecked",
        "a PDU whose content hash fails is redacted",
        "synapse.federation.federation_base:check_event_content_hash",
        _sync_returning(True),
        ("pdus.bad_content_hash_redacted/v*",),
        "the content of the event with a bad content hash: expected {}",
    ),
    Mutant(
        "power_levels_unchecked",
        "an event needs the power level its type requires",
        "synapse.event_auth:_can_send_event",
        _sync_returning(True),
        ("pdus.unauthorized_event_rejected/v*",),
        "the unauthorized event as its client sees it: expected None",
    ),
    Mutant(
        "no_soft_failure",
        "an event that fails auth against the current state is soft-failed",
        f"{EVENT_HANDLER}._check_for_soft_fail",
        _async_returning(None),
        ("pdus.banned_user_event_soft_failed/v*",),
        "the soft-failed event as its client sees it: expected None",
    ),
    # ---------------------------------------------------------------- transactions
    Mutant(
        "pdu_limit_ignored",
        "a transaction of more than 50 PDUs is refused",
        f"{FED_SERVER}.on_incoming_transaction",
        _async_before(_trim("pdus", 50)),
        ("transactions.51_pdus_refused/v*",),
        "expected 400, got 200",
    ),
    Mutant(
        "edu_limit_ignored",
        "a transaction of more than 100 EDUs is refused",
        f"{FED_SERVER}.on_incoming_transaction",
        _async_before(_trim("edus", 100)),
        ("transactions.101_edus_refused",),
        "expected 400, got 200",
    ),
    Mutant(
        "transaction_ids_forgotten",
        "a reused transaction ID is the same transaction",
        f"{FED_SERVER}.on_incoming_transaction",
        _fresh_transaction_ids,
        ("transactions.reused_id_ignored/v*",),
        "the reused transaction ID's answer",
    ),
    # ---------------------------------------------------------------- EDUs
    Mutant(
        "typing_not_sent",
        "its users' typing goes to the servers in the room",
        "synapse.handlers.typing:FollowerTypingHandler._push_remote",
        _async_returning(None),
        ("edus.its_typing_reaches_us/v*",),
        "waiting for an EDU 'm.typing'",
    ),
    Mutant(
        "typing_ignored",
        "a typing EDU is shown to its clients",
        "synapse.handlers.typing:TypingWriterHandler._recv_edu",
        _async_returning(None),
        ("edus.our_typing_reaches_it/v*",),
        "our user typing in its client's /sync",
    ),
    Mutant(
        "receipts_not_sent",
        "its users' receipts go to the servers in the room",
        "synapse.federation.sender:FederationSender.send_read_receipt",
        _async_returning(None),
        ("edus.its_receipt_reaches_us/v*",),
        "waiting for an EDU 'm.receipt'",
    ),
    Mutant(
        "receipts_ignored",
        "a receipt EDU is shown to its clients",
        "synapse.handlers.receipts:ReceiptsHandler._received_remote_receipt",
        _async_returning(None),
        ("edus.our_receipt_reaches_it/v*",),
        "our receipt in its client's /sync",
    ),
    # ------------------------------------------------- issue 20: devices, ACLs, queries
    Mutant(
        "acl_ignored",
        "PDUs and EDUs from a server the room's ACL denies are not taken",
        "synapse.federation.federation_server:FederationServer.check_server_matches_acl",
        _async_returning(None),
        ("acl.denied_pdu_refused/v*", "acl.denied_edus_dropped/v*"),
        "the denied PDU's result in the answer: expected an error",
    ),
    Mutant(
        "typing_for_any_server",
        "a typing EDU for a user of another server is ignored",
        "synapse.handlers.typing:TypingWriterHandler._recv_edu",
        _speaking_for(_typing_user),
        ("edus.typing_of_its_user_from_us_ignored/v*",),
        "expected ignored, got shown typing",
    ),
    Mutant(
        "receipt_for_any_server",
        "a receipt EDU for a user of another server is ignored",
        "synapse.handlers.receipts:ReceiptsHandler._received_remote_receipt",
        _speaking_for(_first_receipt_user),
        ("edus.receipt_of_its_user_from_us_ignored/v*",),
        "expected ignored, got shown",
    ),
    Mutant(
        "device_list_updates_dropped",
        "its users' device list updates go to the servers sharing a room",
        "synapse.federation.sender.per_destination_queue:PerDestinationQueue._get_device_update_edus",
        _async_after(_edus_without("m.device_list_update")),
        ("devices.its_device_list_update_reaches_us",),
        "waiting for an EDU 'm.device_list_update'",
    ),
    Mutant(
        "to_device_not_sent",
        "its users' to-device messages go to the server of the device",
        "synapse.federation.sender.per_destination_queue:PerDestinationQueue._get_to_device_message_edus",
        _async_after(_edus_without("m.direct_to_device")),
        ("to_device.its_message_reaches_us",),
        "waiting for an EDU 'm.direct_to_device'",
    ),
    Mutant(
        "device_list_update_ignored",
        "a device list update EDU is taken (the device list fetched, its clients told)",
        "synapse.handlers.device:DeviceListUpdater.incoming_device_list_update",
        _async_returning(None),
        ("devices.our_device_list_update_reaches_it",),
        "our user in its /sync device_lists.changed",
    ),
    Mutant(
        "user_devices_without_keys",
        "/user/devices gives each device's keys",
        "synapse.federation.federation_server:FederationServer.on_query_user_devices",
        _async_after(_devices_without_keys),
        ("devices.user_devices_served",),
        "the device's keys (as its own client reads them)",
    ),
    Mutant(
        "keys_query_unsigned",
        "/user/keys/query gives the device keys as signed",
        "synapse.federation.federation_server:FederationServer.on_query_client_keys",
        _async_after(_device_keys_unsigned),
        ("devices.keys_query_served",),
        "the device's keys (as its own client reads them)",
    ),
    Mutant(
        "keys_claim_empty",
        "/user/keys/claim hands out an uploaded one-time key",
        "synapse.federation.federation_server:FederationServer.on_claim_client_keys",
        _async_after(_no_one_time_keys),
        ("devices.keys_claim_served",),
        "the one-time key we uploaded, claimed",
    ),
    Mutant(
        "to_device_ignored",
        "a to-device EDU reaches the device it names",
        "synapse.handlers.devicemessage:DeviceMessageHandler.on_direct_to_device_edu",
        _async_returning(None),
        ("to_device.our_message_reaches_it",),
        "our to-device message in its /sync to_device",
    ),
    Mutant(
        "presence_not_sent",
        "its users' presence goes to the servers sharing a room",
        "synapse.federation.sender:FederationSender.send_presence_to_destinations",
        _async_returning(None),
        ("presence.its_presence_reaches_us",),
        "waiting for an EDU 'm.presence'",
    ),
    Mutant(
        "presence_ignored",
        "a presence EDU is shown to its clients",
        "synapse.handlers.presence:PresenceHandler.incoming_presence",
        _async_returning(None),
        ("presence.our_presence_reaches_it",),
        "our user's presence in its /sync presence",
    ),
    Mutant(
        "profile_without_displayname",
        "/query/profile gives the user's display name",
        "synapse.handlers.profile:ProfileHandler.on_profile_query",
        _async_after(_without("displayname")),
        ("queries.profile_served",),
        "the profile's displayname",
    ),
    Mutant(
        "bad_origin_accepted",
        "a request whose origin is no valid server name (a port that is not a number) is refused",
        "synapse.federation.transport.server._base:Authenticator.authenticate_request",
        _bad_origin_accepted,
        ("queries.profile_from_bad_origin_refused",),
        "expected a 4xx refusal, got 200",
    ),
    Mutant(
        "alias_without_servers",
        "/query/directory names the servers in the room",
        "synapse.handlers.directory:DirectoryHandler.on_directory_query",
        _async_after(_set("servers", [])),
        ("queries.alias_resolved",),
        "the servers of #",
    ),
    Mutant(
        "public_rooms_without_world_readable",
        "each public room entry has the fields the spec requires",
        "synapse.handlers.room_list:RoomListHandler.get_local_public_room_list",
        _async_after(_chunk_without("world_readable")),
        ("directory.public_rooms_listed", "directory.public_rooms_filtered"),
        "the directory entry of",
    ),
    Mutant(
        "public_rooms_unfiltered",
        "POST /publicRooms applies its filter",
        "synapse.handlers.room_list:RoomListHandler.get_local_public_room_list",
        _async_before(_no_search_filter),
        ("directory.public_rooms_filtered",),
        "rooms listed without",
    ),
    Mutant(
        "hierarchy_without_children",
        "/hierarchy lists the space's children",
        "synapse.handlers.room_summary:RoomSummaryHandler.get_federation_hierarchy",
        _async_after(_hierarchy_without_children),
        ("directory.space_hierarchy_served",),
        "the hierarchy's children",
    ),
    Mutant(
        "timestamp_direction_flipped",
        "timestamp_to_event looks in the direction asked",
        "synapse.storage.databases.main.events_worker:EventsWorkerStore.get_event_id_for_timestamp",
        _flipped_direction,
        ("directory.timestamp_to_event_served",),
        "dir=f from",
    ),
    Mutant(
        "media_not_multipart",
        "the federation media download answers multipart/mixed",
        "synapse.federation.transport.server.federation:FederationMediaDownloadServlet.on_GET",
        _media_as_client_download,
        ("media.download_served",),
        "multipart/mixed (spec)",
    ),
    Mutant(
        "media_without_auth",
        "an unsigned federation media request is refused",
        "synapse.federation.transport.server._base:Authenticator.authenticate_request",
        _media_without_auth,
        ("media.unsigned_download_refused",),
        "the status of an unsigned GET",
    ),
)

BY_NAME: dict[str, Mutant] = {m.name: m for m in MUTANTS}
