"""The preflight: before any test, can the two servers talk at all?

Three requests, each with a deadline of seconds, straight to the homeserver's federation
API as the peer resolves it (``forged``): its key document (the peer reaches it), its
notary asked for our keys (it reaches the peer), and a request we sign (it accepts our
signature, with our keys fetched). A failure here would otherwise cost every test its
time-out; it ends the run with ``stubserver check``'s verdict and hint on the same
answers (``check.verdicts``, ``check.hints``), and the command that says more.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from stubserver.check.hints import hint_unreachable, hint_way_back
from stubserver.check.verdicts import judge_signed_response, judge_way_back, notary_query
from stubserver.conformance import forged
from stubserver.conformance.context import Context
from stubserver.outbound.signed_request import FederationIdentity
from stubserver.signing.keys import ServerSigningKey

#: Deadline of each preflight request, in seconds.
PREFLIGHT_TIMEOUT_SECONDS: Final = 10.0

STEP_RESOLVE: Final = "the peer resolves it"
STEP_REACH: Final = "the peer reaches it (GET /_matrix/key/v2/server)"
STEP_WAY_BACK: Final = "it reaches the peer (our keys through its notary)"
STEP_SIGNED: Final = "it accepts a request we sign (GET /_matrix/federation/v1/query/profile)"

#: ``send(method, path, key, body)``: one request to it, signed with ``key`` (None:
#: unsigned); its status and JSON body. Raises when no answer came in time.
Send = Callable[[str, str, ServerSigningKey | None, Any], tuple[int, Any]]
#: What ``send`` raises when no answer came.
NO_ANSWER: Final = (OSError, http.client.HTTPException)


@dataclass(frozen=True)
class PreflightProblem:
    """One step that failed: what was tried, what came, and what to do."""

    step: str
    error: str
    hint: str

    def text(self) -> str:
        """Lines for a person."""
        return f"{self.step}: {self.error}\n  hint: {self.hint}"


def check_command(server_name: str, config: str) -> str:
    """The ``stubserver check`` command that diagnoses the same federation link."""
    return f"`stubserver check {server_name} -c {config}`"


def preflight(
    send: Send,
    *,
    server_name: str,
    address: str,
    identity: FederationIdentity,
    user_id: str,
    more: str,
    now_ms: int,
) -> list[PreflightProblem]:
    """The three steps against ``server_name`` (at ``address``), as ``identity``; the
    problems, stopping at the first step that fails (the later ones need it). ``more``
    is appended to every hint (where to look next)."""
    try:
        status, body = send("GET", "/_matrix/key/v2/server", None, None)
    except NO_ANSWER as e:
        hint = hint_unreachable(
            address, str(e) or type(e).__name__, from_srv=None, server_name=server_name
        )
        return [PreflightProblem(STEP_REACH, hint.problem, f"{hint.fix} {more}")]
    if status != 200:
        return [
            PreflightProblem(
                STEP_REACH,
                f"{address} answered {status}: {body}",
                f"Route /_matrix/key/ and /_matrix/federation/ to {server_name}. {more}",
            )
        ]
    query = notary_query(identity, now_ms)
    try:
        status, body = send("POST", "/_matrix/key/v2/query", identity.signing_key, query)
    except NO_ANSWER as e:
        error = f"no answer within {PREFLIGHT_TIMEOUT_SECONDS:g} s ({e or type(e).__name__})"
        return [
            PreflightProblem(
                STEP_WAY_BACK, error, f"{hint_way_back(server_name, identity.server_name)} {more}"
            )
        ]
    way_back = judge_way_back(server_name, identity.server_name, identity.key_ids, status, body)
    if not way_back.ok:
        return [PreflightProblem(STEP_WAY_BACK, str(way_back.error), f"{way_back.hint} {more}")]
    path = f"/_matrix/federation/v1/query/profile?user_id={quote(user_id, safe='')}"
    try:
        status, body = send("GET", path, identity.signing_key, None)
    except NO_ANSWER as e:
        error = f"no answer within {PREFLIGHT_TIMEOUT_SECONDS:g} s ({e or type(e).__name__})"
        return [PreflightProblem(STEP_SIGNED, error, more)]
    signed = judge_signed_response(status, body)
    if not signed.ok:
        return [PreflightProblem(STEP_SIGNED, str(signed.error), f"{signed.hint} {more}")]
    return []


def run_preflight(ctx: Context) -> list[PreflightProblem]:
    """:func:`preflight` for the suite's context, over ``Context.raw`` to the target the
    peer resolves; a resolution failure is the one problem."""
    more = f"For the whole diagnosis run {check_command(ctx.server_name, str(ctx.config_path))}."
    try:
        resolved = ctx.target()
    except forged.ResolveFailed as e:
        return [PreflightProblem(STEP_RESOLVE, str(e), more)]

    def send(method: str, path: str, key: ServerSigningKey | None, body: Any) -> tuple[int, Any]:
        return ctx.raw(method, path, key=key, body=body, timeout=PREFLIGHT_TIMEOUT_SECONDS)

    return preflight(
        send,
        server_name=ctx.server_name,
        address=f"{resolved.address}:{resolved.port}",
        identity=FederationIdentity(ctx.peer.server_name, ctx.our_key()),
        user_id=ctx.user.user_id,
        more=more,
        now_ms=int(time.time() * 1000),
    )
