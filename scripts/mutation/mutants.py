"""The mutants of issue 20: one function of Synapse each, replaced at start-up by ours.

A :class:`Mutant` names its target by dotted path (``module:Class.method`` or
``module:function``, looked up where Synapse calls it), gives ``make(original)``, which
returns the replacement (a few lines of ours that call the original and spoil its answer,
or skip it), the conformance tests that must fail (globs of test ids) and the fragment of
the first failure's message a developer should see. One function is the rule; a mutant
may replace more (``also``) where Synapse would otherwise stop the same fault by another
way (``outliers_kept_without_auth_events_v21``). Synapse is AGPL: nothing of its code
is copied here, only names of what we replace.

This module is imported by Synapse's python (``boot.py``, which patches) and by ours
(``run.py``, which reads the table), so it imports nothing but the standard library at
the top; what a replacement needs from Synapse it imports when it runs.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import re
import sys
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
    #: Further replacements (target, make) the same fault needs where Synapse would
    #: otherwise stop it by another way (rarely: one function is the rule).
    also: tuple[tuple[str, Factory], ...] = ()


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


def _soft_failure_as_rejection(original: Any) -> Any:
    """FederationEventHandler._check_for_soft_fail(self, event, context, origin): an
    event it soft-fails is rejected instead."""

    async def replacement(self: Any, event: Any, context: Any, origin: str) -> Any:
        await original(self, event, context, origin)
        if event.internal_metadata.is_soft_failed():
            event.internal_metadata.soft_failed = False
            context.rejected = _synapse("synapse.api.constants").RejectedReason.AUTH_ERROR

    return replacement


def _rejection_as_soft_failure(original: Any) -> Any:
    """FederationEventHandler._check_event_auth(self, origin, event, context): an event it
    rejects is soft-failed instead (kept in the graph and in the state)."""

    async def replacement(self: Any, origin: Any, event: Any, context: Any) -> Any:
        await original(self, origin, event, context)
        if context.rejected:
            context.rejected = None
            event.internal_metadata.soft_failed = True

    return replacement


def _power_blind_resolution(original: Any) -> Any:
    """state.v2._iterative_auth_checks(clock, room_id, room_version, event_ids,
    base_state, event_map, state_res_store): every event applied in the order given,
    none checked (the order of the algorithm kept, its auth checks skipped)."""
    signature = inspect.signature(original)

    async def replacement(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs).arguments
        state = dict(bound["base_state"])
        for event_id in bound["event_ids"]:
            event = bound["event_map"].get(event_id)
            if event is not None and event.is_state():
                state[(event.type, event.state_key)] = event_id
        return state

    return replacement


def _v21_from_unconflicted_state(original: Any) -> Any:
    """state.v2._resolve_conflicted_set(clock, room_id, room_version, full_conflicted_set,
    base_state, event_map, store): in a room of state resolution v2.1 (v12), the first
    iterative auth checks start from the unconflicted state map (v2's start) instead of
    the empty one. A plain function, so that it runs in the frame of the resolution that
    calls it, whose ``unconflicted_state`` it takes; the original's coroutine is awaited
    there."""
    signature = inspect.signature(original)

    def replacement(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        versions = _synapse("synapse.api.room_versions").StateResolutionVersions
        if bound.arguments["room_version"].state_res == versions.V2_1:
            caller = sys._getframe(1).f_locals  # the resolution that called us
            bound.arguments["base_state"] = dict(caller["unconflicted_state"])
        return original(*bound.args, **bound.kwargs)

    return replacement


def _without_conflicted_subgraph(original: Any) -> Any:
    """state.v2._get_auth_chain_difference(room_id, state_sets, unpersisted_events,
    state_res_store, conflicted_state): no conflicted events given, so the auth
    difference comes back without v2.1's conflicted subgraph."""
    signature = inspect.signature(original)

    async def replacement(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.arguments["conflicted_state"] = None
        return await original(*bound.args, **bound.kwargs)

    return replacement


def _creators_ranked_as_users(original: Any) -> Any:
    """state.v2._get_power_level_for_sender(room_id, event_id, event_map, store): a room
    creator's infinite power (v12) replaced by that of an unlisted user (the default, 0
    in the rooms the suite makes), as if the creator were ranked by ``users``."""

    async def replacement(*args: Any, **kwargs: Any) -> Any:
        level = await original(*args, **kwargs)
        infinite = _synapse("synapse.api.constants").CREATOR_POWER_LEVEL
        return 0 if level == infinite else level

    return replacement


def _redactions_withheld(original: Any) -> Any:
    """FederationSender._send_pdu(self, pdu, destinations): redactions go nowhere."""

    async def replacement(self: Any, pdu: Any, destinations: Any) -> Any:
        if pdu.type != "m.room.redaction":
            await original(self, pdu, destinations)

    return replacement


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


def _split(field: str, limit: int) -> Factory:
    """FederationServer.on_incoming_transaction(self, origin, txn_id, destination, data):
    a transaction over the limit taken whole, as two within it (the rest under an ID of
    its own); the first one's answer."""

    def make(original: Any) -> Any:
        async def replacement(
            self: Any, origin: str, txn_id: str, destination: str, data: Any
        ) -> Any:
            items = list(data.get(field) or [])
            if len(items) <= limit:
                return await original(self, origin, txn_id, destination, data)
            first = await original(
                self, origin, txn_id, destination, {**data, field: items[:limit]}
            )
            rest = {**data, field: items[limit:]}
            await original(self, origin, f"{txn_id}~rest", destination, rest)
            return first

        return replacement

    return make


def _spoiled_by_one_bad_pdu(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """FederationServer.on_incoming_transaction(self, origin, txn_id, destination, data):
    a transaction with one PDU without a ``type`` loses all its PDUs."""
    data = args[4]
    pdus = list(data.get("pdus") or [])
    if any(not isinstance(p, dict) or "type" not in p for p in pdus):
        data["pdus"] = []


def _sync_never_limited(self: Any, batch: Any) -> Any:
    """SyncHandler._load_filtered_recents: the timeline batch says it is not limited."""
    return importlib.import_module("attr").evolve(batch, limited=False)


def _messages_reversed(self: Any, result: Any) -> Any:
    """PaginationHandler.get_messages: the page's events in the opposite order."""
    chunk = list(reversed(result.messages_chunk))
    return importlib.import_module("attr").evolve(result, messages_chunk=chunk)


def _history_redacted(original: Any) -> Any:
    """filter_events_for_server: every m.room.message served redacted (its content
    stripped), whatever the room's history visibility."""

    async def replacement(*args: Any, **kwargs: Any) -> Any:
        events = await original(*args, **kwargs)
        prune = _synapse("synapse.events.utils").prune_event
        return [prune(e) if e.type == "m.room.message" else e for e in events]

    return replacement


def _history_unfiltered(original: Any) -> Any:
    """filter_events_for_server: the events served as they are, whatever the room's
    history visibility."""

    async def replacement(storage: Any, target: str, local: str, events: Any, **kwargs: Any) -> Any:
        return list(events)

    return replacement


def _retries_refused(original: Any) -> Any:
    """FederationServer.on_incoming_transaction: a transaction ID already answered 200 (a
    retry) answered 400 instead of the transaction's result."""
    seen: set[tuple[str, str]] = set()

    async def replacement(self: Any, origin: str, txn_id: str, *rest: Any) -> Any:
        if (origin, txn_id) in seen:
            return 400, {"errcode": "M_UNKNOWN", "error": "mutant: retried transaction refused"}
        code, response = await original(self, origin, txn_id, *rest)
        if code == 200:
            seen.add((origin, txn_id))
        return code, response

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


def _wrong_membership_answered_200(original: Any) -> Any:
    """FederationServer._on_send_membership_event: an event that is not the sender's own
    membership of the endpoint's kind is answered 200 and dropped."""

    async def replacement(
        self: Any, origin: str, content: Any, membership_type: str, room_id: str
    ) -> Any:
        wrong = (
            content.get("type") != "m.room.member"
            or "state_key" not in content
            or content.get("state_key") != content.get("sender")
            or (content.get("content") or {}).get("membership") != membership_type
        )
        if wrong:
            errors = _synapse("synapse.api.errors")
            raise errors.SynapseError(200, "mutant: ignored", errors.Codes.UNKNOWN)
        return await original(self, origin, content, membership_type, room_id)

    return replacement


def _forbidden_as_bad_json(original: Any) -> Any:
    """A 403 refusal re-raised as 400 ``M_BAD_JSON``."""

    async def replacement(*args: Any, **kwargs: Any) -> Any:
        errors = _synapse("synapse.api.errors")
        try:
            return await original(*args, **kwargs)
        except errors.SynapseError as e:
            if e.code != 403:
                raise
            raise errors.SynapseError(400, f"mutant: {e.msg}", errors.Codes.BAD_JSON) from None

    return replacement


# ----------------------------------------------- issue 23: an allowed and a denied server

_ACL_CHECK = "synapse.federation.federation_server:FederationServer.check_server_matches_acl"
#: The functions of FederationServer that check the ACL on /send: the PDUs of a room, an EDU.
_ACL_ON_PDUS = "process_pdus_for_room"
_ACL_ON_EDUS = "_process_edu"


def _acl_skipped_from(callers: Callable[[str], bool]) -> Factory:
    """FederationServer.check_server_matches_acl skipped (the server allowed) when called
    from a function whose name ``callers`` picks. A plain function, so that its caller is
    the frame that awaits it; the original's coroutine is awaited there."""

    def make(original: Any) -> Any:
        async def allowed() -> None:
            return None

        def replacement(*args: Any, **kwargs: Any) -> Any:
            if callers(sys._getframe(1).f_code.co_name):
                return allowed()
            return original(*args, **kwargs)

        return replacement

    return make


def _acl_denies_every_server(original: Any) -> Any:
    """FederationServer.check_server_matches_acl: in a room with an ACL, every server is
    denied, the ones it allows too."""

    async def replacement(self: Any, server_name: str, room_id: str) -> None:
        await original(self, server_name, room_id)
        if await self._storage_controllers.state.get_server_acl_for_room(room_id) is not None:
            raise _synapse("synapse.api.errors").AuthError(403, "mutant: every server denied")

    return replacement


def _unable_to_authorise(original: Any) -> Any:
    """EventAuthHandler.check_restricted_join_rules: a user in none of the allowed rooms
    refused 400 ``M_UNABLE_TO_AUTHORISE_JOIN`` (as if it could not tell) instead of 403."""

    async def replacement(*args: Any, **kwargs: Any) -> Any:
        errors = _synapse("synapse.api.errors")
        try:
            return await original(*args, **kwargs)
        except errors.AuthError as e:
            raise errors.SynapseError(
                400, f"mutant: {e.msg}", errors.Codes.UNABLE_AUTHORISE_JOIN
            ) from None

    return replacement


def _without_create(self: Any, result: Any) -> Any:
    result["knock_room_state"] = [
        e for e in result.get("knock_room_state", []) if e.get("type") != "m.room.create"
    ]
    return result


def _without_signed_event(self: Any, result: Any) -> Any:
    result.pop("event", None)
    return result


def _omitted_without_join_rules(self: Any, result: Any) -> Any:
    if result.get("members_omitted"):
        result["state"] = [e for e in result["state"] if e.get("type") != "m.room.join_rules"]
    return result


def _is_direct_lost(self: Any, result: Any) -> Any:
    """SyncRestServlet.encode_invited: ``is_direct`` dropped from the invite state."""
    for room in result.values():
        for event in room["invite_state"]["events"]:
            if event.get("type") == "m.room.member":
                event["content"] = {
                    k: v for k, v in event.get("content", {}).items() if k != "is_direct"
                }
    return result


def _invite_without_create(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """TransportLayerClient.send_invite_v2: ``invite_room_state`` sent without the room's
    create event."""
    content = kwargs["content"] if "content" in kwargs else args[4]
    content["invite_room_state"] = [
        e for e in content.get("invite_room_state", []) if e.get("type") != "m.room.create"
    ]


def _rejection_kept_local(original: Any) -> Any:
    """FederationHandler.do_remotely_reject_invite: fails at once, so the rejection stays
    local (Synapse then makes its own leave event, which the inviter never gets)."""

    async def replacement(*args: Any, **kwargs: Any) -> Any:
        errors = _synapse("synapse.api.errors")
        raise errors.SynapseError(502, "mutant: the rejection is not sent")

    return replacement


FED_SERVER = "synapse.federation.federation_server:FederationServer"
AUTHENTICATOR = "synapse.federation.transport.server._base:Authenticator.authenticate_request"
LOCAL_KEY = "synapse.rest.key.v2.local_key_resource:LocalKey.response_json_object"
EVENT_HANDLER = "synapse.handlers.federation_event:FederationEventHandler"
ALL_AUTH_REFUSALS = ("auth.*",)

#: The tests of a send_join/send_leave/send_knock with an event other than the sender's
#: own membership of the endpoint's kind.
WRONG_MEMBERSHIP_EVENTS = (
    "joins.send_join_leave_refused/v*",
    "joins.send_join_message_refused/v*",
    "joins.send_join_knock_refused/v*",
    "joins.send_join_invite_refused/v*",
    "joins.send_join_non_state_membership_refused/v*",
    "joins.send_join_other_state_key_refused/v*",
    "joins.send_join_other_sender_refused/v*",
    "leaves.send_leave_*_refused/v*",
    "joins_v1.send_join_*_refused",
    "leaves_v1.send_leave_*_refused",
    "knocks.send_knock_*_refused/v*",
    "knocks_restricted.send_knock_*_refused/v*",
)


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


def _any_version_joins(original: Any) -> Any:
    """make_join as if the joining server supported every room version."""

    async def replacement(
        self: Any, origin: str, room_id: str, user_id: str, supported_versions: Any
    ) -> Any:
        known = _synapse("synapse.api.room_versions").KNOWN_ROOM_VERSIONS
        return await original(self, origin, room_id, user_id, list(known))

    return replacement


def _unknown_version_guessed(original: Any) -> Any:
    """An invite in a room version it does not know taken in the known version whose
    event ID matches the one named (so only the version check is skipped)."""

    async def replacement(self: Any, **kwargs: Any) -> Any:
        versions = _synapse("synapse.api.room_versions").KNOWN_ROOM_VERSIONS
        parse = _synapse("synapse.federation.federation_base").event_from_pdu_json
        if kwargs["room_version_id"] not in versions:
            for vid, version in versions.items():
                try:
                    event = parse(copy.deepcopy(kwargs["event_json"]), version)
                except Exception:  # noqa: S112 (a version it does not parse in)
                    continue
                if event.event_id == kwargs["expected_event_id"]:
                    kwargs["room_version_id"] = vid
        return await original(self, **kwargs)

    return replacement


def _state_ids_for_anyone(original: Any) -> Any:
    """/state_ids answered to any server, in the room or not."""

    async def replacement(self: Any, origin: str, room_id: str, event_id: str) -> Any:
        return 200, await self._on_state_ids_request_compute(room_id, event_id)

    return replacement


def _first_left_out(key: str) -> Factory:
    """An async replacement whose ``(status, body)`` answer lists one entry fewer under
    ``key`` (its first)."""
    return _async_after(lambda self, answer: (answer[0], {**answer[1], key: answer[1][key][1:]}))


def _event_served_unsigned(self: Any, answer: Any) -> Any:
    """/event's PDU served without its signatures."""
    status, body = answer
    if status != 200:
        return answer
    pdus = [{k: v for k, v in pdu.items() if k != "signatures"} for pdu in body["pdus"]]
    return status, {**body, "pdus": pdus}


def _backfill_past_the_limit(original: Any) -> Any:
    """/backfill walks three events past the ``limit`` it was asked for."""

    async def replacement(
        self: Any, origin: str, room_id: str, versions: list[str], limit: int
    ) -> Any:
        return await original(self, origin, room_id, versions, limit + 3)

    return replacement


def _typing_of_members_only(original: Any) -> Any:
    """(The spec's rule Synapse breaks) a typing EDU is taken only for a user in the room."""

    async def replacement(self: Any, origin: str, content: Any) -> None:
        members = await self.store.get_users_in_room(content.get("room_id"))
        if content.get("user_id") in members:
            await original(self, origin, content)

    return replacement


def _join_into_the_events_room(original: Any) -> Any:
    """send_join takes the join into the room the event names, whatever the path's room."""

    async def replacement(
        self: Any, origin: str, content: Any, room_id: str, *args: Any, **kwargs: Any
    ) -> Any:
        room_id = content.get("room_id", room_id)
        return await original(self, origin, content, room_id, *args, **kwargs)

    return replacement


def _join_under_another_id_dropped(original: Any) -> Any:
    """send_join v2 of a join whose ID is not the path's answered 200, the join never
    taken; every other send_join as usual."""

    async def replacement(self: Any, origin: str, content: Any, *args: Any, **kw: Any) -> Any:
        room_id, event_id = kw["room_id"], kw["event_id"]  # the path's, by name
        version = await self.handler.store.get_room_version(room_id)
        parse = _synapse("synapse.federation.federation_base").event_from_pdu_json
        if parse(copy.deepcopy(content), version).event_id != event_id:
            return 200, {"state": [], "auth_chain": [], "origin": self.server_name}
        return await original(self, origin, content, *args, **kw)

    return replacement


def _missing_signature_filled_in(original: Any) -> Any:
    """A PDU without its sender's server's signature taken as if it had one: a made-up
    entry put in its place, no signature checked; a signed PDU checked as usual."""

    async def replacement(self: Any, room_version: Any, pdu: Any, *args: Any, **kw: Any) -> Any:
        domain = pdu.sender.split(":", 1)[1]
        if domain not in pdu.signatures:
            pdu.signatures.update({domain: {"ed25519:mutant": "not checked"}})
            return pdu
        return await original(self, room_version, pdu, *args, **kw)

    return replacement


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


def _remote_profile_without_displayname(original: Any) -> Any:
    """A profile of another server's user given to a client without its display name."""

    async def replacement(self: Any, user_id: str, *args: Any, **kwargs: Any) -> Any:
        profile = await original(self, user_id, *args, **kwargs)
        if user_id.endswith(f":{self.hs.hostname}"):
            return profile
        return {k: v for k, v in profile.items() if k != "displayname"}

    return replacement


def _half_size_crop(original: Any) -> Any:
    """Cropped thumbnails made at half the size asked (smaller than requested)."""

    def replacement(self: Any, width: int, height: int, *args: Any, **kwargs: Any) -> Any:
        return original(self, max(1, width // 2), max(1, height // 2), *args, **kwargs)

    return replacement


def _remote_media_first_byte_spoilt(original: Any) -> Any:
    """Media fetched over federation stored with its first byte replaced."""

    async def replacement(
        self: Any, destination: str, path: str, output_stream: Any, *args: Any, **kwargs: Any
    ) -> Any:
        result = await original(self, destination, path, output_stream, *args, **kwargs)
        output_stream.seek(0)
        output_stream.write(b"\x00")
        output_stream.seek(0, 2)
        return result

    return replacement


def _no_newly_joined_users(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """/sync's device lists without the users who newly share a room."""
    kwargs["newly_joined_or_invited_or_knocked_users"] = set()


def _outliers_kept_without_auth_events(original: Any) -> Any:
    """FederationEventHandler._auth_and_persist_outliers: the fetched events it dropped
    because an auth event of theirs could not be found are stored as outliers all the
    same (as if a missing auth event did not matter)."""

    async def replacement(self: Any, room_id: str, events: Any) -> Any:
        events = list(events)
        await original(self, room_id, events)
        seen = await self._store.have_seen_events(room_id, [e.event_id for e in events])
        lost = [e for e in events if e.event_id not in seen]
        if lost:
            context = _synapse("synapse.events.snapshot").EventContext
            for event in lost:
                event.internal_metadata.outlier = True
            pairs = [(e, context.for_outlier(self._storage_controllers)) for e in lost]
            await self.persist_events_and_notify(room_id, pairs, backfilled=True)

    return replacement


def _v21_as_v2_without_chain_index(original: Any) -> Any:
    """EventFederationWorkerStore.get_auth_chain_difference_extended: when an event of
    the conflicted set has no chain cover index (a KeyError: Synapse indexes an event only
    once its whole auth chain is stored), state resolution v2.1 goes on as v2 does, with
    the auth chain difference alone and no conflicted subgraph, instead of failing."""

    async def replacement(
        self: Any, room_id: str, state_sets: Any, conflicted: Any, additional: Any
    ) -> Any:
        try:
            return await original(self, room_id, state_sets, conflicted, additional)
        except KeyError:
            return await original(self, room_id, state_sets, None, None)

    return replacement


def _unjoined_room_transaction_refused(original: Any) -> Any:
    """FederationServer.on_incoming_transaction: a transaction holding a PDU of a room
    the server is not in is refused 403 as a whole, instead of answered 200 with a
    result for each PDU."""

    async def replacement(
        self: Any, origin: str, txn_id: str, destination: str, data: Any, *args: Any
    ) -> Any:
        for pdu in data.get("pdus") or []:
            room_id = pdu.get("room_id") if isinstance(pdu, dict) else None
            if isinstance(room_id, str) and not await self.store.is_host_joined(
                room_id, self.server_name
            ):
                return 403, {"errcode": "M_FORBIDDEN", "error": "mutant: not in that room"}
        return await original(self, origin, txn_id, destination, data, *args)

    return replacement


def _failed_pdu_ignored_after(original: Any) -> Any:
    """FederationEventHandler.on_receive_pdu: a PDU whose processing failed once (a prev
    event it could not fetch) is ignored when it arrives again, as if it had been stored
    rejected for good."""
    failed: set[str] = set()

    async def replacement(self: Any, origin: str, pdu: Any) -> Any:
        if pdu.event_id in failed:
            return None
        try:
            return await original(self, origin, pdu)
        except Exception:
            failed.add(pdu.event_id)
            raise

    return replacement


# ------------------------------------------- issue 20: v1 membership, unverifiable send_join


def _v1_unwrapped(self: Any, answer: Any) -> Any:
    """A v1 send_join/send_leave servlet's ``(200, (200, body))`` answered as
    ``(200, body)``: the v2 shape."""
    status, (_, body) = answer
    return status, body


def _pulled_unchecked(original: Any) -> Any:
    """FederationClient._check_sigs_and_hash_and_fetch_one: every pulled PDU (a
    send_join answer's state and auth chain among them) taken as it came, without its
    signatures or hashes checked."""

    async def replacement(self: Any, *args: Any, **kwargs: Any) -> Any:
        return kwargs["pdu"] if "pdu" in kwargs else args[0]

    return replacement


def _members_dropped(self: Any, result: Any) -> Any:
    """FederationClient.send_join's result with every member event of its state dropped
    but the joiner's own (as if the members were omitted from a full answer)."""
    result.state[:] = [
        e
        for e in result.state
        if e.type != "m.room.member" or e.state_key == result.event.state_key
    ]
    return result


def _newest_extremity_only(original: Any) -> Any:
    """EventFederationWorkerStore.get_prev_events_for_room: of the room's forward
    extremities, only the one it persisted last (a new event cites no other)."""

    async def replacement(self: Any, room_id: str) -> Any:
        ids = await original(self, room_id)
        if len(ids) < 2:
            return ids
        events = await self.get_events_as_list(ids)
        newest = max(events, key=lambda e: e.internal_metadata.stream_ordering or 0)
        return [newest.event_id]

    return replacement


def _first_destination_only(original: Any) -> Any:
    """A FederationClient method whose first argument is its destination list: only the
    list's first server is tried (a failed attempt is not followed by the next)."""

    async def replacement(self: Any, destinations: Any, *args: Any, **kwargs: Any) -> Any:
        return await original(self, list(destinations)[:1], *args, **kwargs)

    return replacement


def _make_join_not_found_final(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """FederationClient._try_destination_list: for make_join, no 4xx errcode fails over
    (a 404 M_NOT_FOUND ends the join at the first server that answers it)."""
    if (kwargs.get("description") or (args[1] if len(args) > 1 else None)) == "make_join":
        kwargs["failover_errcodes"] = ()


def _join_via_room_id_server(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """RoomMemberHandler.update_membership: a join's servers to try are replaced by the
    room ID's server, where the ID names one (its client's ``via`` unheard)."""
    room_id = str(kwargs.get("room_id", args[3] if len(args) > 3 else ""))
    action = kwargs.get("action", args[4] if len(args) > 4 else None)
    if action == "join" and ":" in room_id and kwargs.get("remote_room_hosts"):
        kwargs["remote_room_hosts"] = [room_id.split(":", 1)[1]]


#: The unverifiable-state tests whose bad event a server that skips the checks takes.
UNVERIFIED_TAKEN = (
    "unverifiable.badly_signed_extra_state_dropped/v*",
    "unverifiable.unobtainable_key_extra_state_dropped/v*",
    "unverifiable.state_with_unverifiable_auth_event_not_taken/v*",
)


# -- fan-out and recovery (issue 23) ------------------------------------------------------


def _last_destination_skipped(original: Any) -> Any:
    """FederationSender._send_pdu: where an event goes to more than two other servers,
    the last of them (in name order) is left out."""

    async def replacement(self: Any, pdu: Any, destinations: Any) -> Any:
        hosts = sorted(set(destinations) - {self.server_name})
        return await original(self, pdu, hosts[:-1] if len(hosts) > 2 else hosts)

    return replacement


def _typing_last_destination_skipped(original: Any) -> Any:
    """filter_destinations_by_retry_limiter as the typing handler calls it: where a
    typing notification goes to more than two other servers, the last of them (in name
    order) is left out."""

    async def replacement(destinations: Any, *, clock: Any, store: Any, **kwargs: Any) -> Any:
        kept = await original(destinations, clock=clock, store=store, **kwargs)
        others = sorted(set(kept) - {store.server_name})
        return [*others[:-1], store.server_name] if len(others) > 2 else kept

    return replacement


def _receipt_last_destination_skipped(original: Any) -> Any:
    """filter_destinations_by_retry_limiter as FederationSender.send_read_receipt calls it
    (the PDUs' and presence's calls unchanged): where a read receipt goes to more than two
    other servers, the last of them (in name order) is left out. A plain function, so
    that its caller is the frame that awaits it."""

    async def skipping(destinations: Any, *args: Any, **kwargs: Any) -> Any:
        kept = sorted(await original(destinations, *args, **kwargs))
        return kept[:-1] if len(kept) > 2 else kept

    def replacement(destinations: Any, *args: Any, **kwargs: Any) -> Any:
        if sys._getframe(1).f_code.co_name == "send_read_receipt":
            return skipping(destinations, *args, **kwargs)
        return original(destinations, *args, **kwargs)

    return replacement


def _failed_request_final(original: Any) -> Any:
    """AwakenableSleeper.sleep (the federation client's pause before it retries a failed
    request): no pause, no retry; the request fails as it stands."""

    async def replacement(self: Any, name: str, delay_ms: int) -> None:
        raise RuntimeError(f"mutant: a failed request to {name} is not retried")

    return replacement


def _failed_destination_locked_out(original: Any) -> Any:
    """TransactionManager.send_new_transaction: a destination whose transaction failed
    once is sent nothing again (each later transaction fails without a request)."""

    async def replacement(self: Any, destination: str, *args: Any, **kwargs: Any) -> Any:
        failed = self.__dict__.setdefault("_mutant_failed", set())
        if destination in failed:
            raise RuntimeError(f"mutant: {destination} failed once, never retried")
        try:
            return await original(self, destination, *args, **kwargs)
        except Exception:
            failed.add(destination)
            raise

    return replacement


#: Synapse retries a failed request inside its federation client (a transaction 4 s
#: later, then 16 s...), where its queue never sees it fail: a short outage ends there.
#: The second replacement of the recovery mutants makes a failure final at once, so
#: that the queue's own recovery (a retry, the wake-up on the server's request) is what
#: their first replacement breaks.
FAILED_REQUEST_FINAL = ("synapse.util.async_helpers:AwakenableSleeper.sleep", _failed_request_final)


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
        ("joins.hand_built_join_accepted/v*",),
        "its send_join auth_chain",
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
        ("rooms.we_leave/v*", "leaves.hand_built_leave_accepted/v*"),
        "expected membership 'leave'",
    ),
    Mutant(
        "wrong_membership_answered_200",
        "send_join/leave/knock refuse all but the sender's own membership of their kind",
        f"{FED_SERVER}._on_send_membership_event",
        _wrong_membership_answered_200,
        WRONG_MEMBERSHIP_EVENTS,
        "expected 400 or 403, got 200",
    ),
    Mutant(
        "send_join_forbidden_as_bad_json",
        "a join the room does not permit (a banned user's) is refused 403 M_FORBIDDEN",
        f"{FED_SERVER}.on_send_join_request",
        _forbidden_as_bad_json,
        ("joins.send_join_banned_user_refused/v*",),
        "status: expected 403, got 400",
    ),
    Mutant(
        "send_join_room_unchecked",
        "send_join refuses a join of another room than the path's",
        f"{FED_SERVER}.on_send_join_request",
        _join_into_the_events_room,
        ("joins.send_join_other_room_refused/v*",),
        "expected 400 or 403, got 200",
    ),
    Mutant(
        "unsigned_pdu_taken",
        "an event without its sender's server's signature is refused",
        "synapse.federation.federation_base:FederationBase._check_sigs_and_hash",
        _missing_signature_filled_in,
        ("joins.send_join_unsigned_refused/v*", "unverifiable.unsigned_extra_state_dropped/v*"),
        "expected 400 or 403, got 200",
    ),
    Mutant(
        "send_join_not_taken",
        "a join send_join answers 200 is taken into the room",
        "synapse.federation.transport.server.federation:FederationV2SendJoinServlet.on_PUT",
        _join_under_another_id_dropped,
        ("joins.send_join_under_another_event_id/v*",),
        "in its member list",
    ),
    Mutant(
        "make_join_any_version",
        "make_join refuses a server whose ver lacks the room's version (none: [1])",
        f"{FED_SERVER}.on_make_join_request",
        _any_version_joins,
        ("joins.make_join_other_versions_refused/v*", "joins.make_join_without_ver_refused/v*"),
        "its make_join with ver=",
    ),
    Mutant(
        "invite_unknown_version_taken",
        "an invite in a room version it does not support is refused",
        f"{FED_SERVER}.on_invite_request",
        _unknown_version_guessed,
        ("invites.unknown_room_version_refused/v*",),
        "its invite in room version",
    ),
    Mutant(
        "knock_room_state_without_create",
        "send_knock's knock_room_state holds the room's m.room.create",
        f"{FED_SERVER}.on_send_knock_request",
        _async_after(_without_create),
        ("knocks.hand_built_knock_accepted/v*", "knocks_restricted.hand_built_knock_accepted/v*"),
        "the room_version of the m.room.create in its knock_room_state",
    ),
    Mutant(
        "restricted_join_event_not_returned",
        "send_join returns the join it signed for a restricted join",
        f"{FED_SERVER}.on_send_join_request",
        _async_after(_without_signed_event),
        ("restricted.*join_authorised_by_its_user/v*",),
        "its send_join answer's event (required for a restricted join)",
    ),
    Mutant(
        "restricted_outsider_unable_to_authorise",
        "a user in none of the allowed rooms is refused 403 M_FORBIDDEN",
        "synapse.handlers.event_auth:EventAuthHandler.check_restricted_join_rules",
        _unable_to_authorise,
        ("restricted.*outsider_refused/v*",),
        "status: expected 403, got 400",
    ),
    Mutant(
        "omit_members_drops_join_rules",
        "a send_join answer with members_omitted keeps every non-member state event",
        f"{FED_SERVER}.on_send_join_request",
        _async_after(_omitted_without_join_rules),
        ("partial_state.send_join_omit_members/v*",),
        "missing ['m.room.join_rules/']",
    ),
    Mutant(
        "is_direct_lost",
        "the invite state a client gets shows the invite's is_direct",
        "synapse.rest.client.sync:SyncRestServlet.encode_invited",
        _async_after(_is_direct_lost),
        ("invites.is_direct_flag_reaches_its_client/v*",),
        "is_direct true",
    ),
    Mutant(
        "invite_room_state_without_create",
        "an invite's invite_room_state holds the room's m.room.create",
        "synapse.federation.transport.client:TransportLayerClient.send_invite_v2",
        _async_before(_invite_without_create),
        ("invites.its_invite_room_state_holds_the_create_event/v*",),
        "the m.room.create events in its invite_room_state: expected exactly one",
    ),
    Mutant(
        "invite_rejection_kept_local",
        "an invite of a remote room is rejected through make_leave/send_leave to its server",
        "synapse.handlers.federation:FederationHandler.do_remotely_reject_invite",
        _rejection_kept_local,
        ("invites.it_rejects_our_invite/v*",),
        "waiting for",
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
    Mutant(
        "pulled_events_dropped",
        "the events it fetches to fill a gap are taken into the room",
        f"{EVENT_HANDLER}._process_pulled_events",
        _async_returning(None),
        (
            "gaps.chain_filled_in_order/v*",
            "gaps.partition_ordering/v*",
            "gaps.sync_timeline_limited/v*",
        ),
        "the last event of the chain",
    ),
    Mutant(
        "messages_reversed",
        "/messages pages back in the room's order",
        "synapse.handlers.pagination:PaginationHandler.get_messages",
        _async_after(_messages_reversed),
        ("gaps.chain_filled_in_order/v*", "gaps.partition_ordering/v*"),
        "the chain in its client's /messages",
    ),
    Mutant(
        "sync_never_limited",
        "a /sync timeline cut by its limit (or a gap) says limited",
        "synapse.handlers.sync:SyncHandler._load_filtered_recents",
        _async_after(_sync_never_limited),
        ("gaps.sync_timeline_limited/v*",),
        "/sync timeline's limited",
    ),
    Mutant(
        "history_redacted",
        "shared and world_readable history is served whole to a member",
        "synapse.handlers.federation:filter_events_for_server",
        _history_redacted,
        (
            "serving.history_visibility_shared/v*",
            "serving.history_visibility_world_readable/v*",
        ),
        "the message served with its content",
    ),
    Mutant(
        "history_unfiltered",
        "history before the join is not served when visibility is invited or joined",
        "synapse.handlers.federation:filter_events_for_server",
        _history_unfiltered,
        (
            "serving.history_visibility_invited/v*",
            "serving.history_visibility_joined/v*",
        ),
        "the message left out, refused or redacted",
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
        "a transaction of more than 50 PDUs is not processed whole",
        f"{FED_SERVER}.on_incoming_transaction",
        _split("pdus", 50),
        ("transactions.51_pdus_not_processed_whole",),
        "not processed as a whole",
    ),
    Mutant(
        "edu_limit_ignored",
        "a transaction of more than 100 EDUs is not processed whole",
        f"{FED_SERVER}.on_incoming_transaction",
        _split("edus", 100),
        ("transactions.101_edus_not_processed_whole",),
        "not processed as a whole",
    ),
    Mutant(
        "pdu_limit_below_50",
        "a transaction of 50 PDUs is processed whole",
        f"{FED_SERVER}.on_incoming_transaction",
        _async_before(_trim("pdus", 49)),
        ("transactions.50_pdus_processed",),
        "the 50 PDUs of a transaction",
    ),
    Mutant(
        "edu_limit_below_100",
        "a transaction of 100 EDUs is processed whole",
        f"{FED_SERVER}.on_incoming_transaction",
        _async_before(_trim("edus", 99)),
        ("transactions.100_edus_processed",),
        "our user typing (the last of 100 EDUs)",
    ),
    Mutant(
        "one_bad_pdu_spoils_all",
        "one malformed PDU does not stop the others of its transaction",
        f"{FED_SERVER}.on_incoming_transaction",
        _async_before(_spoiled_by_one_bad_pdu),
        ("transactions.one_malformed_pdu_others_processed/v*",),
        "good PDU 1 beside the malformed one",
    ),
    Mutant(
        "retries_refused",
        "a transaction retried under its ID is answered with its PDUs' results",
        f"{FED_SERVER}.on_incoming_transaction",
        _retries_refused,
        ("transactions.retry_answered/v*",),
        "the retried transaction's status",
    ),
    # ---------------------------------------------------------------- event auth
    Mutant(
        "rejection_soft_fails",
        "a rejected event never counts: an event whose auth events name it is rejected",
        f"{EVENT_HANDLER}._check_event_auth",
        _rejection_as_soft_failure,
        ("pdus.unauthorized_event_rejected/v*",),
        "our message whose auth_events name the rejected event, as its client sees it",
    ),
    Mutant(
        "soft_failure_rejects",
        "a soft-failed state event still takes part in state resolution",
        f"{EVENT_HANDLER}._check_for_soft_fail",
        _soft_failure_as_rejection,
        ("softfail.state_event_resolved_into_state/v*",),
        "its client's room state after the merge",
    ),
    Mutant(
        "federated_auth_rules_skipped",
        "an event (or an auth event it fetches) that fails the auth rules is rejected",
        "synapse.handlers.federation_event:check_state_dependent_auth_rules",
        _sync_returning(None),
        ("rejection.rejected_auth_event_fetched/v*",),
        "our message whose auth event it fetched and must reject, as its client sees it",
    ),
    Mutant(
        "state_resolution_power_blind",
        "state resolution v2 (v2.1) checks each event against the state resolved so far",
        "synapse.state.v2:_iterative_auth_checks",
        _power_blind_resolution,
        ("stateres.fork_resolved/v*",),
        "its client's room state after the merge",
    ),
    Mutant(
        "v21_starts_from_unconflicted_state",
        "state resolution v2.1 (v12) starts the iterative auth checks from an empty state map",
        "synapse.state.v2:_resolve_conflicted_set",
        _v21_from_unconflicted_state,
        ("stateres.v21_starts_from_empty_set/v12",),
        "v2.1 starts from the empty state",
    ),
    Mutant(
        "conflicted_subgraph_left_out",
        "v2.1's full conflicted set includes the conflicted state subgraph",
        "synapse.state.v2:_get_auth_chain_difference",
        _without_conflicted_subgraph,
        ("stateres.v21_includes_conflicted_subgraph/v12",),
        "v2.1's conflicted subgraph brings P2",
    ),
    Mutant(
        "creators_power_finite_in_state_res",
        "room creators have infinitely high power level, also when state resolution sorts"
        " power events",
        "synapse.state.v2:_get_power_level_for_sender",
        _creators_ranked_as_users,
        ("stateres.creator_sorts_before_admin/v12",),
        "the creator's join rule sorts first",
    ),
    Mutant(
        "auth_events_not_fetched",
        "the auth events it lacks are fetched from the sender",
        f"{EVENT_HANDLER}._get_remote_auth_chain_for_event",
        _async_returning(None),
        ("rejection.accepted_auth_event_fetched/v*",),
        "our message whose auth event it must fetch",
    ),
    Mutant(
        "event_auth_short",
        "/event_auth serves the whole auth chain",
        f"{FED_SERVER}.on_event_auth",
        _async_after(lambda self, answer: (answer[0], {"auth_chain": answer[1]["auth_chain"][1:]})),
        ("serving.event_auth/v*",),
        "the auth chain of",
    ),
    Mutant(
        "missing_events_limit_exceeded",
        "/get_missing_events returns at most limit events",
        f"{FED_SERVER}.on_get_missing_events",
        _async_before(lambda args, kwargs: kwargs.update(limit=kwargs["limit"] + 1)),
        ("serving.get_missing_events_limit/v*",),
        "its missing events with limit 1",
    ),
    Mutant(
        "state_ids_for_anyone",
        "/state_ids is refused to a server not in the room",
        f"{FED_SERVER}.on_state_ids_request",
        _state_ids_for_anyone,
        ("serving.refused_to_a_server_not_in_the_room/v*",),
        "its /state_ids to a server not in the room",
    ),
    Mutant(
        "state_ids_one_missing",
        "/state_ids lists the whole state at the event",
        f"{FED_SERVER}.on_state_ids_request",
        _first_left_out("pdu_ids"),
        ("serving.state_ids/v*",),
        "its pdu_ids at",
    ),
    Mutant(
        "state_one_missing",
        "/state serves the whole state at the event",
        f"{FED_SERVER}.on_room_state_request",
        _first_left_out("pdus"),
        ("serving.state/v*",),
        "its state at",
    ),
    Mutant(
        "event_served_unsigned",
        "/event serves the PDU as signed",
        f"{FED_SERVER}.on_pdu_request",
        _async_after(_event_served_unsigned),
        ("serving.event/v*",),
        "signatures must be an object",
    ),
    Mutant(
        "backfill_past_the_limit",
        "/backfill serves at most limit events",
        f"{FED_SERVER}.on_backfill_request",
        _backfill_past_the_limit,
        ("serving.backfill/v*",),
        "its backfill with limit 2",
    ),
    Mutant(
        "missing_events_one_short",
        "/get_missing_events serves every event between earliest and latest",
        f"{FED_SERVER}.on_get_missing_events",
        _async_after(lambda self, answer: {"events": answer["events"][1:]}),
        ("serving.get_missing_events/v*",),
        "the events between",
    ),
    # ---------------------------------------------------------------- redactions
    Mutant(
        "redactions_not_applied",
        "a redacted event is served redacted",
        "synapse.storage.databases.main.events_worker:EventsWorkerStore._maybe_redact_event_row",
        _sync_returning(None),
        ("redaction.ours_applied/v*",),
        "our redacted message",
    ),
    Mutant(
        "redactions_not_sent",
        "its users' redactions go to the servers in the room",
        "synapse.federation.sender:FederationSender._send_pdu",
        _redactions_withheld,
        ("redaction.its_redaction_reaches_us/v*", "redaction.of_unknown_event_sent/v*"),
        "waiting for",
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
        _ACL_CHECK,
        _async_returning(None),
        ("acl.denied_pdu_refused/v*", "acl.denied_edus_dropped/v*"),
        "the denied PDU's result in the answer: expected an error",
    ),
    Mutant(
        "typing_of_members_only",
        "(the spec's rule Synapse breaks) a typing EDU for a user not in the room is ignored",
        "synapse.handlers.typing:TypingWriterHandler._recv_edu",
        _typing_of_members_only,
        ("edus.typing_of_a_non_member_ignored/v*",),
        "passed, but the expect-fail file says it fails",
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
        "our device's keys after our second change",
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
    Mutant(
        "remote_profile_without_displayname",
        "a client gets a remote user's profile as its server answers it",
        "synapse.handlers.profile:ProfileHandler.get_profile",
        _remote_profile_without_displayname,
        ("queries.our_profile_reaches_its_client",),
        "'s displayname",
    ),
    Mutant(
        "thumbnail_too_small",
        "a thumbnail is never smaller than requested (when the image allows)",
        "synapse.media.thumbnailer:Thumbnailer.crop",
        _half_size_crop,
        ("media.thumbnail_served",),
        "MUST NOT be smaller than requested",
    ),
    Mutant(
        "remote_media_spoilt",
        "a client downloads remote media byte for byte",
        "synapse.http.matrixfederationclient:MatrixFederationHttpClient.federation_get_file",
        _remote_media_first_byte_spoilt,
        (
            "media.our_media_reaches_its_client",
            "media.our_media_without_file_name_reaches_its_client",
        ),
        "the bytes its client got",
    ),
    Mutant(
        "device_lists_without_joiners",
        "/sync device_lists.changed lists users who now share an encrypted room",
        "synapse.handlers.device:DeviceHandler.generate_sync_entry_for_device_list",
        _async_before(_no_newly_joined_users),
        ("devices.our_joining_user_in_its_device_lists",),
        "in its /sync device_lists.changed after joining",
    ),
    Mutant(
        "outliers_kept_without_auth_events",
        "an event whose auth event cannot be fetched is not accepted",
        "synapse.handlers.federation_event:FederationEventHandler._auth_and_persist_outliers",
        _outliers_kept_without_auth_events,
        (
            "fetching.unfetchable_auth_event_chain_not_state/v10",
            "fetching.unfetchable_auth_event_chain_not_state/v11",
        ),
        "our member event in its current state",
    ),
    # In v12 the outliers alone change nothing: C, D and E, stored without B, get no chain
    # cover index (Synapse indexes an event once its whole auth chain is stored), and state
    # resolution v2.1 looks up the index of each conflicted event
    # (_get_auth_chain_difference_using_cover_index_txn: KeyError), so the event that would
    # bring E into the state fails ("Failed to handle PDU"). The second replacement does
    # nothing in a sound Synapse (no KeyError there) and lets v2.1 go on as v2 does.
    Mutant(
        "outliers_kept_without_auth_events_v21",
        "an event whose auth event cannot be fetched is not accepted (in v12 too)",
        "synapse.handlers.federation_event:FederationEventHandler._auth_and_persist_outliers",
        _outliers_kept_without_auth_events,
        ("fetching.unfetchable_auth_event_chain_not_state/v*",),
        "our member event in its current state",
        also=(
            (
                "synapse.storage.databases.main.event_federation:"
                "EventFederationWorkerStore.get_auth_chain_difference_extended",
                _v21_as_v2_without_chain_index,
            ),
        ),
    ),
    Mutant(
        "unjoined_room_transaction_refused",
        "a transaction is answered 200 with a result per PDU (a PDU of a room it is not in too)",
        "synapse.federation.federation_server:FederationServer.on_incoming_transaction",
        _unjoined_room_transaction_refused,
        ("invites.we_rescind_our_invite/v*",),
        "its answer to the transaction of our withdrawal: status",
    ),
    Mutant(
        "failed_pdu_ignored_after",
        "an event that failed for a missing prev event is taken when it comes again",
        "synapse.handlers.federation_event:FederationEventHandler.on_receive_pdu",
        _failed_pdu_ignored_after,
        ("fetching.refused_prev_event_taken_when_sent/v*",),
        "B, sent again after A",
    ),
    Mutant(
        "canonical_json_unchecked",
        "a PDU with a float or an integer out of range is discarded (room versions 6+)",
        "synapse.federation.federation_base:validate_canonicaljson",
        _sync_returning(None),
        (
            "fetching.missing_event_with_float_discarded/v*",
            "fetching.missing_event_with_big_integer_discarded/v*",
        ),
        "the planted event (content with",
    ),
    Mutant(
        "send_join_v1_unwrapped",
        "send_join v1 answers [200, {...}]",
        "synapse.federation.transport.server.federation:FederationV1SendJoinServlet.on_PUT",
        _async_after(_v1_unwrapped),
        ("joins_v1.hand_built_join_accepted",),
        "its send_join v1 answer: expected [200, {...}]",
    ),
    Mutant(
        "send_leave_v1_unwrapped",
        "send_leave v1 answers [200, {}]",
        "synapse.federation.transport.server.federation:FederationV1SendLeaveServlet.on_PUT",
        _async_after(_v1_unwrapped),
        ("leaves_v1.hand_built_leave_accepted",),
        "its send_leave v1 answer: expected [200, {...}]",
    ),
    Mutant(
        "send_join_state_unverified",
        "a pulled event that fails its signature checks is dropped (a send_join answer's too)",
        "synapse.federation.federation_client:FederationClient._check_sigs_and_hash_and_fetch_one",
        _pulled_unchecked,
        UNVERIFIED_TAKEN,
        "whose only event is a join of a user of ours with a signature that does not verify",
    ),
    Mutant(
        "send_join_members_dropped",
        "the joiner takes the members of a full send_join state",
        "synapse.federation.federation_client:FederationClient.send_join",
        _async_after(_members_dropped),
        (
            "unverifiable.verified_extra_state_kept/v*",
            "unverifiable.verified_auth_event_kept/v*",
        ),
        "rightly signed) in its member list: expected membership 'join'",
    ),
    Mutant(
        "prev_events_newest_only",
        "a new event cites the room's most recent events (its forward extremities)",
        "synapse.storage.databases.main.event_federation:"
        "EventFederationWorkerStore.get_prev_events_for_room",
        _newest_extremity_only,
        ("joins.event_between_make_join_and_send_join_reachable/v*",),
        "sent between our make_join and send_join",
    ),
    Mutant(
        "make_join_first_destination_only",
        "a join is attempted through the next of the servers its client gave when one fails",
        "synapse.federation.federation_client:FederationClient.make_membership_event",
        _first_destination_only,
        ("join_failover.first_server_down", "join_failover.make_join_refused_404"),
        "is down: expected 200: joined through",
    ),
    Mutant(
        "send_join_first_destination_only",
        "a send_join that fails is sent to the next of the servers its client gave",
        "synapse.federation.federation_client:FederationClient.send_join",
        _first_destination_only,
        ("join_failover.send_join_failing_retried_at_next",),
        "answers send_join 500: expected 200: joined through",
    ),
    Mutant(
        "make_join_not_found_final",
        "a make_join answered 404 M_NOT_FOUND is tried at the next server",
        "synapse.federation.federation_client:FederationClient._try_destination_list",
        _async_before(_make_join_not_found_final),
        ("join_failover.make_join_refused_404",),
        "answers make_join 404 M_NOT_FOUND: expected 200: joined through",
    ),
    Mutant(
        "join_via_room_id_server",
        "a join by room ID goes through the servers its client gave, not the ID's server",
        "synapse.handlers.room_member:RoomMemberHandler.update_membership",
        _async_before(_join_via_room_id_server),
        ("join_failover.via_not_room_id_domain",),
        "answers make_join and send_join 404: expected 200: joined through",
    ),
    # ----------------------------------------------- issue 23: an allowed and a denied server
    Mutant(
        "acl_not_on_endpoints",
        "a server the room's ACL denies is served by the room endpoints (the ACL applies to"
        " /send only)",
        _ACL_CHECK,
        _acl_skipped_from(lambda caller: caller not in (_ACL_ON_PDUS, _ACL_ON_EDUS)),
        ("acls.*_refused_to_denied",),
        "expected 403 M_FORBIDDEN, got 200",
    ),
    Mutant(
        "acl_not_on_pdus",
        "the PDUs of a server the room's ACL denies are taken from /send",
        _ACL_CHECK,
        _acl_skipped_from(lambda caller: caller == _ACL_ON_PDUS),
        ("acls.denied_server_message_dropped",),
        "the denied server's PDU, as its client sees it once the marker is readable",
    ),
    Mutant(
        "acl_not_on_edus",
        "the typing and receipts of a server the room's ACL denies are taken (MSC4163)",
        _ACL_CHECK,
        _acl_skipped_from(lambda caller: caller == _ACL_ON_EDUS),
        ("acls.denied_server_edus_dropped",),
        "the denied server's typing: expected dropped",
    ),
    Mutant(
        "acl_denies_every_server",
        "a server the room's ACL allows is served and its PDUs and EDUs taken",
        _ACL_CHECK,
        _acl_denies_every_server,
        (
            "acls.allowed_server_message_taken",
            "acls.*_served_to_allowed",
            "acls.allowed_server_edus_shown",
        ),
        "the allowed server's PDU's result in the /send answer: expected no error",
    ),
    Mutant(
        "fanout_last_destination_skipped",
        "an event is sent to every server in the room",
        "synapse.federation.sender:FederationSender._send_pdu",
        _last_destination_skipped,
        ("fanout.event_reaches_every_server",),
        "its user's message, sent to every server in the room at m",
    ),
    Mutant(
        "typing_last_destination_skipped",
        "a typing notification is sent to every server in the room",
        "synapse.handlers.typing:filter_destinations_by_retry_limiter",
        _typing_last_destination_skipped,
        ("fanout.typing_reaches_every_server",),
        "its user's typing in a room of 5 of our servers, at m",
    ),
    Mutant(
        "receipt_last_destination_skipped",
        "a read receipt is sent to every server in the room",
        "synapse.federation.sender:filter_destinations_by_retry_limiter",
        _receipt_last_destination_skipped,
        ("fanout.receipt_reaches_every_server",),
        "its user's read receipt in a room of 5 of our servers, at m",
    ),
    Mutant(
        "failed_destination_locked_out",
        "a server that was down gets the events it missed, and later ones, once it is back",
        "synapse.federation.sender.transaction_manager:TransactionManager.send_new_transaction",
        _failed_destination_locked_out,
        ("fanout.catch_up_after_down",),
        "M2, sent after the server came back (locked out after its outage?)",
        also=(FAILED_REQUEST_FINAL,),
    ),
    Mutant(
        "down_destination_never_woken",
        "a server that was down gets the events it missed once it is back (its request wakes it)",
        "synapse.federation.transport.server._base:Authenticator.reset_retry_timings",
        _async_returning(None),
        ("fanout.catch_up_after_down",),
        "M2, sent after the server came back (locked out after its outage?)",
        also=(FAILED_REQUEST_FINAL,),
    ),
)

BY_NAME: dict[str, Mutant] = {m.name: m for m in MUTANTS}
